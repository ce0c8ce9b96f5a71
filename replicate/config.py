"""The configuration schema: what a paper config and a run may say, and composing it.

Hydra composes `conf/` into this schema, so a misspelt key is an error rather than a silent default;
`unknown_override` and `allowed_keys` name the schema's keys for that error. The values the schema
cannot express are checked by replicate.config_checks.check_config.

    cfg = compose(["paper=mnist1d_cnn", "seeds=3"])
"""
from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from typing import Any, List, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING

from replicate.errors import ConfigError  # noqa: F401  (raised by the checks; imported from here across the project)
from replicate.numerics import DEFAULT_MODE


# the allowed values of a run's own settings; each other name a config may use is owned by the module that
# implements it (replicate.config_checks lists them)
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**32 - 1  # numpy's RandomState, which draws scikit-learn's init and shuffles, takes seeds below 2**32


@dataclass
class ClaimConfig:
    name: str = MISSING  # human-readable, e.g. "test accuracy (MLP)"
    metric: str = MISSING  # one of replicate.evaluation.METRICS: what the trainer measures for this claim
    split: str = MISSING  # "test" | "train": the data the number is computed on
    value: float = MISSING  # the published number, in `unit`
    unit: str = MISSING  # "%" | "fraction" | "nats"
    direction: str = MISSING  # which way is better: "higher" | "lower"
    statistic: str = MISSING  # what the published number is: one of replicate.verdict.STATISTICS
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
    stride: int = 1  # cnn1d_pool: convolution stride
    pool: str = "max"  # cnn1d_pool: none | max | avg | l2, over windows of 2 after each convolution
    dropout: Optional[float] = None  # keras_mnist_mlp: drop probability after each hidden layer (None: 0.2)
    depth: Optional[int] = None  # cifar_resnet: 6n + 2 layers (None: 20)
    init: str = "pytorch"  # one of INITS: PyTorch's default init, or scikit-learn's Glorot-uniform from its random_state


@dataclass
class DataConfig:
    name: str = MISSING  # one of DATASETS
    root: Optional[str] = None  # directory with downloaded files (mnist, cifar10); generated data is cached here too
    order: str = "shuffle"  # one of DATA_ORDERS: how the training set is walked
    drop_last: bool = False  # drop a final short batch of each epoch (shuffle orders; sequential: each epoch from example 0)
    file_batch_size: int = 0  # order file_batches: examples per data file, each ending in its own short batch
    seed: int = 42  # generation seed of synthetic data (MNIST-1D); not the training seed
    shuffle_seq: bool = False  # MNIST-1D: permute the 40 positions of every example by one fixed permutation
    num_samples: Optional[int] = None  # MNIST-1D: examples generated, train and test together (None: 5000, the default)
    train_split: Optional[float] = None  # MNIST-1D: fraction of them in the training set (None: 0.8, the default)
    label_noise: Optional[float] = None  # MNIST-1D: probability that a training label is redrawn uniformly from 0–9
    scaling: str = "none"  # "none" | "minmax": feature scaling fitted on the training set
    # synthetic: Gaussian inputs labelled by a fixed random linear teacher (conversion proofs, benchmarks)
    size: int = 1024  # examples
    features: int = 16
    classes: int = 10
    seq_len: Optional[int] = None  # tokens per example: a label per position (sequence losses); ptb: words per window
    rows: Optional[int] = None  # ptb: contiguous rows the stream is cut into, one per batch position (= train.batch_size)
    # mnist, cifar10, ptb: files under data.root (docs/datasets.md)
    download: bool = False  # fetch absent or damaged files from the official source, checked against published md5s
    pixel_divisor: float = 255.0  # mnist, cifar10: uint8 pixels / this (255: [0, 1]; Caffe's scale 0.00390625 is 256)
    mean: List[float] = field(default_factory=list)  # per channel, subtracted after the division ([]: none)
    std: List[float] = field(default_factory=list)  # per channel, divided by after the mean ([]: none)
    holdout: int = 0  # the last N training examples become a validation split (0: none)
    valid_examples: Optional[int] = None  # mnist, cifar10: only the first N validation examples are evaluated (None: all)
    test_examples: Optional[int] = None  # mnist, cifar10: only the first N test examples are evaluated (None: all)
    flatten: bool = False  # images as vectors (N, C·H·W) for MLPs and logistic regression, else (N, C, H, W)
    mean_image: bool = False  # mnist, cifar10: subtract the training split's per-pixel mean image (Caffe's mean_file)


@dataclass
class AugmentConfig:
    """Training-time image augmentation, on the device (replicate.augment); evaluation sees the images as they are."""

    crop_padding: int = 0  # pixels padded per side before a random crop back to the image size (0: none)
    padding_mode: str = "zeros"  # zeros (He et al. 2016) | reflect (airbench's translate, cifar10-fast)
    flip: bool = False  # mirror left-right with probability 1/2
    flip_alternating: bool = False  # with flip: airbench's, a random half mirrored once, then every image on odd epochs
    cutout: int = 0  # side in pixels of a square set to 0 (cifar10-fast: 8); 0: none


@dataclass
class ParamGroupConfig:
    """Hyperparameters of the parameters whose names match a glob (replicate.optim.parameter_groups): the first
    matching entry of optimizer.param_groups wins, and replaces decay_biases and bias_lr_mult for them."""

    match: str = MISSING  # fnmatch glob over parameter names, e.g. "conv1.*", "fc10.weight", "*.bias"
    lr_mult: float = 1.0  # > 0: these parameters step at lr × this (cuda-convnet's per-layer epsW, Caffe's lr_mult)
    weight_decay: Optional[float] = None  # their own weight decay, in the paper's form (None: optimizer.weight_decay)
    weight_decay_mult: float = 1.0  # times this (Caffe's decay_mult)


@dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd | adam | adamw | rmsprop | adagrad | adadelta
    lr: float = MISSING  # in the paper's own units (see conventions.lr_unit)
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0  # in the paper's own form (see conventions.weight_decay_form)
    decay_biases: bool = True  # False: weight decay on weight matrices only (scikit-learn, many Caffe nets)
    bias_lr_mult: float = 1.0  # biases step with lr × this (Caffe's `lr_mult: 2` on bias blobs)
    eps: Optional[float] = None  # None: the optimizer's PyTorch default
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    alpha: float = 0.99  # RMSprop smoothing
    rho: float = 0.9  # Adadelta
    centered: bool = False
    initial_accumulator_value: float = 0.0
    grad_clip: Optional[float] = None  # global-norm threshold, per seed
    grad_clip_value: Optional[float] = None  # elementwise threshold
    param_groups: List[ParamGroupConfig] = field(default_factory=list)  # per-parameter lr and decay, first match wins


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
    constant_epochs: int = 0  # epoch_decay: epochs at the base lr before the first × gamma


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
class EarlyStoppingConfig:
    """Validation-based model selection (replicate.early_stopping): each seed validates on the held-out split
    (data.holdout), keeps its best point's parameters (the final metrics are measured there) and stops when its
    patience runs out. Steps are optimizer steps counted from 0, as DeepLearningTutorials' `iter`."""

    enabled: bool = False
    criterion: str = "error"  # one of replicate.early_stopping.CRITERIA: validation zero-one error or mean loss
    every: int = 1  # steps between validations: after step i when (i + 1) % every == 0, and after the last step
    patience: int = 1  # steps: a seed stops after step i once patience <= i
    patience_increase: float = 2.0  # a significant improvement at step i sets patience = max(patience, i × this)
    improvement_threshold: float = 0.995  # significant: the new best < the old best × this


@dataclass
class FreezeConfig:
    """A parameter that trains for its first `after_epochs` epochs and then stays fixed (replicate.freezing)."""

    parameter: str = MISSING  # its name in the model, e.g. whiten.bias
    after_epochs: int = MISSING  # epochs it trains before it is frozen


@dataclass
class LookaheadConfig:
    """airbench's lookahead (replicate.lookahead): every `every` steps the slow weights move towards the
    network's, ema = d·ema + (1 − d)·net, and the network restarts from them; d = base^every · (t/T)^power after
    t of T steps. At the end the network takes the slow weights."""

    every: int = 0  # steps between updates (0: no lookahead)
    base: float = 0.95  # per-step decay: the update's decay is base^every at the end of training
    power: float = 3.0  # the decay ramps as (t/T)^power from 0 to base^every


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
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # ε of torch.nn.CrossEntropyLoss(label_smoothing=ε) in the training loss (0: none); the training objective the run
    # reports includes it, the evaluated losses (train_loss, test_loss) are plain cross-entropy
    label_smoothing: float = 0.0
    tta: str = "none"  # one of replicate.tta.TTA_MODES: test-time augmentation of the test split's evaluation
    freeze: List[FreezeConfig] = field(default_factory=list)  # parameters frozen after some epochs


@dataclass
class RuntimeConfig:
    # intra-op threads; None: 1, except seeds batched on the CPU: one per seed up to the cores available
    # (replicate.cpu.intra_op_threads says why)
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)


def register_schema() -> None:
    """Make the schema available to Hydra as `config_schema` (conf/config.yaml lists it first)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="config_schema", node=Config)


def compose(overrides: list[str] | None = None):
    """The composed config for overrides, as `python -m replicate <overrides>` would see it (for tests and tools)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from replicate.hydra_setup import conf_dir, register_resolvers

    register_schema()
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


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
