"""How a replicate process uses its CPU: how idle threads wait, the intra-op thread count, and the C
allocator's reuse of memory.

    wait_passively()  # first thing, before torch is imported
    threads = intra_op_threads(cfg.runtime.threads, batched_seeds=5, device=torch.device("cpu"))
    allocator = reuse_freed_memory()  # before training; says what it set, in words for the report
"""
from __future__ import annotations

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Blocks up to this size come from the heap and are reused after free. glibc's own default starts at
# 128 KiB and rises only as far as blocks freed so far; this is the top of that range on 64-bit.
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of the heap kept for reuse instead of being returned to the kernel.
TRIM_THRESHOLD = 256 << 20


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: what SLURM or taskset granted), shared
    evenly among torchrun's processes on the node and among the jobs hydra/launcher=parallel runs at once."""
    from replicate.parallel import launched_jobs

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) // launched_jobs())


def wait_passively() -> None:
    """Have OpenMP's idle workers sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user chose.

    Why: between two parallel ops, libgomp's workers spin for a while by default, and each op ends at a
    barrier that waits for every worker. On a machine whose cores are busy with other processes, a worker
    that is not scheduled stalls that barrier for a time slice, and spinning workers take the cores the
    others need: 5 batched seeds × 300 MLP steps at 2 threads took 30 s with the default policy against
    2.8 s passive and 1.9 s at 1 thread, with the load at 11 on 2 cores (README, Performance). Only takes
    effect if set before torch (and its OpenMP runtime) loads: the CLI and the bench call it first."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def intra_op_threads(requested: int | None, *, batched_seeds: int, device, recurrent: bool = False) -> int:
    """runtime.threads if set. Otherwise one thread, except for seeds batched on the CPU: those get as many
    threads as seeds, up to the cores available; a recurrent model's batched seeds get one.

    Why: one seed's small ops are overhead-bound, and a second thread only adds synchronisation. A batched
    step's products and elementwise ops are several times larger, so they split well. The limit to the seed
    count keeps seeds bit for bit the seeds alone: with no more threads than seeds, the batched products
    of PyTorch's CPU BLAS came out as the one-thread solo products, in every setup tests/test_batched.py
    trains (measured up to 8 threads on 8 seeds); with 4 threads on 3 seeds, float64 results differed
    in the last bit.

    A recurrent model's step is a chain of small ops (the MNIST-1D GRU's: 5 seeds × 100 examples × 6
    units), each below ATen's parallel grain of 32768 elements, so a second thread only waits; and its long
    gradient sums (over every step of every example) would be split by the BLAS differently from the seed
    alone's at one thread, which made float32 seeds differ in the last bit."""
    if requested is not None:
        return requested
    if device.type != "cpu" or batched_seeds < 2 or recurrent:
        return 1
    return max(1, min(available_cores(), batched_seeds))


def reuse_freed_memory() -> str:
    """Have glibc keep freed tensor memory for the next tensor instead of unmapping it.

    By default, glibc serves each block above its mmap threshold with a fresh mapping and unmaps it on
    free. A batched step or evaluation allocates activations of 0.3–2 MB each, so every new tensor then
    costs a page fault per 4 KiB page: about a third of a batched evaluation's time on the 2-core machine
    (README, Performance). This raises the threshold and the heap-trim threshold, as jemalloc or tcmalloc
    would behave. It changes where numbers live, never their values. Returns what was set, for the
    report. Only the CLI and the bench call it: importing replicate changes nothing."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system default (not glibc)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "system default (mallopt not found)"
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "system default (mallopt refused)"
    return f"glibc, freed memory reused: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
