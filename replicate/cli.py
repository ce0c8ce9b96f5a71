"""`python -m replicate paper=<id>`: the Hydra entry point and the data flow of one replication.

Hydra composes conf/ → the config is checked → native hyperparameters are converted to the executed
convention (both kept) → data on the device → seeds trained → per-seed metrics → verdict per claim →
report written → wandb mirrored. Each step hands the next plain values.

    python -m replicate                      # the embedded default (MNIST-1D), no download
    python -m replicate paper=mnist1d_cnn seeds=3 train.steps=500 logger=none
"""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import time
from importlib import metadata, resources
from pathlib import Path

from replicate.checkpoint import Interrupted, describe_write_error, run_lock
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
    an unknown paper id, a paper file that is not valid YAML (or states a key twice), an output directory
    that cannot be written, a misspelt setting (with or without a leading +)."""
    import yaml

    UniqueKeyLoader = _unique_key_loader()
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
            content = yaml.load(existing[-1].read_text(), Loader=UniqueKeyLoader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            fail(f"{existing[-1]} is not valid YAML{where}: {problem}")
        if content is not None and not isinstance(content, dict):
            fail(f"{existing[-1]} holds a YAML {type(content).__name__}, not a mapping of settings; "
                 "start from a file in conf/paper/")
    for argument in argv:
        if argument.startswith("hydra.run.dir="):
            check_writable(Path(argument.split("=", 1)[1]))
    check_override_keys(argv)


def check_override_keys(argv: list[str]) -> None:
    """A misspelt key is one line naming the allowed ones, with or without a leading + (Hydra's own
    message suggests the +, which would add the misspelt key and run the defaults); a value of the wrong
    type (train.steps=abc, seeds=2.5) is one line too, checked by OmegaConf against the schema as Hydra would."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from replicate.config import Config, allowed_keys, unknown_override

    schema = None
    for argument in argv:
        key, separator, _ = argument.partition("=")
        key = key.lstrip("+~")
        if not separator or argument.startswith("-") or "/" in key or key.split(".")[0] == "hydra" or key == "paper":
            continue  # options, config groups (hydra/launcher=slurm), Hydra's own settings, the paper group
        unknown = unknown_override(key)
        if unknown is not None:
            parent = unknown.rpartition(".")[0]
            fail(f"unknown setting {unknown}; allowed under {parent or 'the top level'}: "
                 f"{', '.join(allowed_keys(parent))}; correct the name (a leading + does not make a misspelt key valid)")
        try:
            override = OverridesParser.create().parse_overrides([argument])[0]
            if override.is_delete() or override.is_sweep_override():
                continue
            schema = schema if schema is not None else OmegaConf.structured(Config)
            OmegaConf.update(schema, key, override.value(), merge=True)
        except (HydraException, OmegaConfBaseException) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            fail(f"{argument}: {detail}; give {key} a value of its type (see --cfg job for the current values)")


def _unique_key_loader():
    """PyYAML's safe loader, refusing a mapping that states a key twice (OmegaConf refuses it too, with a
    traceback; plain PyYAML would silently keep the last)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, (str, int, float, bool)):
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, Loader.construct_mapping)
    return Loader


def check_writable(directory: Path) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 probes; every rank writing one file would race
        return
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
                    execution: dict, writer: bool = True) -> list:
    """Train the seeds in groups (all together when batched, one by one otherwise), skipping finished
    seeds found in run_dir and resuming from checkpoints; each finished seed is saved at once.
    execution: replicate.identity.execution_identity(), part of the fingerprint.
    Under torchrun every rank reads run_dir, only the writer (rank 0) writes."""
    from replicate.checkpoint import group_name, load_seed_result, save_seed_result
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
            save_seed_result(run_dir, {"fingerprint": stamp, "seed": result.seed, "metrics": result.metrics,
                                       "curve": result.curve, "diverged_at": result.diverged_at,
                                       "wall_time_s": result.wall_time_s, "path": result.path})
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
    from replicate.seeds import batching_method, can_vectorize

    batched = str(cfg.train.batched).lower()
    if n_seeds == 1 or batched == "false":
        return False
    # on the CPU with oneDNN held below its widest kernels (runtime.numerics=portable: AVX2), its fp16 and
    # bf16 GEMMs round a batched product unlike the solo one (tests/test_precision.py shows it)
    restricted = data.x_train.device.type == "cpu" and os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() != "ALL"
    exact = cfg.train.precision == "fp32" or (batching_method(cfg.model) == "seed-stacked linear layers"
                                              and not restricted)
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


def replicate_paper(cfg, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """Run one replication end to end and write its report. Returns the report dict.
    overrides: the command line's overrides; those that change the paper's setup are reported as deviations."""
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from replicate import report as reporting
    from replicate.checkpoint import deferred_stops
    from replicate.config import check_model_fits
    from replicate.data import BatchOrder, load_dataset
    from replicate.identity import execution_identity
    from replicate.log import mirror_to_wandb, print_summary
    from replicate.models import is_recurrent
    from replicate.numerics import fingerprint_fields, numerics_environment
    from replicate.plan import make_plan
    from replicate.precision import set_tf32
    from replicate.runtime import intra_op_threads, reuse_freed_memory
    from replicate.seeds import batching_method
    from replicate.train import total_steps
    from replicate.verdict import judge

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
    threads = intra_op_threads(cfg.runtime.threads, batched_seeds=len(seeds) if vectorize else 1, device=device,
                               recurrent=is_recurrent(cfg.model))
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
    # what changes float results once resolved, the numerics the libraries run under included
    execution = {**execution_identity(device, threads, cfg, vectorize=vectorize), **fingerprint_fields(numerics)}
    try:
        # a stop signal ends training at the next step boundary, after saving the group's checkpoint
        with deferred_stops():
            results = train_or_resume(cfg, data, plan, seeds, run_dir, vectorize=vectorize, steps=steps,
                                      progress=progress, execution=execution, writer=rank == 0)
    finally:
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
    changed = overridden_setup(overrides or [])
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
                      "threads": threads, "allocator": allocator, "device": str(device), **tf32,
                      "cpu_capability": execution["cpu_capability"]},
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


def prepare_process(argv: list[str]) -> None:
    """What must be set before torch loads, for every command that trains in its own process: OpenMP
    workers that wait passively (their runtime reads the policy once) and runtime.numerics's pins (each
    library reads its dispatch setting once)."""
    from replicate.runtime import wait_passively

    wait_passively()
    pin_numerics(argv)


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
    prepare_process(sys.argv[1:])  # first: checking the arguments may import torch
    install_stop_handlers()
    try:
        check_arguments(sys.argv[1:])
        run_hydra()
    except Interrupted as stop:
        print(describe_interruption(stop), file=sys.stderr)
        sys.exit(128 + stop.signal_number)


def run_hydra() -> None:
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
            run_dir = Path(hydra_config.runtime.output_dir)
            # under torchrun, rank 0 holds the directory and writes; the other ranks only read it
            with run_lock(run_dir) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext():
                if os.environ.get("RANK", "0") == "0":
                    save_hydra_files(cfg, hydra_config, run_dir)
                replicate_paper(cfg, run_dir, list(hydra_config.overrides.task))
        except ConfigError as error:
            fail(str(error))
        except Interrupted:
            raise
        except OSError as error:
            fail(describe_write_error(error), code=1)
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            fail("out of memory while training (" + (str(error).splitlines() or ["MemoryError"])[0][:120] + "); "
                 "reduce model.hidden_size or model.channels, seeds, or train.batch_size", code=1)

    run()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    # and out of the collector's last pass at interpreter exit (about 1 s on the 2-core machine once
    # torch is loaded); finalizers and atexit handlers (wandb, logging) still run
    gc.freeze()


def save_hydra_files(cfg, hydra_config, run_dir: Path) -> None:
    """.hydra/config.yaml, hydra.yaml and overrides.yaml, as Hydra writes them, but only once this run
    holds the directory (conf/config.yaml sets hydra.output_subdir to null so that Hydra does not write
    them before the lock: a refused run would overwrite the settings of the run that holds it)."""
    from omegaconf import OmegaConf, open_dict

    from replicate.report import write_atomically

    hydra_copy = OmegaConf.create({"hydra": OmegaConf.to_container(hydra_config)})
    with open_dict(hydra_copy):
        hydra_copy.hydra.output_subdir = ".hydra"
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_copy), ("overrides.yaml", hydra_config.overrides.task)):
        write_atomically(run_dir / ".hydra" / name, OmegaConf.to_yaml(node))


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")  # Ctrl-C; SLURM's notice before preemption or the time limit; a closed terminal


def install_stop_handlers() -> None:
    """A stop signal ends training at the next step boundary after saving a checkpoint (see
    replicate.checkpoint.request_stop); outside training it stops at once. Either way: one line, exit 128 + signal."""
    import signal

    from replicate.checkpoint import request_stop

    for name in STOP_SIGNALS:
        # a signal ignored at start stays ignored: nohup ignores SIGHUP, a shell's background job SIGINT
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) != signal.SIG_IGN:
            signal.signal(getattr(signal, name), lambda number, frame: request_stop(number))


def describe_interruption(stop) -> str:
    import signal

    name = signal.Signals(stop.signal_number).name
    if stop.step is not None:
        seeds = ", ".join(str(seed) for seed in stop.seeds)
        saved = "checkpoint saved" if stop.saved else "no checkpoint saved by this process"
        return (f"interrupted by {name} at step {stop.step} of {stop.steps} of seed(s) {seeds} ({saved}); "
                "rerun the same command to resume")
    return f"interrupted by {name}; finished seeds are kept; rerun the same command to resume"


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    text = str(error)
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text
            or "out of memory" in text)


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
