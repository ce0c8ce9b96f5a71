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


def make_plan(cfg, *, n_train: int, constant_batch: bool | None = None) -> Plan:
    batch_size = cfg.train.batch_size
    if constant_batch is None:
        constant_batch = n_train % batch_size == 0 or (cfg.data.drop_last and cfg.data.order != "sequential")
    try:
        native_convention = conventions.Convention(name="native", **conventions_fields(cfg))
        native = native_hparams(cfg.optimizer)
        if cfg.train.convention is None:
            executed_convention, executed, conversion = native_convention, dict(native), None
        else:
            executed_convention = conventions.get_convention(cfg.train.convention)
            conversion = conventions.convert(
                native, native_convention, executed_convention, optimizer=cfg.optimizer.name,
                batch_size=batch_size, constant_batch=constant_batch,
                constant_lr=cfg.schedule.name == "constant",
                grad_clip=cfg.optimizer.grad_clip is not None or cfg.optimizer.grad_clip_value is not None)
            executed = dict(conversion.hparams)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    plan = Plan(cfg.optimizer.name, native_convention, executed_convention, native, executed, conversion)
    plan.applied = applied_settings(executed_convention, executed, optimizer=cfg.optimizer.name, batch_size=batch_size)
    check_executable(cfg.optimizer.name, plan.applied)
    return plan


def reduction_scale(convention: conventions.Convention, batch_size: int) -> float:
    """How much larger the reduced-loss gradient is than the per-example mean gradient."""
    if convention.loss_reduction == "mean":
        return 1.0
    if convention.loss_reduction == "sum":
        return float(batch_size)
    raise ConfigError(f"loss_reduction {convention.loss_reduction!r} needs a sequence model; "
                      "the classifiers here support mean and sum")


def examples_per_unit(convention: conventions.Convention, batch_size: int, momentum: float) -> float:
    """Steps' worth of the lr unit per optimizer step: 1 for per_batch, B for per_example, B/N for per N examples."""
    if convention.lr_unit == "per_batch":
        return 1.0
    if convention.lr_unit == "per_example":
        return float(batch_size)
    factor = batch_size / convention.lr_unit_examples
    if convention.lr_momentum_normalized:
        factor /= 1 + 1 / (1 - momentum)  # airbench94 kilostep_scale = 1024·(1 + 1/(1 − momentum))
    return factor


def applied_settings(convention: conventions.Convention, hparams: dict, *, optimizer: str, batch_size: int) -> dict:
    """Optimizer settings in the units the update applies them to the gradient of the reduced loss.

    lr: per_batch units apply as given; per-example units multiply Σᵢgᵢ, which is (B/s)× the reduced
    gradient. Weight decay: forms in the loss go to the loss, the others to the optimizer.
    """
    momentum = hparams.get("momentum", 0.0)
    scale = reduction_scale(convention, batch_size)
    units = examples_per_unit(convention, batch_size, momentum)
    lr = hparams["lr"] if convention.lr_unit == "per_batch" else hparams["lr"] * units / scale
    decay = hparams.get("weight_decay", 0.0)
    form = convention.weight_decay_form
    applied = {"lr": lr, "loss_l2": 0.0, "loss_l2_form": form if form in LOSS_FORMS else None,
               "optimizer_weight_decay": 0.0, "optimizer_weight_decay_form": "grad"}
    if form in LOSS_FORMS:
        applied["loss_l2"] = decay
    elif form == "grad":
        applied["optimizer_weight_decay"] = decay
    elif form == "decoupled_lr":
        applied.update(optimizer_weight_decay=decay, optimizer_weight_decay_form="decoupled_lr")
    elif form == "decoupled":
        applied.update(optimizer_weight_decay=decay * units, optimizer_weight_decay_form="decoupled")
    elif form == "coupled_lr_independent":
        applied["optimizer_weight_decay"] = decay * units / lr
    else:
        raise ConfigError(f"unknown weight_decay_form {form!r}")
    for key in ("momentum", "nesterov", "eps", "alpha", "rho", "centered", "initial_accumulator_value"):
        if key in hparams:
            applied[key] = hparams[key]
    if "beta1" in hparams:
        applied["betas"] = (hparams["beta1"], hparams["beta2"])
    applied["grad_clip"] = hparams.get("grad_clip")
    applied["grad_clip_value"] = hparams.get("grad_clip_value")
    forms = native_forms(optimizer)
    for field in ("momentum_form", "eps_placement"):
        value = getattr(convention, field)
        if value not in forms[field] and len(forms[field]) == 1:
            value = forms[field][0]  # the field does not apply to this optimizer: its only form runs
        applied[field] = value
    applied["reduction_scale"] = scale
    return applied


def optimizer_arguments(applied: dict) -> dict:
    """Keyword arguments for replicate.optim.build_optimizer from the applied settings."""
    arguments = {"lr": applied["lr"], "weight_decay_form": applied["optimizer_weight_decay_form"],
                 "momentum_form": applied["momentum_form"], "eps_placement": applied["eps_placement"]}
    for key in ("momentum", "nesterov", "betas", "eps", "alpha", "rho", "centered", "initial_accumulator_value"):
        if key in applied:
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
