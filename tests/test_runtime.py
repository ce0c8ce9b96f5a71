"""The process's thread count and allocator: the defaults the CLI applies, and what they change."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from replicate import cpu
from replicate.cpu import intra_op_threads

CPU = torch.device("cpu")


@pytest.fixture
def cores(monkeypatch):
    """Pretend this process may run on `n` cores."""
    def set_cores(n):
        monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    return set_cores


def test_a_seed_alone_gets_one_thread_and_batched_seeds_one_per_seed_up_to_the_cores(cores, monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores(16)
    assert intra_op_threads(None, batched_seeds=1, device=CPU) == 1
    assert intra_op_threads(None, batched_seeds=5, device=CPU) == 5  # never more threads than seeds
    cores(2)
    assert intra_op_threads(None, batched_seeds=5, device=CPU) == 2
    assert intra_op_threads(None, batched_seeds=5, device=torch.device("cuda")) == 1  # the GPU does the work
    assert intra_op_threads(3, batched_seeds=1, device=CPU) == 3  # runtime.threads wins


def test_torchrun_processes_on_one_node_share_its_cores(cores, monkeypatch):
    cores(8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert intra_op_threads(None, batched_seeds=5, device=CPU) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert intra_op_threads(None, batched_seeds=5, device=CPU) == 1


# Allocations the size of a batched evaluation's activations, three alive at once, then freed. glibc's
# own mmap threshold starts at 128 KiB and then follows the sizes freed so far, so whether its default
# faults depends on the process's history; the contrast pins the threshold at its starting value.
ALLOCATE = """
import ctypes, resource, sys, torch
from replicate import cpu
if sys.argv[1] == "reuse":
    setting = cpu.reuse_freed_memory()
else:
    ctypes.CDLL(None).mallopt(cpu._M_MMAP_THRESHOLD, 128 << 10)
    setting = "glibc's starting mmap threshold"
def allocate():
    for _ in range(50):
        a = torch.ones(8, 512, 100); b = a + 1; c = b * a
        del a, b, c
allocate()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
allocate()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, setting)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_reusing_freed_memory_removes_the_page_faults_of_new_tensors():
    def page_faults(mode):
        completed = subprocess.run([sys.executable, "-c", ALLOCATE, mode], capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr
        count, setting = completed.stdout.split(maxsplit=1)
        return int(count), setting

    default, _ = page_faults("default")
    reused, setting = page_faults("reuse")
    assert default >= 500  # glibc returns the blocks to the kernel and faults them in again
    assert reused <= default / 20, (reused, default)
    assert setting.startswith("glibc, freed memory reused")


def test_a_recurrent_models_batched_seeds_get_one_thread(cores, monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores(16)
    assert intra_op_threads(None, batched_seeds=5, device=CPU, recurrent=True) == 1
    assert intra_op_threads(4, batched_seeds=5, device=CPU, recurrent=True) == 4  # runtime.threads still wins


# the CLI as a user starts it, stopped by --help before any run; prints the policy and whether torch loaded
CLI_HELP = """
import os, sys
from replicate.cli import main
sys.argv = ["replicate", "--help"]
try:
    main()
except SystemExit:
    pass
print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
"""


@pytest.mark.parametrize("chosen", [None, "ACTIVE"])
def test_the_cli_has_openmp_workers_wait_passively_before_torch_loads_unless_the_user_chose(chosen):
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if chosen:
        environment["OMP_WAIT_POLICY"] = chosen
    completed = subprocess.run([sys.executable, "-c", CLI_HELP], env=environment, capture_output=True, text=True,
                               timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-2:] == [chosen or "PASSIVE", "False"]
