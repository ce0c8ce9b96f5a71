"""The batched-seed half of `python -m replicate.bench` added for recurrent models and busy machines:
the GRU's seeds batched vs one at a time, and batched seeds with every core kept busy by other processes.

    gru, equality = measure_gru_seeds(torch, MODES["tiny"], device, None, interleaved=interleaved,
                                      parameter_difference=parameter_difference)
    contended = measure_contended(torch, MODES["tiny"], device, 2, interleaved=interleaved)
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

# the GRU entry's default seed count (conf/config.yaml seeds=5): what `python -m replicate paper=mnist1d_gru` batches
GRU_SEEDS = list(range(5))
CONTENDED_SEEDS = list(range(8))  # as seeds_speedup
# a busy process: a Python loop on one core that ends by itself at its deadline (seconds since the epoch),
# so the contention is bounded in time even if the bench is killed before it can end them
BUSY = "import sys, time\ndeadline = float(sys.argv[1])\nwhile time.time() < deadline:\n    pass\n"


def setup(torch, overrides: list[str], steps: int, device):
    from replicate.config import compose
    from replicate.data import load_dataset
    from replicate.hyperparameters import make_plan

    cfg = compose([*overrides, "logger=none", "runtime.progress=false", f"train.steps={steps}",
                   f"train.eval_every={max(1, steps // 10)}"])
    data = load_dataset(cfg.data, dtype=torch.float32, device=device)
    return cfg, data, make_plan(cfg, n_train=len(data.y_train))


def measure_gru_seeds(torch, settings: dict, device, threads: int | None, *, interleaved,
                      parameter_difference) -> tuple[dict, dict]:
    """gru_seeds_speedup: the MNIST-1D GRU entry's 5 seeds batched (SeedGRU) vs 5 runs of one seed, each at
    the thread count the CLI gives it (or `threads`); and the equality check of the last timed runs, which
    must be bit for bit (tolerance 0), as for the MLP's seeds."""
    from replicate.cpu import intra_op_threads
    from replicate.seed_stack import batching_method
    from replicate.train import train_seeds

    steps = settings["gru_steps"]
    cfg, data, plan = setup(torch, ["paper=mnist1d_gru"], steps, device)
    counts = {"single_seed": threads or intra_op_threads(None, batched_seeds=1, device=device),
              "batched": threads or intra_op_threads(None, batched_seeds=len(GRU_SEEDS), device=device, recurrent=True)}
    last = {}

    def batched():
        torch.set_num_threads(counts["batched"])
        last["batched"] = train_seeds(cfg, data, plan, GRU_SEEDS, vectorize=True)

    def sequential():
        torch.set_num_threads(counts["single_seed"])
        last["sequential"] = [train_seeds(cfg, data, plan, [seed], vectorize=False)[0] for seed in GRU_SEEDS]

    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    samples = interleaved({"batched": batched, "sequential": sequential}, settings["gru_repeats"], synchronize)
    batched_s, sequential_s = statistics.median(samples["batched"]), statistics.median(samples["sequential"])
    metric = {"value": sequential_s / batched_s, "batched_s": batched_s, "sequential_s": sequential_s,
              "method": batching_method(cfg.model), "threads": counts, "seeds": len(GRU_SEEDS), "steps": steps,
              "repeats": settings["gru_repeats"], "samples_s": samples}
    difference = parameter_difference(last["batched"], last["sequential"])
    curves = all(b.metrics == q.metrics and b.curve == q.curve for b, q in zip(last["batched"], last["sequential"]))
    equality = {"steps": steps, **difference, "metrics_and_curves_identical": curves, "tolerance": 0.0,
                "passed": difference["bit_identical"] and curves}
    return metric, equality


def thread_counts(cores: int) -> list[int]:
    """Fixed thread counts to compare: 1, 2, 4, … up to the cores, and the core count itself."""
    counts, count = [], 1
    while count < cores:
        counts.append(count)
        count *= 2
    return counts + [cores]


def measure_contended(torch, settings: dict, device, default_threads: int, *, interleaved) -> dict:
    """contended_slowdown: 8 batched MLP seeds at the default thread count vs the fastest fixed thread count,
    while one busy process per core competes for the CPU; the busy processes end when this returns."""
    from replicate.cpu import available_cores
    from replicate.train import train_seeds

    cfg, data, plan = setup(torch, ["paper=mnist1d_mlp"], settings["contended_steps"], device)
    cores = available_cores()

    def at(count: int):
        def run():
            torch.set_num_threads(count)
            train_seeds(cfg, data, plan, CONTENDED_SEEDS, vectorize=True)
        return run

    candidates = {"default": at(default_threads), **{f"threads_{count}": at(count) for count in thread_counts(cores)}}
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    deadline = time.time() + settings["contended_limit_s"]
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(deadline)]) for _ in range(cores)]
    try:
        samples = interleaved(candidates, settings["contended_repeats"], synchronize)
        load = os.getloadavg()[0]
    finally:
        for process in busy:
            process.kill()
            process.wait()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    best = min((name for name in medians if name != "default"), key=medians.get)
    return {"value": medians["default"] / medians[best], "default_threads": default_threads, "best_fixed": best,
            "medians_s": medians, "busy_processes": len(busy), "load_average_during": load,
            "wait_policy": os.environ.get("OMP_WAIT_POLICY"), "seeds": len(CONTENDED_SEEDS),
            "steps": settings["contended_steps"], "repeats": settings["contended_repeats"], "samples_s": samples,
            "method": "one busy Python loop per available core, started before and killed after the interleaved "
                      "repeats (each ends by itself after contended_limit_s); value: median at the default thread "
                      "count / the fastest median over fixed thread counts, same process, same conditions"}
