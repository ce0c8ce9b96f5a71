"""`python -m replicate paper=<id>`: the Hydra entry point and the data flow of one replication.

Hydra composes conf/ → the config is checked → native hyperparameters are converted to the executed
convention (both kept) → data on the device → seeds trained → per-seed metrics → verdict per claim →
report written → wandb mirrored. Each step hands the next plain values.

    python -m replicate                      # the embedded default (MNIST-1D), no download
    python -m replicate paper=mnist1d_cnn seeds=3 train.steps=500 logger=none
"""
from __future__ import annotations

import gc
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


def config_dirs(argv: list[str]) -> list[Path]:
    """conf/ and any user directories given with --config-dir / -cd (Hydra's own option)."""
    dirs = [conf_dir()]
    for index, argument in enumerate(argv):
        if argument in ("--config-dir", "-cd") and index + 1 < len(argv):
            dirs.append(Path(argv[index + 1]))
        elif argument.startswith("--config-dir="):
            dirs.append(Path(argument.split("=", 1)[1]))
    return dirs


def available_papers(argv: list[str] | None = None) -> list[str]:
    return sorted({path.stem for directory in config_dirs(argv or []) for path in (directory / "paper").glob("*.yaml")})


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_arguments(argv: list[str]) -> None:
    """Mistakes Hydra would answer with a traceback or a long message, answered in one line first:
    an unknown paper id, a paper file that is not valid YAML, an output directory that cannot be written."""
    import yaml

    papers = ["mnist1d_mlp"]  # the default in conf/config.yaml
    for argument in argv:
        if argument.startswith("paper="):
            names = argument.split("=", 1)[1]
            papers = [] if names.startswith(("glob(", "choice(", "range(")) else names.split(",")
    for name in papers:
        files = [directory / "paper" / f"{name}.yaml" for directory in config_dirs(argv)]
        existing = [path for path in files if path.exists()]
        if not existing:
            fail(f"unknown paper {name!r}; available: {', '.join(available_papers(argv))}")
        try:
            yaml.safe_load(existing[-1].read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            fail(f"{existing[-1]} is not valid YAML{where}: {problem}")
    for argument in argv:
        if argument.startswith("hydra.run.dir="):
            check_writable(Path(argument.split("=", 1)[1]))


def check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".replicate-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        fail(f"cannot write the output directory {directory} ({error.strerror}); choose another with hydra.run.dir=...")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def start_distributed(device, run_dir: Path):
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPU, gloo on CPU), take this
    rank's GPU, and use rank 0's run directory everywhere. Returns (world, rank, device, run_dir)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 1, 0, device, run_dir
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    shared = [str(run_dir)]
    dist.broadcast_object_list(shared, src=0)  # a lazily resolved ${now:} may differ between processes
    return dist.get_world_size(), dist.get_rank(), device, Path(shared[0])


def run_stamp() -> str:
    """The run directory's time stamp, the same in every process that torchrun starts together."""
    from datetime import datetime

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if "LOCAL_RANK" in os.environ:  # torchrun: its agent is every local rank's parent
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        suffix = run_id[:8] if run_id not in ("", "none") else f"agent{os.getppid()}"
        stamp = f"{datetime.now():%Y-%m-%d}_torchrun-{suffix}"
    return stamp


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


def train_or_resume(cfg, data, plan, seeds, run_dir: Path, *, vectorize: bool, steps: int, progress,
                    writer: bool = True) -> list:
    """Train the seeds in groups (all together when batched, one by one otherwise), skipping finished
    seeds found in run_dir and resuming from checkpoints; each finished seed is saved at once.
    Under torchrun every rank reads run_dir, only the writer (rank 0) writes."""
    from replicate.checkpoint import fingerprint, group_name, load_seed_result, save_seed_result
    from replicate.train import SeedResult, train_seeds

    stamp = fingerprint(cfg)
    if not cfg.resume and writer:
        for seed in seeds:
            (run_dir / "seeds" / f"seed-{seed}.json").unlink(missing_ok=True)
    results = []
    for group in [seeds] if vectorize else [[seed] for seed in seeds]:
        finished = [load_seed_result(run_dir, seed, stamp) for seed in group]
        checkpoint_path = run_dir / "checkpoints" / f"{group_name(group)}.pt"
        if all(finished):
            results += [SeedResult(**{k: v for k, v in result.items() if k != "fingerprint"}) for result in finished]
            progress.update(steps * len(group))
            continue
        if not cfg.resume and writer:
            checkpoint_path.unlink(missing_ok=True)
        checkpoint = ({"path": checkpoint_path, "every": cfg.checkpoint.every, "fingerprint": stamp, "save": writer}
                      if cfg.checkpoint.every else None)
        trained = train_seeds(cfg, data, plan, group, vectorize=vectorize, progress=progress, checkpoint=checkpoint)
        if not writer:
            results += trained
            continue
        for result in trained:
            save_seed_result(run_dir, {"fingerprint": stamp, "seed": result.seed, "metrics": result.metrics,
                                       "curve": result.curve, "diverged_at": result.diverged_at,
                                       "wall_time_s": result.wall_time_s, "path": result.path})
        checkpoint_path.unlink(missing_ok=True)  # the group's seeds are saved: the checkpoint has served
        if checkpoint_path.parent.exists() and not any(checkpoint_path.parent.iterdir()):
            checkpoint_path.parent.rmdir()
        results += trained
    return results


NEUTRAL_OVERRIDES = ("paper", "seeds", "seed", "logger", "device", "resume", "dry_run", "hydra.", "runtime.", "wandb.",
                     "checkpoint.")


def replicate_paper(cfg, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """Run one replication end to end and write its report. Returns the report dict.
    overrides: the command line's overrides; those that change the paper's setup are reported as deviations."""
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from replicate import report as reporting
    from replicate.data import BatchOrder, load_dataset
    from replicate.log import mirror_to_wandb, print_summary
    from replicate.numerics import numerics_environment
    from replicate.plan import make_plan
    from replicate.runtime import intra_op_threads, reuse_freed_memory
    from replicate.seeds import batching_method, can_vectorize
    from replicate.train import total_steps
    from replicate.verdict import judge

    started = time.perf_counter()
    check_config(cfg)
    allocator = reuse_freed_memory() if cfg.runtime.reuse_memory else "system default"
    device = resolve_device(cfg.device)
    world, rank, device, run_dir = start_distributed(device, run_dir)
    if cfg.train.batch_size < world * cfg.train.accum_steps:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is smaller than {world} rank(s) × "
                          f"{cfg.train.accum_steps} micro-batch(es); the batch size is the global batch")
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
        torch.use_deterministic_algorithms(True)
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
    threads = intra_op_threads(cfg.runtime.threads, batched_seeds=len(seeds) if vectorize else 1, device=device)
    torch.set_num_threads(threads)
    order = BatchOrder(len(data.y_train), batch_size=cfg.train.batch_size, order=cfg.data.order, seeds=[0],
                       drop_last=cfg.data.drop_last)
    steps = total_steps(cfg.train, order)
    numerics = numerics_environment(cfg.runtime.numerics, data=data, dtype=cfg.train.dtype, precision=cfg.train.precision)
    if cfg.runtime.numerics == "portable" and not numerics["pinned"] and rank == 0:
        print(f"warning: runtime.numerics=portable is not in force in this process (ATen {numerics['cpu_capability']}, "
              f"settings {numerics['settings']}); the report records the numerics as applied", file=sys.stderr)
    progress = tqdm(total=steps * len(seeds), desc=f"{cfg.paper.id} ({len(seeds)} seeds)", unit="step",
                    disable=not cfg.runtime.progress or rank != 0, leave=False, mininterval=0.5)
    results = train_or_resume(cfg, data, plan, seeds, run_dir, vectorize=vectorize, steps=steps, progress=progress,
                              writer=rank == 0)
    progress.close()
    if rank != 0:
        return {}  # only rank 0 writes the report and logs

    claims = []
    for claim in cfg.paper.claims:
        measured = [reporting.claimed_value_in_unit(result.metrics.get(claim.metric, float("nan")), claim.unit)
                    for result in results]
        if claim.statistic == "exact" and claim.seed is not None and claim.seed in seeds:
            judged = [measured[seeds.index(claim.seed)]]  # the published run is this seed's run
        else:
            judged = measured
        verdict = judge(judged, claimed=claim.value, tolerance=claim.tolerance, statistic=claim.statistic,
                        direction=claim.direction, n_claimed=claim.n, std_claimed=claim.std, decimals=claim.decimals,
                        olympic=claim.olympic)
        claims.append({**OmegaConf.to_container(claim, resolve=True), "claimed": claim.value,
                       "measured": measured, "verdict": verdict.to_dict()})
    software, hardware = environment(device, threads)
    deviations = list(getattr(cfg, "deviations", []) or [])
    if not plan.exact:
        deviations.append("the conversion to the executed convention is not exact: "
                          + "; ".join(f"{r.field}: {r.reason}" for r in plan.conversion.rules if not r.exact))
    changed = [item for item in overrides or [] if not item.lstrip("+~").startswith(NEUTRAL_OVERRIDES)]
    if changed:
        deviations.append("the paper's setup was overridden on the command line: " + " ".join(changed))
    report = {
        "paper": {key: value for key, value in OmegaConf.to_container(cfg.paper, resolve=True).items() if key != "claims"},
        "claims": claims,
        "seeds": [{"seed": r.seed, "metrics": r.metrics, "diverged_at": r.diverged_at, "curve": r.curve} for r in results],
        "plan": plan.summary(),
        "steps": steps,
        "training_path": f"batched ({batching_method(cfg.model)})" if vectorize else "sequential",
        "execution": {"world_size": world, "backend": ("nccl" if device.type == "cuda" else "gloo") if world > 1 else None,
                      "accum_steps": cfg.train.accum_steps, "precision": cfg.train.precision,
                      "deterministic": cfg.train.deterministic, "channels_last": cfg.train.channels_last,
                      "threads": threads, "allocator": allocator, "device": str(device)},
        "data": data.description,
        "numerics": numerics,
        "overrides": list(overrides or []),
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


def pin_numerics(argv: list[str]) -> None:
    """runtime.numerics: its pins enter the environment before torch loads, as each library reads them
    once, when it loads (replicate.numerics); the report records what took effect."""
    from replicate.numerics import DEFAULT_MODE, apply_numerics, check_mode, requested_mode

    mode = requested_mode(argv) or DEFAULT_MODE
    problem = check_mode(mode)
    if problem:
        fail(problem)
    for problem in apply_numerics(mode):
        print(f"warning: {problem}", file=sys.stderr)


def main() -> None:
    check_arguments(sys.argv[1:])
    pin_numerics(sys.argv[1:])
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_schema()
    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def run(cfg) -> None:
        try:
            hydra_config = HydraConfig.get()
            import torch  # noqa: F401  (imported before the freeze below)

            # torch's, Hydra's and OmegaConf's objects live as long as the process: keep them out of
            # the garbage collector's full passes, which would otherwise rescan them all each time
            # (about 0.5 s per run here); once per process, so a sweep's later jobs freeze no garbage
            if gc.get_freeze_count() == 0:
                gc.freeze()
            replicate_paper(cfg, Path(hydra_config.runtime.output_dir), list(hydra_config.overrides.task))
        except ConfigError as error:
            fail(str(error))

    run()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    # and out of the collector's last pass at interpreter exit (about 1 s on the 2-core machine once
    # torch is loaded); finalizers and atexit handlers (wandb, logging) still run
    gc.freeze()


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
