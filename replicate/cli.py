"""`python -m replicate paper=<id>`: the Hydra entry point and the data flow of one replication.

Hydra composes conf/ → the config is checked → native hyperparameters are converted to the executed
convention (both kept) → data on the device → seeds trained → per-seed metrics → verdict per claim →
report written → wandb mirrored. Each step hands the next plain values.

    python -m replicate                      # the embedded default (MNIST-1D), no download
    python -m replicate paper=mnist1d_cnn seeds=3 train.steps=500 logger=none
"""
from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata, resources
from pathlib import Path

from replicate.config import ConfigError, check_config, register_schema


def conf_dir() -> Path:
    """conf/ beside the package in a checkout, or replicate/conf inside an installed wheel."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if (checkout / "config.yaml").exists():
        return checkout
    return Path(str(resources.files("replicate") / "conf"))


def available_papers() -> list[str]:
    return sorted(path.stem for path in (conf_dir() / "paper").glob("*.yaml"))


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_paper_argument(argv: list[str]) -> None:
    """An unknown paper id is one line naming the ids, before Hydra prints its longer message."""
    for argument in argv:
        if argument.startswith("paper="):
            names = argument.split("=", 1)[1]
            if names.startswith(("glob(", "choice(", "range(")):
                continue
            for name in names.split(","):
                if name not in available_papers():
                    fail(f"unknown paper {name!r}; available: {', '.join(available_papers())}")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def seed_list(cfg) -> list[int]:
    return [cfg.seed] if cfg.seed is not None else list(range(cfg.seeds))


def environment(device, threads: int) -> tuple[dict, dict]:
    import torch

    software = {"replicate": _version("replicate"), "python": platform.python_version(), "torch": torch.__version__}
    for package in ("numpy", "scipy", "hydra-core", "wandb", "mnist1d", "scikit-learn"):
        software[package] = _version(package)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hardware = {"device": str(device), "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
                "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                "platform": platform.platform()}
    return software, hardware


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def replicate_paper(cfg, run_dir: Path) -> dict:
    """Run one replication end to end and write its report. Returns the report dict."""
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from replicate import report as reporting
    from replicate.data import load_dataset
    from replicate.log import mirror_to_wandb, print_summary
    from replicate.plan import make_plan
    from replicate.train import can_vectorize, total_steps, train_seeds
    from replicate.data import BatchOrder
    from replicate.verdict import judge

    started = time.perf_counter()
    check_config(cfg)
    threads = cfg.runtime.threads or 1  # small models are overhead-bound: one thread per process avoids spin-waits
    torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.train.dtype]
    data = load_dataset(cfg.data, dtype=dtype, device=device)
    plan = make_plan(cfg, n_train=len(data.y_train))
    seeds = seed_list(cfg)
    if cfg.dry_run:
        print(f"{cfg.paper.id}: configuration valid; {len(seeds)} seed(s); executed convention "
              f"{plan.executed_convention.name}; exact conversion: {plan.exact}")
        return {}
    batched = str(cfg.train.batched).lower()
    vectorize = len(seeds) > 1 and batched != "false" and (batched == "true" or can_vectorize(cfg.model, data, dtype))
    steps = total_steps(cfg.train, BatchOrder(len(data.y_train), batch_size=cfg.train.batch_size, order="sequential", seeds=[0]))
    if cfg.data.order != "sequential":
        steps = total_steps(cfg.train, BatchOrder(len(data.y_train), batch_size=cfg.train.batch_size, order=cfg.data.order,
                                                  seeds=[0], drop_last=cfg.data.drop_last))
    progress = tqdm(total=steps * (1 if vectorize else len(seeds)), desc=f"{cfg.paper.id} ({len(seeds)} seeds)",
                    unit="step", disable=not cfg.runtime.progress, leave=False, mininterval=0.5)
    if vectorize:
        results = train_seeds(cfg, data, plan, seeds, vectorize=True, progress=progress)
    else:
        results = [result for seed in seeds
                   for result in train_seeds(cfg, data, plan, [seed], vectorize=False, progress=progress)]
    progress.close()

    claims = []
    for claim in cfg.paper.claims:
        measured = [reporting.claimed_value_in_unit(result.metrics.get(claim.metric, float("nan")), claim.unit)
                    for result in results]
        if claim.statistic == "exact" and claim.seed is not None and claim.seed in seeds:
            judged = [measured[seeds.index(claim.seed)]]  # the published run is this seed's run
        else:
            judged = measured
        verdict = judge(judged, claimed=claim.value, tolerance=claim.tolerance, statistic=claim.statistic,
                        direction=claim.direction, n_claimed=claim.n, std_claimed=claim.std, decimals=claim.decimals)
        claims.append({**OmegaConf.to_container(claim, resolve=True), "claimed": claim.value,
                       "measured": measured, "verdict": verdict.to_dict()})
    software, hardware = environment(device, threads)
    deviations = list(getattr(cfg, "deviations", []) or [])
    if not plan.exact:
        deviations.append("the conversion to the executed convention is not exact: "
                          + "; ".join(f"{r.field}: {r.reason}" for r in plan.conversion.rules if not r.exact))
    if cfg.train.steps is not None and cfg.train.epochs is not None:
        deviations.append(f"train.steps={cfg.train.steps} overrides the paper's {cfg.train.epochs} epochs")
    report = {
        "paper": {key: value for key, value in OmegaConf.to_container(cfg.paper, resolve=True).items() if key != "claims"},
        "claims": claims,
        "seeds": [{"seed": r.seed, "metrics": r.metrics, "diverged_at": r.diverged_at, "curve": r.curve} for r in results],
        "plan": plan.summary(),
        "steps": steps,
        "training_path": "batched (torch.func.vmap over seeds)" if vectorize else "sequential",
        "data": data.description,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "software": software,
        "hardware": hardware,
        "deviations": deviations,
        "wall_time_s": time.perf_counter() - started,
    }
    paths = reporting.write_report(run_dir, report)
    if cfg.logger == "wandb":
        report["wandb_run_ids"] = mirror_to_wandb(cfg, report, run_dir)
        reporting.write_json(Path(paths["json"]), report)
    print_summary(report, paths["markdown"])
    return report


def main() -> None:
    check_paper_argument(sys.argv[1:])
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_schema()

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def run(cfg) -> None:
        try:
            replicate_paper(cfg, Path(HydraConfig.get().runtime.output_dir))
        except ConfigError as error:
            fail(str(error))

    run()
