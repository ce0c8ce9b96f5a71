"""The replication pipeline: one paper's run end to end, from a checked config to its written report.

The config is checked → native hyperparameters are converted to the executed convention (both kept) →
data on the device → seeds trained (or resumed; under torchrun, every rank its share) → per-seed metrics →
a verdict per claim → report written → wandb mirrored. Each step hands the next plain values.

    report = replicate_paper(compose(["paper=mnist1d_cnn", "seeds=3"]), Path("outputs/run"))

`python -m replicate` (replicate.cli) parses the command line and calls `replicate_paper`; so does
`replicate.audit`, once per reading.
"""
from __future__ import annotations

import gc
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from replicate.config_checks import check_config
from replicate.errors import ConfigError


def replicate_paper(cfg, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """Run one replication end to end and write its report. Returns the report dict ({} on a dry run
    and on ranks other than 0). overrides: the command line's; those that change the paper's setup
    are reported as deviations."""
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from replicate import report as reporting
    from replicate.checkpoint import deferred_stops
    from replicate.cpu import reuse_freed_memory
    from replicate.data import load_dataset
    from replicate.hyperparameters import make_plan
    from replicate.log import mirror_to_wandb, print_summary
    from replicate.models import check_model_fits
    from replicate.precision import set_tf32

    started = time.perf_counter()
    check_config(cfg)
    allocator = reuse_freed_memory() if cfg.runtime.reuse_memory else "system default"
    device = resolve_device(cfg.device)
    tf32 = set_tf32(cfg.train.tf32)  # off unless asked: PyTorch turns cuDNN's TF32 on by default
    world, rank, device, run_dir = start_distributed(device, run_dir)
    if cfg.train.batch_size < world * cfg.train.accum_steps:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is smaller than {world} rank(s) × "
                          f"{cfg.train.accum_steps} micro-batch(es); the batch size is the global batch")
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
        torch.use_deterministic_algorithms(True)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.train.dtype]
    data = load_dataset(cfg.data, dtype=dtype, device=device, paper_id=cfg.paper.id)
    plan = make_plan(cfg, n_train=len(data.y_train))
    seeds = seed_list(cfg)
    check_model_fits(cfg, data, n_seeds=len(seeds))
    if cfg.dry_run:
        print(f"{cfg.paper.id}: configuration valid; {len(seeds)} seed(s); executed convention "
              f"{plan.executed_convention.name}; exact conversion: {plan.exact}")
        return {}
    vectorize = seeds_together(cfg, data, dtype, len(seeds))
    threads, numerics, execution = run_execution(cfg, data, device, vectorize=vectorize)  # sets the threads
    steps = planned_steps(cfg, data)
    if cfg.runtime.numerics == "portable" and not numerics["pinned"] and rank == 0:
        print(f"warning: runtime.numerics=portable is not in force in this process (ATen {numerics['cpu_capability']}, "
              f"settings {numerics['settings']}); the report records the numerics as applied", file=sys.stderr)
    progress = tqdm(total=steps * len(seeds), desc=f"{cfg.paper.id} ({len(seeds)} seeds)", unit="step",
                    disable=not cfg.runtime.progress or rank != 0, leave=False, mininterval=0.5)
    try:
        # a stop signal ends training at the next step boundary, after saving the group's checkpoint
        with deferred_stops():
            results = train_or_resume(cfg, data, plan, seeds, run_dir, vectorize=vectorize, steps=steps,
                                      progress=progress, execution=execution, writer=rank == 0)
    finally:
        progress.close()
    if rank != 0:
        return {}  # only rank 0 writes the report and logs

    software, hardware = environment(device, threads)
    report = {
        "paper": paper_fields(cfg),
        "claims": judge_claims(cfg.paper.claims, results, seeds),
        "seeds": [{"seed": r.seed, "metrics": r.metrics, "diverged_at": r.diverged_at, "curve": r.curve,
                   **({"early_stopping": r.early_stopping} if r.early_stopping else {})} for r in results],
        "plan": plan.summary(),
        "steps": steps,
        "training_path": training_path(cfg.model, vectorize),
        "execution": {"world_size": world, "backend": ("nccl" if device.type == "cuda" else "gloo") if world > 1 else None,
                      "accum_steps": cfg.train.accum_steps, "precision": cfg.train.precision,
                      "deterministic": cfg.train.deterministic, "channels_last": cfg.train.channels_last,
                      "threads": threads, "allocator": allocator, "device": str(device), **tf32,
                      "cpu_capability": execution["cpu_capability"]},
        "data": data.description,
        "numerics": numerics,
        "overrides": list(overrides or []),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "software": software,
        "hardware": hardware,
        "deviations": deviations(cfg, plan, overrides or []),
        "wall_time_s": time.perf_counter() - started,
    }
    paths = reporting.write_report(run_dir, report)
    if cfg.logger == "wandb":
        report["wandb_run_ids"] = mirror_to_wandb(cfg, report, run_dir)
        reporting.write_json(Path(paths["json"]), report)
    print_summary(report, paths["markdown"])
    return report


def run_execution(cfg, data, device, *, vectorize: bool) -> tuple[int, dict, dict]:
    """(intra-op threads, numerics environment, execution identity) of a run: what changes float results
    once resolved, the numerics the libraries run under included (part of each seed's fingerprint). Sets
    the process's intra-op threads to the run's first: the numerics record the threads in force."""
    import torch

    from replicate.cpu import intra_op_threads
    from replicate.identity import execution_identity
    from replicate.models import is_recurrent
    from replicate.numerics import fingerprint_fields, numerics_environment

    threads = intra_op_threads(cfg.runtime.threads, batched_seeds=len(seed_list(cfg)) if vectorize else 1,
                               device=device, recurrent=is_recurrent(cfg.model))
    torch.set_num_threads(threads)
    numerics = numerics_environment(cfg.runtime.numerics, data=data, dtype=cfg.train.dtype, precision=cfg.train.precision)
    return threads, numerics, {**execution_identity(device, threads, cfg, vectorize=vectorize), **fingerprint_fields(numerics)}


def planned_steps(cfg, data) -> int:
    """The optimizer steps a run takes: train.steps, or train.epochs of the training set's batches."""
    from replicate.data import BatchOrder
    from replicate.train import total_steps

    return total_steps(cfg.train, BatchOrder(len(data.y_train), batch_size=cfg.train.batch_size, order=cfg.data.order,
                                             seeds=[0], drop_last=cfg.data.drop_last, file_batch_size=cfg.data.file_batch_size))


def save_finished_seed(run_dir: Path, stamp: str, result) -> None:
    """A trained seed (a replicate.train.SeedResult) saved as finished under the run's fingerprint."""
    from replicate.checkpoint import save_seed_result

    save_seed_result(run_dir, {"fingerprint": stamp, "seed": result.seed, "metrics": result.metrics,
                               "curve": result.curve, "diverged_at": result.diverged_at,
                               "wall_time_s": result.wall_time_s, "path": result.path,
                               **({"early_stopping": result.early_stopping} if result.early_stopping else {})})


def judge_claims(claims, results: list, seeds: list[int]) -> list[dict]:
    """Each claim of the paper config with its per-seed values (in the claim's unit) and its verdict."""
    from omegaconf import OmegaConf

    from replicate.report import claimed_value_in_unit
    from replicate.verdict import judge_claim

    judged = []
    for claim in claims:
        measured = [claimed_value_in_unit(result.metrics.get(claim.metric, float("nan")), claim.unit) for result in results]
        stated = {**OmegaConf.to_container(claim, resolve=True), "claimed": claim.value}
        judged.append({**stated, "measured": measured, "verdict": judge_claim(stated, measured, seeds).to_dict()})
    return judged


def paper_fields(cfg) -> dict:
    """The paper block without its claims (they are reported with their verdicts)."""
    from omegaconf import OmegaConf

    return {key: value for key, value in OmegaConf.to_container(cfg.paper, resolve=True).items() if key != "claims"}


def deviations(cfg, plan, overrides: list[str]) -> list[str]:
    """Where this run departs from the paper's setup: the config's own list, an inexact conversion, and the
    command line's overrides that change the setup."""
    found = list(getattr(cfg, "deviations", []) or [])
    if not plan.exact:
        found.append("the conversion to the executed convention is not exact: "
                     + "; ".join(f"{r.field}: {r.reason}" for r in plan.conversion.rules if not r.exact))
    changed = overridden_setup(overrides)
    if changed:
        found.append("the paper's setup was overridden on the command line: " + " ".join(changed))
    return found


def training_path(model_cfg, vectorize: bool) -> str:
    from replicate.seed_stack import batching_method

    return f"batched ({batching_method(model_cfg)})" if vectorize else "sequential"


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
            device = rank_device(int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                                 torch.cuda.device_count())
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    shared_dir = from_rank_zero(str(run_dir))  # a lazily resolved ${now:} may differ between processes
    return dist.get_world_size(), dist.get_rank(), device, Path(shared_dir)


def rank_device(local_rank: int, local_world: int, device_count: int):
    """This local rank's GPU: one GPU per process (NCCL refuses two ranks on one device). Every rank
    checks the whole node, so all fail at once rather than some waiting for the others to join."""
    import torch

    local_world = max(local_world, local_rank + 1)  # LOCAL_WORLD_SIZE may be unset when started by hand
    if local_world > device_count:
        raise ConfigError(f"torchrun started {local_world} processes on this machine but it has {device_count} CUDA "
                          f"device(s); use --nproc_per_node={device_count} or fewer, or device=cpu (gloo)")
    return torch.device("cuda", local_rank)


def from_rank_zero(value):
    """Rank 0's value, on every rank (waiting for rank 0: a barrier); the value itself outside torchrun."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def end_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
                    execution: dict, writer: bool = True) -> list:
    """Train the seeds in groups (all together when batched, one by one otherwise), skipping finished
    seeds found in run_dir and resuming from checkpoints; each finished seed is saved at once.
    execution: replicate.identity.execution_identity(), part of the fingerprint.
    Under torchrun every rank reads run_dir, only the writer (rank 0) writes."""
    from replicate.checkpoint import group_name, load_seed_result
    from replicate.identity import fingerprint
    from replicate.train import SeedResult, train_seeds

    stamp = fingerprint(cfg, execution)
    groups = [seeds] if vectorize else [[seed] for seed in seeds]
    # under torchrun rank 0 alone deletes and reads what a previous run left, then every rank follows
    # its decision: a rank that looked for itself could find a file rank 0 is deleting
    if not cfg.resume and writer:
        start_over(run_dir, seeds, [run_dir / "checkpoints" / f"{group_name(group)}.pt" for group in groups])
    finished_runs = from_rank_zero({seed: load_seed_result(run_dir, seed, stamp) for seed in seeds} if writer else None)
    results = []
    for group in groups:
        finished = [finished_runs[seed] for seed in group]
        checkpoint_path = run_dir / "checkpoints" / f"{group_name(group)}.pt"
        if all(finished):
            results += [SeedResult(**{k: v for k, v in result.items() if k != "fingerprint"}) for result in finished]
            progress.update(steps * len(group))
            continue
        # every: 0 writes no periodic checkpoints, but a stop signal still saves one
        checkpoint = {"path": checkpoint_path, "every": cfg.checkpoint.every, "fingerprint": stamp, "save": writer}
        trained = train_seeds(cfg, data, plan, group, vectorize=vectorize, progress=progress, checkpoint=checkpoint)
        if not writer:
            results += trained
            continue
        for result in trained:
            save_finished_seed(run_dir, stamp, result)
        checkpoint_path.unlink(missing_ok=True)  # the group's seeds are saved: the checkpoint has served
        if checkpoint_path.parent.exists() and not any(checkpoint_path.parent.iterdir()):
            checkpoint_path.parent.rmdir()
        results += trained
    return results


def seeds_together(cfg, data, dtype, n_seeds: int) -> bool:
    """Whether the seeds train as one batched computation (train.batched: auto, true, false). In bf16 or
    fp16 only seed-stacked linear layers batch: they compute each seed's products as it would alone,
    bit for bit, while vmap's grouped convolutions sum in another order, which reduced precision rounds
    visibly (Adam turns a flipped sign of a small gradient into a 2·lr step) and fp16 can turn into
    another skipped step."""
    from replicate.seed_stack import batching_method, can_vectorize

    batched = str(cfg.train.batched).lower()
    if n_seeds == 1 or batched == "false":
        return False
    # on the CPU with oneDNN held below its widest kernels (runtime.numerics=portable: AVX2), its fp16 and
    # bf16 GEMMs round a batched product unlike the solo one (tests/test_precision.py shows it)
    restricted = data.x_train.device.type == "cpu" and os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() != "ALL"
    exact = cfg.train.precision == "fp32" or (batching_method(cfg.model) == "seed-stacked linear layers"
                                              and not restricted)
    # vmap merges the seed axis into a grouped convolution's channels by a copy in NCHW order, undoing
    # train.channels_last (tests/test_precision.py): such seeds keep NHWC by training one by one
    vmapped_nhwc = cfg.train.channels_last and batching_method(cfg.model) == "torch.func.vmap over seeds"
    if batched == "true" and vmapped_nhwc:
        raise ConfigError(f"train.batched=true with train.channels_last=true: model {cfg.model.name!r} batches its "
                          "seeds under torch.func.vmap, which runs the convolutions in NCHW order; use "
                          "train.batched=auto (seeds one by one, in NHWC) or train.channels_last=false")
    exact = exact and not vmapped_nhwc
    if batched == "true" and not exact:
        reason = (f"oneDNN is limited to {os.environ.get('ONEDNN_MAX_CPU_ISA')} (runtime.numerics=portable), whose "
                  "reduced-precision products differ batched and alone" if restricted else
                  f"model {cfg.model.name!r} batches as {batching_method(cfg.model)}, which is not shown to equal "
                  "each seed trained alone in reduced precision")
        raise ConfigError(f"train.batched=true with train.precision={cfg.train.precision} cannot keep each seed equal "
                          f"to the seed alone: {reason}; use train.batched=auto (seeds one by one) or train.precision=fp32")
    return exact and (batched == "true" or can_vectorize(cfg.model, data, dtype))


def start_over(run_dir: Path, seeds: list[int], checkpoints: list[Path]) -> None:
    """resume=false: forget the finished seeds and the checkpoints a previous run left in run_dir."""
    for seed in seeds:
        (run_dir / "seeds" / f"seed-{seed}.json").unlink(missing_ok=True)
    for path in checkpoints:
        path.unlink(missing_ok=True)


def overridden_setup(overrides: list[str]) -> list[str]:
    """The command line's overrides that change the paper's setup (reported as deviations)."""
    from replicate.identity import is_neutral

    return [item for item in overrides if not is_neutral(item)]


def keep_out_of_collector(*, once: bool = False) -> None:
    """torch's, Hydra's and OmegaConf's objects live as long as the process: keep them out of the garbage
    collector's full passes, which would otherwise rescan them all each time (about 0.5 s per run on the
    2-core machine) and once more at interpreter exit (about 1 s); finalizers and atexit handlers (wandb,
    logging) still run. Called once torch is imported (once: a sweep's later jobs freeze no garbage), and
    again after the last run."""
    if once and gc.get_freeze_count():
        return
    gc.freeze()
