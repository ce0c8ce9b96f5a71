"""`python -m replicate.bench`: tiny mode runs every measurement and the batched/sequential equality holds.

Times are never asserted: this machine is shared and small; the benchmark reports, it does not gate.
"""
import json
import math
import os

import pytest

from conftest import run_command

METRICS = ("loop_speedup", "seeds_speedup", "roofline_fraction", "startup_overhead_s", "default_run_s",
           "gru_seeds_speedup", "contended_slowdown")


def busy_processes_left() -> list[str]:
    """Processes still running the bench's busy loop (replicate.bench_seeds.BUSY)."""
    from pathlib import Path

    from replicate.bench_seeds import BUSY

    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if BUSY.encode() in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:  # the process ended while we looked
            pass
    return left


@pytest.mark.slow  # a whole benchmark in small: run with `python -m pytest -m slow`
def test_tiny_benchmark_reports_every_metric_and_batched_seeds_equal_sequential_ones(tmp_path):
    completed = run_command(["replicate.bench", "mode=tiny", "format=json"], cwd=tmp_path, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout)

    machine = result["machine"]
    for key in ("cpu", "cores", "torch", "threads", "device", "load_average_before", "load_average_after"):
        assert machine[key] not in (None, ""), key
    # the CLI's defaults: one intra-op thread for a seed alone, one per seed up to the cores when batched
    assert machine["threads"] == {"single_seed": 1, "batched": min(len(os.sched_getaffinity(0)), 8)}
    assert machine["allocator"].startswith("glibc, freed memory reused")

    for name in METRICS:
        metric = result["metrics"][name]
        assert isinstance(metric["value"], float) and math.isfinite(metric["value"]), name
        assert {"target", "comparison", "met"} <= metric.keys(), name
    loop = result["metrics"]["loop_speedup"]
    assert loop["value"] == pytest.approx(loop["ours_samples_per_s"] / loop["textbook_samples_per_s"])
    assert result["metrics"]["roofline_fraction"]["flops_per_step"] > 0
    breakdown = result["metrics"]["roofline_fraction"]["products_alone"]  # 3 products forward, 5 backward
    assert breakdown["products"] == 8 and breakdown["product_flops_per_step"] == result["metrics"]["roofline_fraction"]["flops_per_step"]
    assert result["metrics"]["startup_overhead_s"]["first_step_s"] is not None  # the first-step hook fired
    assert machine["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loaded
    gru = result["metrics"]["gru_seeds_speedup"]
    assert gru["method"] == "seed-stacked GRU and linear layers" and gru["threads"]["batched"] == 1
    contended = result["metrics"]["contended_slowdown"]
    assert not busy_processes_left(), "the bench left its busy processes running"
    assert contended["busy_processes"] == len(os.sched_getaffinity(0)) and contended["best_fixed"].startswith("threads_")
    assert contended["value"] == pytest.approx(contended["medians_s"]["default"] / contended["medians_s"][contended["best_fixed"]])

    # the MLP's seeds trained together are bit for bit the seeds trained alone, in both precisions, and the GRU's
    equality = result["equality"]
    for dtype in ("float32", "float64", "gru_float32"):  # the GRU's too: SeedGRU is bit for bit nn.GRU
        check = equality[dtype]
        assert check["steps"] > 1 and check["bit_identical"] and check["metrics_and_curves_identical"], check
    assert equality["float64_vmap_cnn"]["max_rel_diff"] <= 1e-10, equality["float64_vmap_cnn"]  # vmap: rounding only
    assert equality["passed"] is True


def test_bad_argument_is_one_line_on_stderr_and_exit_2(tmp_path):
    for argument in ("mode=huge", "speed=1", "threads=0", "device=gpu"):
        completed = run_command(["replicate.bench", argument], cwd=tmp_path, timeout=60)
        assert completed.returncode == 2, argument
        assert completed.stderr.startswith("error: ") and completed.stderr.count("\n") == 1, completed.stderr
        assert completed.stdout == ""


def test_a_gpu_bench_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device=cuda would run the whole benchmark")
    completed = run_command(["replicate.bench", "device=cuda"], cwd=tmp_path, timeout=60)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: device=cuda: no CUDA device") and completed.stderr.count("\n") == 1


def test_the_roofline_breakdown_replays_the_products_that_carry_the_flops_torch_counts():
    # the matrix products recorded from a batched forward and backward carry exactly the FLOPs that
    # torch's own FlopCounterMode counts for it, and replaying them computes the same numbers again
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from replicate.bench_roofline import product_flops, record_products
    from replicate.config import compose
    from replicate.seed_stack import SeedStack

    stack = SeedStack(compose(["paper=mnist1d_mlp"]).model, [0, 1, 2], dtype=torch.float32, device="cpu")
    x = torch.randn(3, 100, 40)
    products = record_products(torch, lambda: stack(x).square().sum().backward())
    with FlopCounterMode(display=False) as counter:
        stack(x).square().sum().backward()
    assert [name for name, *_ in products] == ["baddbmm"] * 3 + ["bmm"] * 5  # no input gradient for the first layer
    assert sum(product_flops(name, args) for name, _, args, _ in products) == counter.get_total_flops()
    name, op, args, kwargs = products[0]
    assert torch.equal(op(*args, **kwargs), torch.baddbmm(*args, **kwargs))


def test_the_gru_step_shares_replay_the_kernels_its_seeds_must_keep():
    # a 5-seed GRU step (40 time steps, both directions as 10 rows): per time step one hidden projection
    # forward and two products backward, the input projection, its weight gradient per row (10 mm), and the
    # linear layer's 3 products; two sigmoids per time step
    import torch

    from replicate.bench import interleaved
    from replicate.bench_roofline import measure_step_shares

    shares = measure_step_shares(torch, "mnist1d_gru", threads=1, repeats=1, interleaved=interleaved)
    products, sigmoid = shares["groups"].values()
    assert (products["calls"], sigmoid["calls"]) == (40 * 3 + 1 + 10 + 3, 40 * 2)
    assert shares["step_s"] > 0 and all(group["alone_s"] > 0 for group in shares["groups"].values())
