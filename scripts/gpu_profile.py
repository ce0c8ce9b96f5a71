"""Kernels and launch overhead per optimizer step of the default entry, measured with torch.profiler.

Two runs of the same configuration, `steps` and 2·`steps` optimizer steps, after a warm-up run; their
difference is `steps` steps of the loop alone (set-up, evaluations and the final evaluation cancel,
as both runs have the same number of learning-curve points: eval_every is pinned).

    python scripts/gpu_profile.py device=cuda steps=50 out=gpu-check/profile
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def profiled_run(cfg, data, plan, steps: int, device, out: Path | None):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from replicate.train import train_seeds

    cfg.train.steps = steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        train_seeds(cfg, data, plan, list(range(cfg.seeds)), vectorize=cfg.seeds > 1)
        synchronize()
        wall = time.perf_counter() - started
    events = profiler.key_averages()
    if out is not None:
        profiler.export_chrome_trace(str(out / "trace.json"))
        (out / "top_ops.txt").write_text(events.table(sort_by="self_cuda_time_total" if device.type == "cuda"
                                                      else "self_cpu_time_total", row_limit=30))
    device_events = [e for e in events if getattr(e, "device_type", None) is not None
                     and str(e.device_type).endswith("CUDA")]
    launches = [e for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")]
    return {"wall_s": wall,
            "kernels": sum(e.count for e in device_events),
            "kernel_time_s": sum(e.self_device_time_total for e in device_events) / 1e6 if device_events else 0.0,
            "launches": sum(e.count for e in launches),
            "launch_cpu_time_s": sum(e.self_cpu_time_total for e in launches) / 1e6,
            "aten_ops": sum(e.count for e in events if e.key.startswith("aten::"))}


def main(argv: list[str]) -> None:
    import torch

    from replicate.config import compose
    from replicate.data import load_dataset
    from replicate.hyperparameters import make_plan

    options = dict(argument.split("=", 1) for argument in argv)
    device = torch.device(options.get("device", "cuda"))
    steps = int(options.get("steps", "50"))
    out = Path(options.get("out", "profile"))
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose([f"device={device.type}", "logger=none", f"train.eval_every={10 * steps}"])
    data = load_dataset(cfg.data, dtype=torch.float32, device=device)
    plan = make_plan(cfg, n_train=len(data.y_train))
    profiled_run(cfg, data, plan, steps, device, None)  # warm-up: kernels loaded, allocator grown
    short = profiled_run(cfg, data, plan, steps, device, None)
    long = profiled_run(cfg, data, plan, 2 * steps, device, out)
    per_step = {key: (long[key] - short[key]) / steps for key in short}
    result = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "seeds": cfg.seeds, "steps_measured": steps, "per_step": per_step,
              "launch_overhead_fraction": (per_step["launch_cpu_time_s"] / per_step["wall_s"]) if per_step["wall_s"] > 0 else None,
              "runs": {"short": short, "long": long}}
    (out / "profile.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({"per_step": per_step, "launch_overhead_fraction": result["launch_overhead_fraction"]}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
