"""`python -m replicate.bench`: how fast the training loop, the batched seeds and the start-up are, measured here.

Ratios are measured in one process, with interleaved repeats (A B B A ...) after a discarded warm-up,
and reported as medians, so load drift on a small shared machine mostly cancels. Start-up and the
default run are fresh subprocesses. Every number is printed next to its target; a benchmark reports,
it never fails on a time.

    python -m replicate.bench                       # mode=full, format=table, the CLI's thread counts
    python -m replicate.bench mode=tiny format=json # seconds: checks that everything runs (CI)
    python -m replicate.bench device=cuda           # on a GPU: data, models and the GEMM ceiling on the device

Metrics (targets for a 2-core CPU):
  loop_speedup        our single-seed loop vs a textbook DataLoader + torch.optim.Adam loop   ≥ 1.7
  seeds_speedup       8 seeds batched vs 8 sequential runs of our loop                        ≥ 3
  roofline_fraction   FLOP/s of the batched run vs a large fp32 GEMM, same threads, device     ≥ 0.40
  startup_overhead_s  `python -m replicate` to its first optimizer step − `import torch`      ≤ 0.5 s
  default_run_s       `python -m replicate` with its defaults (wandb offline)                 ≤ 60 s
  gru_seeds_speedup   the GRU entry's 5 seeds batched vs 5 sequential runs                    ≥ 3
  contended_slowdown  batched seeds at the default threads vs the best fixed count, every
                      core kept busy by another process (the bench starts and ends them)     ≤ 1.5
plus equality checks: per-seed parameters of the batched runs (MLP, GRU) vs the sequential runs.
Each in-process measurement runs at the thread count the CLI would give it (replicate.cpu):
one thread for a seed alone, one per seed up to the cores for the 8 batched seeds; seeds_speedup also
reports the sequential runs at the batched thread count. threads=<n> sets every in-process
measurement to n threads instead. The allocator is set as the CLI sets it; the subprocesses run the
CLI with its own defaults on the same device.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from replicate.arguments import Command, Option, UsageError
from replicate.bench_processes import measure_processes
from replicate.bench_roofline import measure_products_alone
from replicate.bench_seeds import measure_contended, measure_gru_seeds

SEEDS = list(range(8))
# steps and repeats per mode; tiny only proves every measurement runs (CI), its times mean little
MODES = {
    "full": dict(loop_steps=500, loop_repeats=7, seed_steps=200, seed_repeats=5, gemm_repeats=5,
                 float64_steps=200, process_repeats=9, default_run_steps=None, gru_steps=100, gru_repeats=3,
                 contended_steps=100, contended_repeats=3, contended_limit_s=300),
    "tiny": dict(loop_steps=20, loop_repeats=1, seed_steps=10, seed_repeats=1, gemm_repeats=2,
                 float64_steps=10, process_repeats=1, default_run_steps=5, gru_steps=2, gru_repeats=1,
                 contended_steps=5, contended_repeats=1, contended_limit_s=60),
}
TARGETS = {  # (comparison, target, unit)
    "loop_speedup": (">=", 1.7, "×"), "seeds_speedup": (">=", 3.0, "×"), "roofline_fraction": (">=", 0.40, ""),
    "startup_overhead_s": ("<=", 0.5, "s"), "default_run_s": ("<=", 60.0, "s"),
    "gru_seeds_speedup": (">=", 3.0, "×"), "contended_slowdown": ("<=", 1.5, "×"),
}
FLOAT32_TOLERANCE, FLOAT64_TOLERANCE = 1e-6, 0.0  # relative: max|Δ| / max|θ| per tensor; float64 must be identical
def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


COMMAND = Command(
    "replicate.bench",
    "Measure how fast the training loop, the batched seeds and the start-up are on this machine, each against "
    "its target: the loop against a textbook DataLoader + torch.optim loop, 8 seeds batched against 8 "
    "sequential runs, FLOP/s against a large GEMM, start-up, the default run, and the same under contention; "
    "plus bit-equality of batched and sequential seeds. A benchmark reports; it never fails on a time.",
    options=(Option("format", "what to print", "table", choices=("table", "json")),
             Option("mode", "full: the measurements; tiny: seconds, only proves that every measurement runs (CI)",
                    "full", choices=tuple(MODES)),
             Option("threads", "threads of every in-process measurement (default: what the CLI would use)",
                    kind="int", minimum=1),
             Option("device", "where data, models and the GEMM ceiling run", "cpu", shown="cpu|cuda|cuda:<index>")),
    examples=("python -m replicate.bench", "python -m replicate.bench mode=tiny format=json",
              "python -m replicate.bench device=cuda"),
)


def parse_arguments(argv: list[str]) -> dict:
    try:
        options = COMMAND.parse(argv).options
        device = options["device"]
        if not (device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise UsageError(f"device must be cpu, cuda or cuda:<index>, got {device!r}")
    except UsageError as error:
        fail(str(error))
    return options


def describe_machine(torch, device, threads: dict, allocator: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = torch.__config__.parallel_info().splitlines()
    blas = next((line.strip() for line in info if "Math Kernel Library" in line or "OpenBLAS" in line), "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads,
            "allocator": allocator, "device": str(device), "python": platform.python_version(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "blas": blas,
            "parallel_backend": next((line.split(":", 1)[1].strip() for line in info if line.startswith("ATen parallel")), ""),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_before": os.getloadavg()[0]}


def interleaved(candidates: dict, repeats: int, synchronize=lambda: None) -> dict:
    """Seconds per call of each candidate: one discarded warm-up each, then A B, B A, ... ; all samples.
    synchronize: waits for the device's queued work (a GPU's kernels run after the call returns)."""
    for run in candidates.values():
        run()
    samples = {name: [] for name in candidates}
    for repeat in range(repeats):
        names = list(candidates) if repeat % 2 == 0 else list(candidates)[::-1]
        for name in names:
            synchronize()
            started = time.perf_counter()
            candidates[name]()
            synchronize()
            samples[name].append(time.perf_counter() - started)
    return samples


def textbook_loop(torch, data, steps: int, eval_every: int, seed: int = 0) -> None:
    """The loop of a PyTorch tutorial: DataLoader over a TensorDataset, default Adam, nn.CrossEntropyLoss;
    evaluated on our loop's schedule (test set every eval_every steps, then train and test at the end).
    On a GPU, as tutorials do it: the dataset stays in host memory and each batch is copied over."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from replicate.models import ResidualMLP

    device = data.x_train.device
    torch.manual_seed(seed)
    model = ResidualMLP(data.x_train.shape[1], data.num_classes, 100).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_function = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(data.x_train.cpu(), data.y_train.cpu()), batch_size=100, shuffle=True)

    def accuracy(x, y) -> float:
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()

    step = 0
    while step < steps:
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            loss_function(model(inputs), targets).backward()
            optimizer.step()
            step += 1
            if step % eval_every == 0 or step == steps:
                accuracy(data.x_test, data.y_test)
            if step == steps:
                break
    accuracy(data.x_train, data.y_train), accuracy(data.x_test, data.y_test)


def evaluation_interval(steps: int) -> int:
    """Steps between test evaluations: 10 per run, the fewest train_seeds allows a shortened run."""
    return max(1, steps // 10)


def mean_cross_entropy_per_seed(torch, logits, targets):
    """Σ over seeds of each seed's mean cross-entropy: logits (n_seeds, batch, classes)."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum") / targets.shape[1]


def parameter_difference(batched: list, sequential: list) -> dict:
    """Largest difference over seeds and tensors; relative = max|Δ| / max|θ| of the same tensor."""
    largest_abs = largest_rel = 0.0
    identical = True
    for one, other in zip(batched, sequential):
        for name, value in one.parameters.items():
            reference = other.parameters[name]
            delta = (value - reference).abs().max().item()
            largest_abs = max(largest_abs, delta)
            largest_rel = max(largest_rel, delta / max(reference.abs().max().item(), 1e-30))
            identical = identical and bool((value == reference).all())
    return {"max_abs_diff": largest_abs, "max_rel_diff": largest_rel, "bit_identical": identical}


def measure_in_process(torch, settings: dict, threads: dict, device) -> tuple[dict, dict]:
    """loop_speedup, seeds_speedup and roofline_fraction, then the equality check, in one process.
    threads: {"single_seed": n, "batched": m}, the intra-op threads of a seed alone and of batched seeds.
    device: where data, models and the GEMM ceiling live."""
    from torch.utils.flop_counter import FlopCounterMode

    from replicate.config import compose
    from replicate.data import load_dataset
    from replicate.hyperparameters import make_plan
    from replicate.seed_stack import SeedStack
    from replicate.train import train_seeds

    def setup(steps: int, dtype: str = "float32"):
        cfg = compose(["paper=mnist1d_mlp", "logger=none", "runtime.progress=false", f"train.steps={steps}",
                       f"train.eval_every={evaluation_interval(steps)}", f"train.dtype={dtype}"])
        data = load_dataset(cfg.data, dtype=getattr(torch, dtype), device=device)
        return cfg, data, make_plan(cfg, n_train=len(data.y_train))

    def train_sequential(cfg, data, plan, count: int = threads["single_seed"]) -> list:  # 8 runs of our loop, one seed each
        torch.set_num_threads(count)
        return [train_seeds(cfg, data, plan, [seed], vectorize=False)[0] for seed in SEEDS]

    def train_batched(cfg, data, plan) -> list:
        torch.set_num_threads(threads["batched"])
        return train_seeds(cfg, data, plan, SEEDS, vectorize=True)

    def batched_and_sequential(cfg, data, plan) -> tuple[list, list]:
        return train_batched(cfg, data, plan), train_sequential(cfg, data, plan)

    def run_flops(cfg, data, plan, seeds: list[int]) -> int:  # everything a timed run computes: steps and evaluations
        with FlopCounterMode(display=False) as counter:
            train_seeds(cfg, data, plan, seeds, vectorize=len(seeds) > 1)
        return counter.get_total_flops()

    def step_flops(cfg, data, seeds: list[int]) -> int:  # forward + backward of one training step, as executed
        stack = SeedStack(cfg.model, seeds, dtype=torch.float32, device=device, vectorize=len(seeds) > 1)
        indices = torch.arange(cfg.train.batch_size, device=device).expand(len(seeds), -1)
        with FlopCounterMode(display=False) as counter:
            mean_cross_entropy_per_seed(torch, stack(data.x_train[indices]), data.y_train[indices]).backward()
        return counter.get_total_flops()

    def synchronize():  # a GPU's kernels are queued: time them to their end
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # the ceiling: a large fp32 GEMM, same process; on a GPU a larger one, several per sample, so that
    # launching and synchronizing do not count
    size, per_sample = (1024, 1) if device.type == "cpu" else (8192, 10)
    gemm_a, gemm_b, gemm_out = (torch.randn(size, size, device=device) for _ in range(3))

    def gemm_seconds(count: int) -> list[float]:  # per GEMM, at `count` threads
        torch.set_num_threads(count)
        multiply = {"gemm": lambda: [torch.mm(gemm_a, gemm_b, out=gemm_out) for _ in range(per_sample)]}
        return [seconds / per_sample for seconds in interleaved(multiply, settings["gemm_repeats"], synchronize)["gemm"]]

    # our single-seed loop vs the textbook loop: same model, steps, batch size and threads
    loop_steps = settings["loop_steps"]
    cfg, data, plan = setup(loop_steps)
    torch.set_num_threads(threads["single_seed"])
    loop = interleaved({
        "ours": lambda: train_seeds(cfg, data, plan, [0], vectorize=False),
        "textbook": lambda: textbook_loop(torch, data, loop_steps, eval_every=evaluation_interval(loop_steps)),
    }, settings["loop_repeats"], synchronize)
    ours_s, textbook_s = statistics.median(loop["ours"]), statistics.median(loop["textbook"])
    single_seed_flops = run_flops(cfg, data, plan, [0])
    examples = loop_steps * cfg.train.batch_size
    metrics = {"loop_speedup": {"value": textbook_s / ours_s, "ours_samples_per_s": examples / ours_s,
                                "textbook_samples_per_s": examples / textbook_s, "steps": loop_steps,
                                "batch_size": cfg.train.batch_size, "repeats": settings["loop_repeats"], "samples_s": loop}}

    # 8 seeds batched vs 8 sequential runs (also at the batched thread count, if that differs), the GEMM
    # ceiling at each thread count measured before and after
    steps = settings["seed_steps"]
    cfg, data, plan = setup(steps)
    counts = sorted(set(threads.values()))
    gemm, last = {count: gemm_seconds(count) for count in counts}, {}
    candidates = {"batched": lambda: last.update(batched=train_batched(cfg, data, plan)),
                  "sequential": lambda: last.update(sequential=train_sequential(cfg, data, plan))}
    if threads["batched"] != threads["single_seed"]:
        candidates["sequential_at_batched_threads"] = lambda: train_sequential(cfg, data, plan, threads["batched"])
    seeds = interleaved(candidates, settings["seed_repeats"], synchronize)
    for count in counts:
        gemm[count] += gemm_seconds(count)
    medians = {name: statistics.median(samples) for name, samples in seeds.items()}
    batched_s, sequential_s = medians["batched"], medians["sequential"]
    sequential_same_s = medians.get("sequential_at_batched_threads", sequential_s)
    metrics["seeds_speedup"] = {"value": sequential_s / batched_s, "batched_s": batched_s, "sequential_s": sequential_s,
                                "at_equal_threads": sequential_same_s / batched_s, "sequential_at_batched_threads_s": sequential_same_s,
                                "threads": threads, "seeds": len(SEEDS), "steps": steps, "repeats": settings["seed_repeats"],
                                "samples_s": seeds}
    gemm_flops_per_s = {count: 2 * size ** 3 / statistics.median(samples) for count, samples in gemm.items()}
    batched_flops, step = run_flops(cfg, data, plan, SEEDS), step_flops(cfg, data, SEEDS)
    achieved = batched_flops / batched_s
    metrics["roofline_fraction"] = {
        "value": achieved / gemm_flops_per_s[threads["batched"]], "achieved_flops_per_s": achieved,
        "gemm_flops_per_s": gemm_flops_per_s[threads["batched"]], "threads": threads["batched"],
        "flops_per_run": batched_flops, "flops_per_step": step, "evaluation_flops_share": 1 - step * steps / batched_flops,
        "gemm": f"{size}³ fp32 torch.mm at the batched run's threads, median of repeats before and after",
        "gemm_size": size,
        "single_seed_fraction": single_seed_flops / ours_s / gemm_flops_per_s[threads["single_seed"]],
        "single_seed_gemm_flops_per_s": gemm_flops_per_s[threads["single_seed"]],
        "note": "FLOPs: FlopCounterMode over an untimed run identical to the timed one (training steps and "
                "evaluations; optimizer updates are not counted); time: the median timed batched run"}
    # why the fraction is what it is: one batched step against its own matrix products replayed alone
    metrics["roofline_fraction"]["products_alone"] = measure_products_alone(
        torch, settings, device, threads["batched"], gemm_flops_per_s[threads["batched"]], interleaved=interleaved)

    # equality: the timed float32 runs themselves, a float64 run of the same length, and the vmap path
    def compared(batched: list, sequential: list, steps: int, tolerance: float) -> dict:
        difference = parameter_difference(batched, sequential)
        metrics_identical = all(b.metrics == q.metrics and b.curve == q.curve for b, q in zip(batched, sequential))
        return {"steps": steps, **difference, "metrics_and_curves_identical": metrics_identical, "tolerance": tolerance,
                "passed": difference["max_rel_diff"] <= tolerance}

    float64_steps = settings["float64_steps"]
    vmap_cfg = compose(["paper=mnist1d_cnn", "logger=none", "runtime.progress=false", f"train.steps={float64_steps}",
                        "train.dtype=float64"])
    vmap_data = load_dataset(vmap_cfg.data, dtype=torch.float64, device=device)
    equality = {
        "definition": f"per-seed final parameters, 8 seeds batched ({threads['batched']} thread(s)) vs 8 sequential runs "
                      f"({threads['single_seed']} thread(s)) of the MNIST-1D MLP; relative = max|Δ| / max|θ| of the same "
                      "tensor, maximised over tensors and seeds",
        "float32": compared(last["batched"], last["sequential"], steps, FLOAT32_TOLERANCE),
        "float64": compared(*batched_and_sequential(*setup(float64_steps, "float64")), float64_steps, FLOAT64_TOLERANCE),
        # not part of the pass/fail: the CNN runs under torch.func.vmap, whose batched convolutions round differently
        "float64_vmap_cnn": compared(*batched_and_sequential(vmap_cfg, vmap_data, make_plan(vmap_cfg, n_train=len(vmap_data.y_train))),
                                     float64_steps, FLOAT64_TOLERANCE),
    }
    equality["passed"] = equality["float32"]["passed"] and equality["float64"]["passed"]
    return metrics, equality


def judge_targets(metrics: dict) -> None:
    for name, (comparison, target, unit) in TARGETS.items():
        value = metrics[name]["value"]
        comparable = value is not None and metrics[name].get("comparable", True)
        metrics[name].update(target=target, comparison=comparison, unit=unit,
                             met=(value >= target if comparison == ">=" else value <= target) if comparable else None)


def format_table(result: dict) -> str:
    machine, metrics, equality = result["machine"], result["metrics"], result["equality"]

    def shown(value, unit):
        return "n/a" if value is None else f"{value:.2f}{' ' + unit if unit == 's' else unit}"

    loop, seeds, roof = metrics["loop_speedup"], metrics["seeds_speedup"], metrics["roofline_fraction"]
    startup, default = metrics["startup_overhead_s"], metrics["default_run_s"]
    details = {
        "loop_speedup": f"ours {loop['ours_samples_per_s']:,.0f} samples/s vs textbook {loop['textbook_samples_per_s']:,.0f} "
                        f"({loop['steps']} steps, batch 100, median of {loop['repeats']})",
        "seeds_speedup": f"{seeds['seeds']} seeds × {seeds['steps']} steps: batched {seeds['batched_s']:.2f} s "
                         f"({seeds['threads']['batched']} thread(s)), sequential {seeds['sequential_s']:.2f} s "
                         f"({seeds['threads']['single_seed']} thread(s))"
                         + (f"; sequential at {seeds['threads']['batched']} threads {seeds['sequential_at_batched_threads_s']:.2f} s, "
                            f"{seeds['at_equal_threads']:.2f}× at equal threads"
                            if seeds["threads"]["batched"] != seeds["threads"]["single_seed"] else "")
                         + f" (median of {seeds['repeats']})",
        "roofline_fraction": f"{roof['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s ({roof['flops_per_step'] / 1e6:.1f} MFLOP/step, "
                             f"{roof['evaluation_flops_share']:.0%} of the run's FLOPs in evaluations) "
                             f"vs GEMM {roof['gemm_size']}³ {roof['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s, both at {roof['threads']} thread(s); single seed "
                             f"{roof['single_seed_fraction']:.2f}; a training step alone {roof['products_alone']['step_fraction']:.2f}, "
                             f"its matrix products replayed alone {roof['products_alone']['products_alone_fraction']:.2f}, "
                             f"{roof['products_alone']['products_share_of_step_time']:.0%} of the step's time",
        "startup_overhead_s": f"first optimizer step {shown(startup['first_step_s'], 's')}, import torch "
                              f"{shown(startup['import_torch_s'], 's')}"
                              + (f"; an empty Hydra app over the same conf/ takes {shown(startup['hydra_overhead_s'], 's')} "
                                 f"of it, replicate {shown(startup['beyond_hydra_s'], 's')}"
                                 f"; for reference, a bare torch.optim.Adam step costs "
                                 f"{shown(startup['torch_optim_first_step_overhead_s'], 's')} over import torch; "
                                 f"whole 1-step run {shown(startup['one_step_run_s'], 's')}"
                                 if "one_step_run_s" in startup else "")
                              + f" (medians of {startup['repeats']} rounds; differences paired by round)",
        "default_run_s": default["note"],
        "gru_seeds_speedup": (lambda gru: f"{gru['seeds']} seeds × {gru['steps']} steps ({gru['method']}): batched "
                              f"{gru['batched_s']:.2f} s ({gru['threads']['batched']} thread(s)), sequential "
                              f"{gru['sequential_s']:.2f} s ({gru['threads']['single_seed']} thread(s)) "
                              f"(median of {gru['repeats']})")(metrics["gru_seeds_speedup"]),
        "contended_slowdown": (lambda busy: f"{busy['seeds']} MLP seeds × {busy['steps']} steps beside "
                               f"{busy['busy_processes']} busy processes (load {busy['load_average_during']:.1f}): default "
                               f"{busy['default_threads']} thread(s) {busy['medians_s']['default']:.2f} s, fastest fixed "
                               f"{busy['best_fixed']} {busy['medians_s'][busy['best_fixed']]:.2f} s; OMP_WAIT_POLICY "
                               f"{busy['wait_policy']} (median of {busy['repeats']})")(metrics["contended_slowdown"]),
    }
    lines = [f"replicate.bench mode={result['mode']}: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
             f"{machine['threads']['single_seed']} thread(s) for a seed alone and {machine['threads']['batched']} for "
             f"{len(SEEDS)} batched seeds, "
             + (f"{machine['device']} ({machine['gpu']}), CPU {machine['cpu_capability']}" if machine["gpu"]
                else f"{machine['device']} ({machine['cpu_capability']})")
             + f", python {machine['python']}; load average "
             f"{machine['load_average_before']:.2f} before, {machine['load_average_after']:.2f} after"
             + (" (busy: load above the core count, times inflated)" if machine["busy"] else "")
             + ("; tiny mode: few steps and repeats, the numbers only show that each measurement runs"
                if result["mode"] == "tiny" else ""), "",
             "| metric | value | target | met | detail |", "|---|---|---|---|---|"]
    for name, metric in metrics.items():
        met = {True: "yes", False: "no", None: "n/a"}[metric["met"]]
        lines.append(f"| {name} | {shown(metric['value'], metric['unit'])} | {metric['comparison'].replace('>=', '≥').replace('<=', '≤')} "
                     f"{metric['target']:g}{metric['unit'] if metric['unit'] != 's' else ' s'} | {met} | {details[name]} |")
    lines += ["", f"Equality ({equality['definition']}):"]
    for name, label in (("float32", "float32"), ("float64", "float64"), ("gru_float32", "GRU (5 seeds), float32"),
                        ("float64_vmap_cnn", "float64, CNN under vmap (reported only)")):
        check = equality[name]
        lines.append(f"- {label}, {check['steps']} steps: max|Δ| {check['max_abs_diff']:.2e}, relative "
                     f"{check['max_rel_diff']:.2e}, parameters bit-identical {'yes' if check['bit_identical'] else 'no'}, "
                     f"metrics and curves identical {'yes' if check['metrics_and_curves_identical'] else 'no'}"
                     + ("" if name == "float64_vmap_cnn" else
                        f": {'passed' if check['passed'] else 'FAILED'} (≤ {check['tolerance']:g})"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    settings = MODES[options["mode"]]
    from replicate.cpu import intra_op_threads, reuse_freed_memory, wait_passively

    wait_passively()  # as the CLI does, before torch loads
    from replicate.numerics import DEFAULT_MODE, apply_numerics

    apply_numerics(DEFAULT_MODE)  # the kernels a user's run gets (docs/numerics.md), pinned before torch loads
    import torch

    device = torch.device(options["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"device={options['device']}: no CUDA device is available here (torch.cuda.is_available() is False); "
             "use device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        fail(f"device={options['device']}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    allocator = reuse_freed_memory()  # as the CLI does
    threads = {"single_seed": options["threads"] or intra_op_threads(None, batched_seeds=1, device=device),
               "batched": options["threads"] or intra_op_threads(None, batched_seeds=len(SEEDS), device=device)}
    machine = describe_machine(torch, device, threads, allocator)
    machine["numerics"] = DEFAULT_MODE if os.environ.get("REPLICATE_NUMERICS") is None else os.environ["REPLICATE_NUMERICS"]
    started = time.perf_counter()
    # also caches MNIST-1D for the subprocesses
    metrics, equality = measure_in_process(torch, settings, threads, device)
    metrics["gru_seeds_speedup"], equality["gru_float32"] = measure_gru_seeds(
        torch, settings, device, options["threads"], interleaved=interleaved, parameter_difference=parameter_difference)
    equality["passed"] = equality["passed"] and equality["gru_float32"]["passed"]
    metrics["contended_slowdown"] = measure_contended(torch, settings, device, threads["batched"], interleaved=interleaved)
    with tempfile.TemporaryDirectory(prefix="replicate-bench-") as workdir:
        metrics.update(measure_processes(settings, workdir, options["device"]))
    judge_targets(metrics)
    machine["load_average_after"] = os.getloadavg()[0]
    machine["busy"] = max(machine["load_average_before"], machine["load_average_after"]) > machine["cores"]
    result = {"mode": options["mode"], "machine": machine, "metrics": metrics, "equality": equality,
              "bench_wall_s": time.perf_counter() - started}
    print(json.dumps(result, indent=2) if options["format"] == "json" else format_table(result))


if __name__ == "__main__":
    main()
