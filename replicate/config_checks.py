"""The checks Hydra cannot do: values the schema (replicate.config) cannot express, each a `ConfigError`
with a one-line message that the command line prints without a traceback.

    check_config(compose(["paper=mnist1d_cnn"]))

Each name a config may use is owned by the module that implements it, and imported from there:
models.MODELS (model.name), data.DATASETS (data.name), schedule.SCHEDULES, optim.OPTIMIZERS,
loss.LOSS_VALUES (train.loss_value), precision.PRECISIONS, log.LOGGERS, and for claims
evaluation.METRICS, verdict.STATISTICS and DIRECTIONS, report.UNITS.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from replicate.config import DEVICES, DTYPES, MAX_SEED, Config, allowed_keys, unknown_keys
from replicate.errors import ConfigError
from replicate.numerics import MODES as NUMERICS_MODES


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
    from replicate.data import DATA_ORDERS, DATASETS, SCALINGS
    from replicate.log import LOGGERS
    from replicate.loss import LOSS_VALUES
    from replicate.models import CONV2D_MODELS, INITS, MODELS
    from replicate.optim import OPTIMIZERS
    from replicate.hyperparameters import conventions_fields
    from replicate.precision import PRECISIONS
    from replicate.schedule import SCHEDULES

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
    _require_choice(cfg.data.scaling, SCALINGS, "data.scaling")
    _require_choice(cfg.schedule.name, SCHEDULES, "schedule")
    _require_choice(cfg.train.dtype, DTYPES, "train.dtype")
    _require_choice(cfg.train.loss_value, LOSS_VALUES, "train.loss_value")
    _require_choice(str(cfg.train.batched).lower(), ("auto", "true", "false"), "train.batched")
    _require_choice(cfg.device, DEVICES, "device")
    _require_choice(cfg.train.precision, PRECISIONS, "train.precision")
    _require_positive(cfg.train.accum_steps, "train.accum_steps")
    if cfg.train.channels_last and cfg.model.name not in CONV2D_MODELS:
        raise ConfigError(f"train.channels_last=true needs a model with 2-D convolutions; model {cfg.model.name!r} "
                          f"has none (allowed: {', '.join(CONV2D_MODELS)})")
    _require_choice(cfg.logger, LOGGERS, "logger")
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
    if cfg.data.root is not None and not cfg.data.download and not Path(cfg.data.root).expanduser().is_dir():
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
    _require_positive(cfg.model.stride, "model.stride")
    if cfg.data.num_samples is not None:
        _require_positive(cfg.data.num_samples, "data.num_samples")
    if cfg.data.train_split is not None and not 0 < cfg.data.train_split < 1:
        raise ConfigError(f"data.train_split must be in (0, 1): the fraction of examples used for training, "
                          f"got {cfg.data.train_split}")
    if cfg.data.label_noise is not None and not 0 <= cfg.data.label_noise <= 1:
        raise ConfigError(f"data.label_noise must be in [0, 1]: the probability that a training label is redrawn, "
                          f"got {cfg.data.label_noise}")
    _check_paper_model_settings(cfg)
    _check_early_stopping(cfg)
    _check_airbench_settings(cfg)
    _check_param_groups(cfg)
    _check_language_model_data(cfg)
    if cfg.data.name == "synthetic":
        for name in ("size", "features", "classes"):
            _require_positive(cfg.data[name], f"data.{name}")
    _require_choice(cfg.runtime.numerics, NUMERICS_MODES, "runtime.numerics")
    try:
        conventions.Convention(name="native", **conventions_fields(cfg))
        if cfg.train.convention is not None:
            conventions.get_convention(cfg.train.convention, cfg.optimizer.name)
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
    if schedule.name in ("step", "multistep", "inv", "epoch_decay"):
        _require_positive(schedule.gamma, "schedule.gamma")
    if schedule.constant_epochs < 0:
        raise ConfigError(f"schedule.constant_epochs must be >= 0 (epochs at the base lr before epoch_decay's first "
                          f"× gamma), got {schedule.constant_epochs}")
    values = schedule["values"]  # not schedule.values: on a DictConfig that is the Mapping method
    if schedule.name == "piecewise_linear" and (len(schedule.knots) != len(values) or not schedule.knots):
        raise ConfigError(f"schedule.knots and schedule.values must be non-empty lists of equal length, got "
                          f"{len(schedule.knots)} and {len(values)}")


def _check_language_model_data(cfg: Any) -> None:
    """PTB in windows: data.seq_len words per window, data.rows rows that the batch positions walk (replicate.datasets.ptb)."""
    data = cfg.data
    for name in ("seq_len", "rows"):
        if data[name] is not None:
            _require_positive(data[name], f"data.{name}")
    if data.name == "ptb" and data.seq_len is not None:
        if data.rows != cfg.train.batch_size:
            raise ConfigError(f"data.rows={data.rows} but train.batch_size={cfg.train.batch_size}: each batch position "
                              "walks one row of the stream; set data.rows=${train.batch_size}")
        if data.order != "sequential":
            raise ConfigError(f"data.order={data.order} would take PTB's windows out of order, breaking the hidden "
                              "state carried from window to window; set data.order=sequential")
        if cfg.train.accum_steps != 1:
            raise ConfigError(f"train.accum_steps={cfg.train.accum_steps}: the micro-batches of a window would share one "
                              "carried hidden state; set train.accum_steps=1")


def _require_finite(value: Any, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")


def _check_claim(claim: Any) -> None:
    from replicate.report import UNITS
    from replicate.evaluation import METRICS
    from replicate.verdict import DIRECTIONS, STATISTICS

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
    measured_in = "nats" if claim.metric.endswith("loss") else "perplexity" if claim.metric.endswith("perplexity") else None
    if (measured_in or claim.unit) != claim.unit or (measured_in is None and claim.unit in ("nats", "perplexity")):
        allowed = measured_in or "% or fraction"
        raise ConfigError(f"claim {claim.name!r}: metric {claim.metric} is measured in {allowed}, not {claim.unit!r}")
    if claim.statistic in ("mean_of_n", "median_of_n", "best_of_n") and not claim.n:
        raise ConfigError(f"claim {claim.name!r}: statistic {claim.statistic} needs n (the paper's number of runs)")


def _check_paper_model_settings(cfg: Any) -> None:
    """The settings the classic image recipes added: bias lr multiplier, dropout, depth, augmentation."""
    from replicate.models import CONV2D_MODELS

    _require_positive(cfg.optimizer.bias_lr_mult, "optimizer.bias_lr_mult")
    _require_finite(cfg.optimizer.bias_lr_mult, "optimizer.bias_lr_mult")
    if cfg.model.dropout is not None and not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.model.dropout}")
    if cfg.model.depth is not None and (cfg.model.depth < 8 or (cfg.model.depth - 2) % 6):
        raise ConfigError(f"model.depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {cfg.model.depth}")
    augment = cfg.augment
    _require_choice(augment.padding_mode, ("zeros", "reflect"), "augment.padding_mode")
    for name in ("crop_padding", "cutout"):
        if augment[name] < 0:
            raise ConfigError(f"augment.{name} must be >= 0 pixels (0: off), got {augment[name]}")
    if (augment.crop_padding or augment.flip or augment.cutout) and cfg.model.name not in CONV2D_MODELS:
        raise ConfigError(f"augment.* needs an image model ({', '.join(CONV2D_MODELS)}); model {cfg.model.name!r} "
                          "takes vectors: set augment.crop_padding=0 augment.flip=false augment.cutout=0")


def _check_early_stopping(cfg: Any) -> None:
    """train.early_stopping and the validation and test subsets it reads (data.valid_examples, data.test_examples)."""
    from replicate.early_stopping import CRITERIA

    for name in ("valid_examples", "test_examples"):
        if cfg.data[name] is not None:
            _require_positive(cfg.data[name], f"data.{name}")
            if cfg.data.name not in ("mnist", "cifar10"):
                raise ConfigError(f"data.{name} applies to mnist and cifar10, not {cfg.data.name}; "
                                  f"remove it or set data.{name}=null")
    early = cfg.train.early_stopping
    if not early.enabled:
        return
    _require_choice(early.criterion, CRITERIA, "train.early_stopping.criterion")
    for name in ("every", "patience", "patience_increase", "improvement_threshold"):
        _require_positive(early[name], f"train.early_stopping.{name}")
    if cfg.data.name not in ("mnist", "cifar10"):
        raise ConfigError(f"train.early_stopping validates on a held-out split, which data.name={cfg.data.name} does "
                          "not provide; use mnist or cifar10 with data.holdout=N, or train.early_stopping.enabled=false")
    if not cfg.data.holdout:
        raise ConfigError("train.early_stopping.enabled=true needs a validation split: set data.holdout=N (the last N "
                          "training examples), or train.early_stopping.enabled=false")


def _check_airbench_settings(cfg: Any) -> None:
    """Label smoothing, test-time augmentation, lookahead and freezing (the airbench recipe's settings)."""
    from replicate.models import CONV2D_MODELS
    from replicate.tta import TTA_MODES

    smoothing = cfg.train.label_smoothing
    if not 0 <= smoothing <= 1:
        raise ConfigError(f"train.label_smoothing must be in [0, 1] (torch.nn.CrossEntropyLoss's ε; 0: none), got {smoothing}")
    _require_choice(cfg.train.tta, TTA_MODES, "train.tta")
    if cfg.train.tta != "none" and (cfg.model.name not in CONV2D_MODELS or cfg.data.flatten):
        raise ConfigError(f"train.tta={cfg.train.tta} mirrors and shifts images: it needs an image model "
                          f"({', '.join(CONV2D_MODELS)}) on unflattened images; set train.tta=none")
    if cfg.augment.flip_alternating and not cfg.augment.flip:
        raise ConfigError("augment.flip_alternating=true says how images flip; it needs augment.flip=true")
    lookahead = cfg.lookahead
    if lookahead.every < 0:
        raise ConfigError(f"lookahead.every must be >= 0 steps (0: no lookahead), got {lookahead.every}")
    if not 0 < lookahead.base <= 1 or not lookahead.power >= 0:
        raise ConfigError(f"lookahead.base must be in (0, 1] and lookahead.power >= 0 (airbench: 0.95 and 3), "
                          f"got base {lookahead.base}, power {lookahead.power}")
    for index, rule in enumerate(cfg.train.freeze):
        if rule.after_epochs < 0:
            raise ConfigError(f"train.freeze[{index}].after_epochs must be >= 0 epochs, got {rule.after_epochs}")


def _check_param_groups(cfg: Any) -> None:
    """optimizer.param_groups: multipliers and decays in range, each pattern the first match of some parameter."""
    from replicate.models import build_model
    from replicate.optim import match_parameter_groups

    groups = cfg.optimizer.param_groups
    for index, group in enumerate(groups):
        where = f"optimizer.param_groups[{index}]"
        if not isinstance(group.match, str) or not group.match:
            raise ConfigError(f"{where}.match must be a glob over parameter names (conv1.*, *.bias), got {group.match!r}")
        # lr_mult > 0: a group's decay converts at its own lr, which a zero lr leaves undefined for some forms
        for key, lowest in (("lr_mult", "> 0"), ("weight_decay", ">= 0"), ("weight_decay_mult", ">= 0")):
            value = group[key]
            if value is not None and not (math.isfinite(value) and (value > 0 if key == "lr_mult" else value >= 0)):
                raise ConfigError(f"{where}.{key} must be a finite number {lowest}, got {value!r}")
    if groups:
        try:
            match_parameter_groups([name for name, _ in build_model(cfg.model).named_parameters()],
                                   [group.match for group in groups])
        except ValueError as error:
            raise ConfigError(str(error)) from None
