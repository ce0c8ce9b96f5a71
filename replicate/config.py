"""The configuration schema: what a paper config and a run may say, and the checks Hydra cannot do.

Hydra composes `conf/` into this schema, so a misspelt key is an error rather than a silent default.
`check_config(cfg)` then checks values (positive learning rate, known names, ...) and raises
`ConfigError` with a one-line message; the CLI prints it without a traceback.

    cfg = OmegaConf.merge(OmegaConf.structured(Config), user_cfg); check_config(cfg)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, List, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING

from replicate.errors import ConfigError
from replicate.numerics import DEFAULT_MODE, MODES as NUMERICS_MODES


STATISTICS = ("single_run", "mean_of_n", "median_of_n", "best_of_n", "threshold", "exact")
DIRECTIONS = ("higher", "lower")
METRICS = ("test_accuracy", "train_accuracy", "test_loss", "train_loss", "train_epoch_loss")
CONV2D_MODELS = ("cnn2d",)  # models with 4-D convolution weights: train.channels_last applies
MODELS = ("logistic", "mlp", "residual_mlp", "cnn1d", "cnn2d", "gru")  # mlp and logistic also map (…, T, d) → (…, T, classes)
DATASETS = ("mnist1d", "sklearn_digits", "sklearn_iris", "synthetic")
DATA_ORDERS = ("sequential", "shuffle", "sklearn_shuffle")
INITS = ("pytorch", "sklearn_glorot")
SCHEDULES = ("constant", "step", "multistep", "inv", "invscaling", "piecewise_linear", "cosine")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
LOGGERS = ("wandb", "none")
LOSSES = ("cross_entropy", "clipped_log_loss")
UNITS = ("%", "fraction", "nats")  # metrics are measured as fractions and nats; a % claim is compared × 100
MAX_SEED = 2**32 - 1  # numpy's RandomState, which draws scikit-learn's init and shuffles, takes seeds below 2**32


@dataclass
class ClaimConfig:
    name: str = MISSING  # human-readable, e.g. "test accuracy (MLP)"
    metric: str = MISSING  # one of METRICS: what the trainer measures for this claim
    split: str = MISSING  # "test" | "train": the data the number is computed on
    value: float = MISSING  # the published number, in `unit`
    unit: str = MISSING  # "%" | "fraction" | "nats"
    direction: str = MISSING  # which way is better: "higher" | "lower"
    statistic: str = MISSING  # what the published number is: one of STATISTICS
    n: Optional[int] = None  # runs behind the published number (mean_of_n, median_of_n, best_of_n)
    std: Optional[float] = None  # published spread, when the source gives one
    tolerance: float = MISSING  # margin, in `unit`, within which a measurement counts as the same result
    tolerance_reason: str = MISSING  # why this margin, from what the source states
    location: str = MISSING  # where the source states the number (file, table, line)
    quote: str = ""  # the source's own words, when short
    seed: Optional[int] = None  # the seed the published run used, when the source fixes it
    decimals: Optional[int] = None  # exact claims: printed decimals, when the number ends in zeros ("0.950" → 3)
    olympic: bool = False  # judge the olympic mean (best and worst seed dropped), as MLPerf does


@dataclass
class UnstatedConfig:
    """A setting the source leaves open: `python -m replicate.audit paper=<id>` trains every reading."""

    key: str = MISSING  # the config key, e.g. conventions.momentum_form
    readings: List[Any] = field(default_factory=list)  # the values the source is consistent with (two or more)
    evidence: str = MISSING  # what the source says and does not say, with its location


@dataclass
class PaperConfig:
    id: str = MISSING
    title: str = MISSING
    authors: str = MISSING
    venue: str = MISSING
    year: int = MISSING
    url: str = MISSING
    source_files: List[str] = field(default_factory=list)  # "owner/repo:path" of the code that produced the claims
    claims: List[ClaimConfig] = field(default_factory=list)
    unstated: List[UnstatedConfig] = field(default_factory=list)  # open questions for replicate.audit


@dataclass
class ModelConfig:
    name: str = MISSING  # one of MODELS
    input_size: int = MISSING
    output_size: int = MISSING
    hidden_size: Optional[int] = None
    channels: Optional[int] = None
    bidirectional: bool = True
    init: str = "pytorch"  # one of INITS: PyTorch's default init, or scikit-learn's Glorot-uniform from its random_state


@dataclass
class DataConfig:
    name: str = MISSING  # one of DATASETS
    root: Optional[str] = None  # directory with downloaded files (mnist, cifar10); generated data is cached here too
    order: str = "shuffle"  # one of DATA_ORDERS: how the training set is walked
    drop_last: bool = False  # drop a final short batch of each epoch (shuffle orders)
    seed: int = 42  # generation seed of synthetic data (MNIST-1D); not the training seed
    shuffle_seq: bool = False  # MNIST-1D: permute the 40 positions of every example by one fixed permutation
    scaling: str = "none"  # "none" | "minmax": feature scaling fitted on the training set
    # synthetic: Gaussian inputs labelled by a fixed random linear teacher (conversion proofs, benchmarks)
    size: int = 1024  # examples
    features: int = 16
    classes: int = 10
    seq_len: Optional[int] = None  # tokens per example: a label per position (sequence losses)


@dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd | adam | adamw | rmsprop | adagrad | adadelta
    lr: float = MISSING  # in the paper's own units (see conventions.lr_unit)
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0  # in the paper's own form (see conventions.weight_decay_form)
    decay_biases: bool = True  # False: weight decay on weight matrices only (scikit-learn, many Caffe nets)
    eps: Optional[float] = None  # None: the optimizer's PyTorch default
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    alpha: float = 0.99  # RMSprop smoothing
    rho: float = 0.9  # Adadelta
    centered: bool = False
    initial_accumulator_value: float = 0.0
    grad_clip: Optional[float] = None  # global-norm threshold, per seed
    grad_clip_value: Optional[float] = None  # elementwise threshold


@dataclass
class ScheduleConfig:
    name: str = "constant"  # one of SCHEDULES
    gamma: float = 0.1  # step/multistep factor; Caffe "inv" gamma
    step_size: int = 1  # step: decay every step_size steps
    milestones: List[int] = field(default_factory=list)  # multistep: steps at which lr *= gamma
    power: float = 0.75  # Caffe "inv": lr·(1 + gamma·step)^(−power)
    power_t: float = 0.5  # scikit-learn invscaling: lr / (samples_seen + 1)^power_t, updated each epoch
    knots: List[float] = field(default_factory=list)  # piecewise_linear: positions as fractions of training
    values: List[float] = field(default_factory=list)  # piecewise_linear: lr multipliers at the knots


@dataclass
class ConventionsConfig:
    """How the original code computed its update. Vocabulary: replicate.conventions."""

    loss_reduction: str = MISSING
    weight_decay_form: str = MISSING
    momentum_form: str = MISSING
    eps_placement: str = MISSING
    lr_unit: str = "per_batch"
    lr_unit_examples: int = 1
    lr_momentum_normalized: bool = False


@dataclass
class TrainConfig:
    batch_size: int = MISSING
    steps: Optional[int] = None  # optimizer updates; overrides epochs (use it to shorten any run)
    epochs: Optional[int] = None
    convention: Optional[str] = None  # None: execute the paper's own conventions; else a preset to convert to
    dtype: str = "float32"
    # how reported loss values are computed (gradients are of cross-entropy either way, as in
    # scikit-learn's backprop): cross_entropy, or clipped_log_loss = log of probabilities clipped to [eps, 1 - eps]
    loss_value: str = "cross_entropy"
    eval_every: int = 0  # steps between learning-curve points (0: about 25 points per run)
    batched: str = "auto"  # "auto" | "true" | "false": train the seeds together as one batched computation
    accum_steps: int = 1  # micro-batches per optimizer step, each normalised by the global batch's count
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16": autocast for recipes that trained in reduced precision
    deterministic: bool = False  # torch.use_deterministic_algorithms(True) (+ the cuBLAS workspace setting on GPU)
    channels_last: bool = False  # 2-D convolution weights in NHWC memory order (GPU recipes with reduced precision)
    tf32: bool = False  # TF32 (10-bit mantissa) for float32 matrix products and cuDNN convolutions/RNNs on GPUs


@dataclass
class RuntimeConfig:
    # intra-op threads; None: 1, except seeds batched on the CPU: one per seed up to the cores available
    # (replicate.runtime.intra_op_threads says why)
    threads: Optional[int] = None
    reuse_memory: bool = True  # glibc keeps freed tensor memory for reuse (no page faults per new tensor)
    progress: bool = True
    # portable: code paths every x86-64 CPU with AVX2 runs alike, the same bits on any such host; native: each picks its
    # fastest for this CPU. Set before torch loads (replicate.numerics); the report records what applied
    numerics: str = DEFAULT_MODE


@dataclass
class WandbConfig:
    project: str = "replicate"
    entity: Optional[str] = None
    mode: Optional[str] = None  # None: $WANDB_MODE if set, else "offline"
    dir: Optional[str] = None  # None: the run directory
    group: Optional[str] = None  # None: <paper>/<executed convention>; replicate.audit sets one per reading


@dataclass
class CheckpointConfig:
    every: int = 500  # optimizer steps between checkpoints of a group of seeds still training (0: none)


@dataclass
class Config:
    paper: PaperConfig = field(default_factory=PaperConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    conventions: ConventionsConfig = field(default_factory=ConventionsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    seeds: int = 5  # number of seeds: 0 .. seeds-1
    seed: Optional[int] = None  # run exactly this one seed (fan seeds out as separate jobs)
    device: str = "auto"
    logger: str = "wandb"
    dry_run: bool = False  # compose and check the config, train nothing
    resume: bool = True  # reuse finished seeds and checkpoints found in the run directory
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def register_schema() -> None:
    """Make the schema available to Hydra as `config_schema` (conf/config.yaml lists it first)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="config_schema", node=Config)


def compose(overrides: list[str] | None = None):
    """The composed config for overrides, as `python -m replicate <overrides>` would see it (for tests and tools)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from replicate.cli import conf_dir

    from replicate.cli import register_resolvers

    register_schema()
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


def _require_choice(value: Any, allowed: tuple, what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")


def _require_positive(value: Any, what: str) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{what} must be positive, got {value!r}")


def check_config(cfg: Any) -> None:
    """Check values the schema cannot express. Raises ConfigError with one line."""
    from omegaconf import OmegaConf

    from replicate import conventions
    from replicate.plan import conventions_fields

    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False), Config)
    if unknown:
        parent = unknown[0].rpartition(".")[0]
        allowed = ", ".join(allowed_keys(parent)) or "none"
        raise ConfigError(f"unknown setting {unknown[0]}; allowed under {parent or 'the top level'}: {allowed}; "
                          "a leading + adds a key but does not make a misspelt one valid: correct the name")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing value(s) for {', '.join(missing)}; every paper config states these")

    _require_choice(cfg.model.name, MODELS, "model")
    _require_choice(cfg.model.init, INITS, "model.init")
    _require_choice(cfg.data.name, DATASETS, "dataset")
    _require_choice(cfg.data.order, DATA_ORDERS, "data.order")
    _require_choice(cfg.data.scaling, ("none", "minmax"), "data.scaling")
    _require_choice(cfg.schedule.name, SCHEDULES, "schedule")
    _require_choice(cfg.train.dtype, DTYPES, "train.dtype")
    _require_choice(cfg.train.loss_value, LOSSES, "train.loss_value")
    _require_choice(str(cfg.train.batched).lower(), ("auto", "true", "false"), "train.batched")
    _require_choice(cfg.device, DEVICES, "device")
    _require_choice(cfg.train.precision, ("fp32", "bf16", "fp16"), "train.precision")
    _require_positive(cfg.train.accum_steps, "train.accum_steps")
    if cfg.train.channels_last and cfg.model.name not in CONV2D_MODELS:
        raise ConfigError(f"train.channels_last=true needs a model with 2-D convolutions; model {cfg.model.name!r} "
                          f"has none (allowed: {', '.join(CONV2D_MODELS)})")
    _require_choice(cfg.logger, LOGGERS, "logger")
    from replicate.optim import OPTIMIZERS

    _require_choice(cfg.optimizer.name, OPTIMIZERS, "optimizer")
    _require_positive(cfg.optimizer.lr, "optimizer.lr")
    _require_positive(cfg.train.batch_size, "train.batch_size")
    _require_positive(cfg.seeds, "seeds")
    if cfg.seed is not None and not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed must be >= 0 and <= {MAX_SEED} (numpy's seed range), got {cfg.seed}")
    if cfg.seeds - 1 > MAX_SEED:
        raise ConfigError(f"seeds must be at most {MAX_SEED + 1} (seeds are 0..seeds-1), got {cfg.seeds}")
    if cfg.train.steps is None and cfg.train.epochs is None:
        raise ConfigError("set train.steps or train.epochs")
    if cfg.train.steps is not None:
        _require_positive(cfg.train.steps, "train.steps")
    if cfg.train.epochs is not None:
        _require_positive(cfg.train.epochs, "train.epochs")
    if cfg.optimizer.weight_decay < 0:
        raise ConfigError(f"optimizer.weight_decay must be >= 0, got {cfg.optimizer.weight_decay}")
    if not 0 <= cfg.optimizer.momentum < 1:
        raise ConfigError(f"optimizer.momentum must be in [0, 1), got {cfg.optimizer.momentum}")
    for limit in ("grad_clip", "grad_clip_value"):
        value = cfg.optimizer[limit]
        if value is not None:
            _require_positive(value, f"optimizer.{limit}")
    if cfg.checkpoint.every < 0:
        raise ConfigError(f"checkpoint.every must be >= 0 (0 turns checkpoints off), got {cfg.checkpoint.every}")
    if cfg.data.root is not None and not Path(cfg.data.root).expanduser().is_dir():
        raise ConfigError(f"data.root {cfg.data.root} is not a directory; create it, or leave data.root unset "
                          "to use the cache in ~/.cache/replicate ($REPLICATE_CACHE)")
    if cfg.runtime.threads is not None:
        _require_positive(cfg.runtime.threads, "runtime.threads")
    for size in ("input_size", "output_size", "hidden_size", "channels"):
        if cfg.model[size] is not None:
            _require_positive(cfg.model[size], f"model.{size}")
    for name in ("lr", "momentum", "weight_decay", "eps", "alpha", "rho", "initial_accumulator_value",
                 "grad_clip", "grad_clip_value"):
        _require_finite(cfg.optimizer[name], f"optimizer.{name}")
    _check_optimizer_and_schedule(cfg)
    if cfg.train.eval_every < 0:
        raise ConfigError(f"train.eval_every must be >= 0 (0: about 25 points per run), got {cfg.train.eval_every}")
    if cfg.data.name == "synthetic":
        for name in ("size", "features", "classes"):
            _require_positive(cfg.data[name], f"data.{name}")
    _require_choice(cfg.runtime.numerics, NUMERICS_MODES, "runtime.numerics")
    try:
        conventions.Convention(name="native", **conventions_fields(cfg))
        if cfg.train.convention is not None:
            conventions.get_convention(cfg.train.convention)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not cfg.paper.claims:
        raise ConfigError(f"paper {cfg.paper.id!r} states no claims; add at least one under paper.claims")
    for claim in cfg.paper.claims:
        _check_claim(claim)


def _check_optimizer_and_schedule(cfg: Any) -> None:
    """Values PyTorch's update rules or the schedules would reject with a traceback, or run as nonsense."""
    optimizer, schedule = cfg.optimizer, cfg.schedule
    betas = list(optimizer.betas)
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {betas}; e.g. optimizer.betas=[0.9,0.999]")
    if optimizer.eps is not None:
        _require_positive(optimizer.eps, "optimizer.eps")
    for name in ("alpha", "rho"):
        if not 0 <= optimizer[name] <= 1:
            raise ConfigError(f"optimizer.{name} must be in [0, 1], got {optimizer[name]}")
    if optimizer.initial_accumulator_value < 0:
        raise ConfigError(f"optimizer.initial_accumulator_value must be >= 0, got {optimizer.initial_accumulator_value}")
    if schedule.name == "step":
        _require_positive(schedule.step_size, "schedule.step_size")
    if schedule.name in ("step", "multistep", "inv"):
        _require_positive(schedule.gamma, "schedule.gamma")
    if schedule.name == "piecewise_linear" and (len(schedule.knots) != len(schedule.values) or not schedule.knots):
        raise ConfigError(f"schedule.knots and schedule.values must be non-empty lists of equal length, got "
                          f"{len(schedule.knots)} and {len(schedule.values)}")


def _require_finite(value: Any, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")


def _check_claim(claim: Any) -> None:
    _require_choice(claim.statistic, STATISTICS, f"statistic in claim {claim.name!r}")
    _require_choice(claim.direction, DIRECTIONS, f"direction in claim {claim.name!r}")
    _require_choice(claim.metric, METRICS, f"metric in claim {claim.name!r}")
    _require_choice(claim.unit, UNITS, f"unit in claim {claim.name!r}")
    for key in ("value", "tolerance", "std"):
        _require_finite(claim[key], f"claim {claim.name!r}: {key}")
    if claim.tolerance < 0:
        raise ConfigError(f"claim {claim.name!r}: tolerance must be >= 0, got {claim.tolerance}")
    if claim.std is not None and claim.std < 0:
        raise ConfigError(f"claim {claim.name!r}: std must be >= 0, got {claim.std}")
    if claim.n is not None and claim.n < 1:
        raise ConfigError(f"claim {claim.name!r}: n must be positive, got {claim.n}")
    loss = claim.metric.endswith("loss")
    if loss != (claim.unit == "nats"):
        allowed = "nats" if loss else "% or fraction"
        raise ConfigError(f"claim {claim.name!r}: metric {claim.metric} is measured in {allowed}, not {claim.unit!r}")
    if claim.statistic in ("mean_of_n", "median_of_n", "best_of_n") and not claim.n:
        raise ConfigError(f"claim {claim.name!r}: statistic {claim.statistic} needs n (the paper's number of runs)")


def unknown_keys(settings: Any, schema: Any, prefix: str = "") -> list[str]:
    """Dotted keys in a config (as plain containers) that the schema does not define: what `+key=value`
    on the command line can add to a structured config without Hydra objecting."""
    origin = get_origin(schema)
    if origin is Union:  # Optional[X]
        schema = next(arg for arg in get_args(schema) if arg is not type(None))
        origin = get_origin(schema)
    if is_dataclass(schema) and isinstance(settings, dict):
        hints = get_type_hints(schema)
        found = []
        for key, value in settings.items():
            if key not in hints:
                found.append(f"{prefix}{key}")
            else:
                found += unknown_keys(value, hints[key], f"{prefix}{key}.")
        return found
    if origin in (list, List) and isinstance(settings, list) and get_args(schema):
        return [key for index, value in enumerate(settings)
                for key in unknown_keys(value, get_args(schema)[0], f"{prefix[:-1]}[{index}].")]
    return []


def unknown_override(key: str) -> str | None:
    """For an override's dotted key (`train.stepz`), the first part the schema does not define, as a dotted
    key, or None when the schema defines it or cannot tell (inside lists and free-form values)."""
    schema, parts = Config, key.split(".")
    for index, part in enumerate(parts):
        hint = get_type_hints(schema).get(part)
        if hint is None:
            return ".".join(parts[:index + 1])
        if get_origin(hint) is Union:  # Optional[X]
            hint = next(arg for arg in get_args(hint) if arg is not type(None))
        if not is_dataclass(hint):
            return None
        schema = hint
    return None


def allowed_keys(dotted: str) -> list[str]:
    """The schema's keys under a dotted prefix ('' for the top level; list indices ignored)."""
    schema = Config
    for part in [part.split("[")[0] for part in dotted.split(".") if part]:
        hint = get_type_hints(schema).get(part)
        if get_origin(hint) in (list, List):
            hint = get_args(hint)[0]
        if not is_dataclass(hint):
            return []
        schema = hint
    return sorted(get_type_hints(schema))


def check_model_fits(cfg: Any, data: Any, n_seeds: int) -> None:
    """The model's sizes fit the data, and its parameters fit in memory: checked on PyTorch's meta device,
    which builds the model and runs a forward pass with shapes only (no memory, no random numbers)."""
    import os

    import torch

    from replicate.models import build_model

    if cfg.model.output_size != data.num_classes:
        raise ConfigError(f"model.output_size={cfg.model.output_size} but dataset {data.name} has "
                          f"{data.num_classes} classes; set model.output_size={data.num_classes}")
    with torch.device("meta"):
        model = build_model(cfg.model)
        example = torch.empty(2, *data.x_train.shape[1:], dtype=data.x_train.dtype)
        try:
            model.to(data.x_train.dtype)(example)
        except (RuntimeError, ValueError) as error:
            raise ConfigError(f"model {cfg.model.name} with model.input_size={cfg.model.input_size} does not fit "
                              f"the data's examples of shape {list(data.x_train.shape[1:])} "
                              f"({str(error).splitlines()[0][:100]}); set model.input_size to match") from None
    # parameters, gradients and up to two optimizer buffers per seed: a lower bound on what training needs
    needed = 4 * n_seeds * sum(p.numel() for p in model.parameters()) * data.x_train.element_size()
    device = data.x_train.device
    try:
        available = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
                     else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return
    if needed > available:
        raise ConfigError(f"the model needs at least {needed / 2**30:.1f} GiB for {n_seeds} seed(s) (parameters, "
                          f"gradients, optimizer state); the {device.type} has {available / 2**30:.1f} GiB; reduce "
                          "model.hidden_size or model.channels, or seeds")
