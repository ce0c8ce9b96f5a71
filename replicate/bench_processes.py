"""The fresh-process half of `python -m replicate.bench`: start-up to the first optimizer step, and the
default run, each timed from launch in a new Python process.

    metrics = measure_processes(MODES["tiny"], workdir, "cpu")  # {"startup_overhead_s": ..., "default_run_s": ...}
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

# run by `python -c`: the replicate CLI, stopped right after its first optimizer step. The driver wraps
# replicate.optim.Optimizer.step, to print the wall clock and exit, when the CLI itself imports that
# module: importing it (and torch) up front would change the order of imports, and with it how much the
# garbage collector rescans during Hydra's start (0.25 s more, measured). Nothing else is changed.
FIRST_STEP_DRIVER = """
import importlib.abc, importlib.util, os, runpy, sys, time

class MarkFirstStep(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "replicate.optim":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module
        def exec_module(module):
            load(module)
            step = module.Optimizer.step
            def marked_step(*args, **kwargs):
                step(*args, **kwargs)
                print("BENCH_MARK", time.time(), flush=True)
                os._exit(0)
            module.Optimizer.step = marked_step
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, MarkFirstStep())
sys.argv = ["replicate", *sys.argv[1:]]
runpy.run_module("replicate", run_name="__main__", alter_sys=True)
"""
IMPORT_TORCH = "import time, torch; print('BENCH_MARK', time.time(), flush=True)"
# Hydra's own share of the start-up: an empty Hydra app over the same conf/ (schema, resolvers, the
# same overrides and run directory) whose task function imports torch, as the CLI's does, and marks
HYDRA_FLOOR_DRIVER = """
import os, sys, time, hydra
from replicate.hydra_setup import conf_dir, register_resolvers
from replicate.config import register_schema
register_schema()
register_resolvers()
@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def task(cfg):
    import torch
    print("BENCH_MARK", time.time(), flush=True)
    os._exit(0)
sys.argv = ["replicate", *sys.argv[1:]]
task()
"""
# for reference, the floor of a torch.optim training script: building a torch.optim class imports torch._dynamo
IMPORT_TORCH_AND_OPTIMIZER = ("import time, torch; p = torch.zeros(1, requires_grad=True); o = torch.optim.Adam([p]); "
                              "p.sum().backward(); o.step(); print('BENCH_MARK', time.time(), flush=True)")


def run_process(argv: list[str], *, cwd: str | None = None, marker: bool = False) -> float | None:
    """Wall seconds of a fresh `python` process; with marker, seconds until it prints its BENCH_MARK time."""
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    launched, started = time.time(), time.perf_counter()
    result = subprocess.run([sys.executable, *argv], env=environment, cwd=cwd, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    marks = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("BENCH_MARK ")]
    if result.returncode != 0 and not marks:
        command = " ".join(["python", *argv])[:200]
        raise RuntimeError(f"{command} exited {result.returncode}: {result.stderr.strip()[-500:]}")
    if not marker:
        return elapsed
    return float(marks[0]) - launched if marks else None  # None: it ended without reaching the mark


def measure_processes(settings: dict, workdir: str, device: str) -> dict:
    """Start-up (to the first optimizer step) and the default run, as fresh subprocesses on `device`."""
    one_step = ["paper=mnist1d_mlp", "train.steps=1", "seeds=1", "logger=none", "runtime.progress=false", f"device={device}"]
    candidates = {
        "import_torch_s": lambda: run_process(["-c", IMPORT_TORCH], marker=True),
        "first_step_s": lambda: run_process(["-c", FIRST_STEP_DRIVER, *one_step, f"hydra.run.dir={workdir}/first"],
                                            cwd=workdir, marker=True),
    }
    if settings["default_run_steps"] is None:  # full mode: the references around the headline number
        candidates["import_torch_and_optimizer_s"] = lambda: run_process(["-c", IMPORT_TORCH_AND_OPTIMIZER], marker=True)
        candidates["hydra_app_s"] = lambda: run_process(["-c", HYDRA_FLOOR_DRIVER, *one_step, f"hydra.run.dir={workdir}/hydra"],
                                                        cwd=workdir, marker=True)
        candidates["one_step_run_s"] = lambda: run_process(["-m", "replicate", *one_step, f"hydra.run.dir={workdir}/one"],
                                                           cwd=workdir)
    samples = {name: [] for name in candidates}
    for repeat in range(settings["process_repeats"]):  # no warm-up needed: the bench process warmed the file cache
        for name in (list(candidates) if repeat % 2 == 0 else list(candidates)[::-1]):
            samples[name].append(candidates[name]())
    medians = {name: (statistics.median(values) if None not in values else None) for name, values in samples.items()}
    def paired(later: str, earlier: str) -> float | None:
        """Median over repeats of one process's time minus the other's from the same round: launches drift
        together on a shared machine, so a paired difference is steadier than a difference of medians."""
        if None in samples[later] or None in samples[earlier]:
            return None
        return statistics.median(a - b for a, b in zip(samples[later], samples[earlier]))

    startup = {**medians, "repeats": settings["process_repeats"], "samples_s": samples,
               "method": "fresh processes, wall clock from launch to a printed time.time(): `import torch` prints "
                         "after the import; the CLI (python -c driver running replicate's __main__) prints when its "
                         "first optimizer step returns, and exits; value: median of the per-round differences",
               "value": paired("first_step_s", "import_torch_s")}
    if "one_step_run_s" in medians:  # full mode: the whole 1-step run, Hydra's share, and a torch.optim script's floor
        startup["one_step_run_overhead_s"] = paired("one_step_run_s", "import_torch_s")
        startup["torch_optim_first_step_overhead_s"] = paired("import_torch_and_optimizer_s", "import_torch_s")
        startup["hydra_overhead_s"] = paired("hydra_app_s", "import_torch_s")  # Hydra's imports and config composition
        startup["beyond_hydra_s"] = paired("first_step_s", "hydra_app_s")
    steps = settings["default_run_steps"]
    default_run = (["-m", "replicate", f"device={device}", f"hydra.run.dir={workdir}/default"]
                   + ([f"train.steps={steps}"] if steps else []))
    return {"startup_overhead_s": startup,
            "default_run_s": {"value": run_process(default_run, cwd=workdir), "comparable": steps is None,
                              "command": "python -m replicate " + " ".join(default_run[2:]) + "  (WANDB_MODE=offline)",
                              "note": "the real default (5 seeds × 6001 steps)" if steps is None
                              else f"tiny mode: a {steps}-step run of the default, not comparable to the target"}}
