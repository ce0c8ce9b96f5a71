"""From a paper config to what the trainer executes: native hyperparameters, the executed convention,
the converted hyperparameters with the rules linking them, and the optimizer settings in applied units.

    plan = make_plan(cfg, n_train=4000)
    plan.native, plan.executed, plan.conversion.rules, plan.applied

Both hyperparameter sets are kept: the report and wandb show the paper's numbers next to the ones run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from replicate import conventions
from replicate.config import ConfigError, conventions_fields
from replicate.optim import build_optimizer, native_forms

DEFAULT_EPS = {"adam": 1e-8, "adamw": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10, "adadelta": 1e-6}
LOSS_FORMS = ("l2_half", "l2", "per_batch_l2")  # weight decay written into the loss (seen by clipping)


@dataclass
class Plan:
    optimizer: str
    native_convention: conventions.Convention
    executed_convention: conventions.Convention
    native: dict  # hyperparameters as the paper states them
    executed: dict  # the same, converted to the executed convention
    conversion: conventions.Conversion | None  # None when the paper's own convention is executed
    applied: dict = field(default_factory=dict)  # optimizer settings in the units the update applies them

    @property
    def exact(self) -> bool:
        return self.conversion is None or self.conversion.exact

    def summary(self) -> dict:
        return {
            "optimizer": self.optimizer,
            "native_convention": conventions.describe(self.native_convention),
            "executed_convention": conventions.describe(self.executed_convention),
            "native_hparams": self.native,
            "executed_hparams": self.executed,
            "applied": self.applied,
            "conversion_exact": self.exact,
            "rules": [] if self.conversion is None else [vars(rule) for rule in self.conversion.rules],
            "warnings": [] if self.conversion is None else list(self.conversion.warnings),
        }


def native_hparams(optimizer_cfg) -> dict:
    """The optimizer block as the flat hyperparameter dict replicate.conventions converts."""
    name = optimizer_cfg.name
    allowed = conventions.OPTIMIZER_HPARAMS[name]
    values = {
        "lr": optimizer_cfg.lr,
        "weight_decay": optimizer_cfg.weight_decay,
        "momentum": optimizer_cfg.momentum,
        "nesterov": optimizer_cfg.nesterov,
        "eps": optimizer_cfg.eps if optimizer_cfg.eps is not None else DEFAULT_EPS.get(name),
        "beta1": optimizer_cfg.betas[0],
        "beta2": optimizer_cfg.betas[1],
        "alpha": optimizer_cfg.alpha,
        "rho": optimizer_cfg.rho,
        "centered": optimizer_cfg.centered,
        "initial_accumulator_value": optimizer_cfg.initial_accumulator_value,
        "grad_clip": optimizer_cfg.grad_clip,
        "grad_clip_value": optimizer_cfg.grad_clip_value,
    }
    return {key: value for key, value in values.items() if key in allowed and value is not None}


def has_constant_batch(cfg, n_train: int) -> bool:
    """Every step sees batch_size examples: the epoch divides evenly, a short last batch is dropped, or batches run on
    across the epoch's end (order cycle)."""
    return (n_train % cfg.train.batch_size == 0 or cfg.data.order == "cycle"
            or (cfg.data.drop_last and cfg.data.order not in ("sequential", "cycle")))


def make_plan(cfg, *, n_train: int, constant_batch: bool | None = None,
              executed_convention: conventions.Convention | None = None) -> Plan:
    """The plan for a composed run config: the paper's conventions, executed as train.convention says
    (or as `executed_convention`, when given)."""
    if constant_batch is None:
        constant_batch = has_constant_batch(cfg, n_train)
    try:
        native_convention = conventions.Convention(name="native", **conventions_fields(cfg))
        if executed_convention is None and cfg.train.convention is not None:
            executed_convention = conventions.get_convention(cfg.train.convention)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return build_plan(native_convention, executed_convention, native_hparams(cfg.optimizer), optimizer=cfg.optimizer.name,
                      batch_size=cfg.train.batch_size, seq_len=cfg.data.seq_len if cfg.data.name == "synthetic" else None,
                      constant_batch=constant_batch, constant_lr=cfg.schedule.name == "constant")


def build_plan(native_convention, executed_convention, native: dict, *, optimizer: str, batch_size: int,
               seq_len: int | None = None, constant_batch: bool = True, constant_lr: bool = True) -> Plan:
    """Convert `native` hyperparameters (stated in native_convention) to executed_convention (None: run as stated)."""
    try:
        if executed_convention is None:
            executed_convention, executed, conversion = native_convention, dict(native), None
        else:
            conversion = conventions.convert(native, native_convention, executed_convention, optimizer=optimizer,
                                             batch_size=batch_size, seq_len=seq_len, constant_batch=constant_batch,
                                             constant_lr=constant_lr)
            executed = dict(conversion.hparams)
        plan = Plan(optimizer, native_convention, executed_convention, dict(native), executed, conversion)
        plan.applied = applied_settings(executed_convention, executed, optimizer=optimizer, batch_size=batch_size,
                                        seq_len=seq_len, constant_batch=constant_batch)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_executable(optimizer, plan.applied)
    return plan


def applied_settings(convention: conventions.Convention, hparams: dict, *, optimizer: str, batch_size: int,
                     seq_len: int | None, constant_batch: bool) -> dict:
    """Optimizer settings as the update applies them to the gradient of the reduced loss.

    replicate.conventions.to_applied restates lr units (per example, per N examples) and
    lr-independent decay as per-batch numbers; weight decay written into the loss goes to the loss,
    the other forms to the optimizer.
    """
    if convention.loss_reduction == "per_sequence_sum" and not seq_len:
        raise ConfigError("loss_reduction per_sequence_sum needs sequence data; "
                          "the classifiers in this catalog reduce over examples: mean or sum")
    restated = conventions.to_applied(hparams, convention, optimizer=optimizer, batch_size=batch_size,
                                      seq_len=seq_len, constant_batch=constant_batch)
    values, form = restated.hparams, conventions.decay_form(restated.target, optimizer)
    decay = values.get("weight_decay", 0.0)
    applied = {"lr": values["lr"], "loss_l2": decay if form in LOSS_FORMS else 0.0,
               "loss_l2_form": form if form in LOSS_FORMS else None,
               "optimizer_weight_decay": 0.0 if form in LOSS_FORMS else decay,
               "optimizer_weight_decay_form": "grad" if form in LOSS_FORMS else form}
    for key in ("momentum", "nesterov", "eps", "alpha", "rho", "centered", "initial_accumulator_value",
                "grad_clip", "grad_clip_value"):
        applied[key] = values.get(key)
    if "beta1" in values:
        applied["betas"] = (values["beta1"], values["beta2"])
    forms = native_forms(optimizer)
    for field in ("momentum_form", "eps_placement"):
        value = getattr(convention, field)
        if value not in forms[field] and len(forms[field]) == 1:
            value = forms[field][0]  # the field does not apply to this optimizer: its only form runs
        applied[field] = value
    return applied


def optimizer_arguments(applied: dict) -> dict:
    """Keyword arguments for replicate.optim.build_optimizer from the applied settings."""
    arguments = {"lr": applied["lr"], "weight_decay_form": applied["optimizer_weight_decay_form"],
                 "momentum_form": applied["momentum_form"], "eps_placement": applied["eps_placement"]}
    for key in ("momentum", "nesterov", "betas", "eps", "alpha", "rho", "centered", "initial_accumulator_value"):
        if applied.get(key) is not None:
            arguments[key] = applied[key]
    return arguments


def check_executable(optimizer: str, applied: dict) -> None:
    """Build the optimizer once on a dummy parameter, so an impossible combination is a config error now."""
    import torch

    try:
        build_optimizer([{"params": [torch.zeros(1, requires_grad=True)], "weight_decay": applied["optimizer_weight_decay"]}],
                        optimizer, **optimizer_arguments(applied))
    except ValueError as error:
        raise ConfigError(f"the executed convention cannot run {optimizer}: {error}") from None
