"""From a paper config to what the trainer executes: the paper's hyperparameters as stated (native),
converted to the executed convention with the rules linking them, and the `Update` one training step
runs, in the units the code applies them.

    plan = make_plan(cfg, n_train=4000)
    plan.native, plan.executed, plan.conversion.rules   # for the report and wandb
    plan.update.optimizer.lr                            # what replicate.optim.build_optimizer runs

Both hyperparameter sets are kept: the report and wandb show the paper's numbers next to the ones run.
The conventions layer converts once (replicate.conventions.execute); `Update` is built and checked
once here, and the trainer reads nothing else of the plan.
"""
from __future__ import annotations

from dataclasses import dataclass

from replicate import conventions
from replicate.conventions import DECAY_IN_LOSS
from replicate.errors import ConfigError
from replicate.optim import DEFAULT_EPS, OptimizerSettings, native_forms

# the optimizer's own settings in the report's "applied" record, None where they do not apply to it
_APPLIED_OPTIONS = ("momentum", "nesterov", "eps", "alpha", "rho", "centered", "initial_accumulator_value",
                    "grad_clip", "grad_clip_value")


@dataclass(frozen=True)
class Update:
    """What one training step executes, in applied units: the loss, the clipping, the optimizer."""

    optimizer: OptimizerSettings  # handed as is to replicate.optim.build_optimizer
    decay_biases: bool  # False: weight decay on weight matrices only (scikit-learn, many Caffe nets)
    loss_reduction: str  # the executed convention's reduction of the per-example losses
    loss_l2: float  # λ of the weight decay written into the executed loss (0.0: none)
    loss_l2_form: str | None  # its form, one of conventions.DECAY_IN_LOSS
    grad_clip: float | None  # global-norm threshold per seed, on the gradient of the executed loss
    grad_clip_value: float | None  # elementwise threshold
    # the paper's own L2 term, added to the reported objective so that it reads in the paper's units
    reported_l2: float
    reported_l2_form: str | None
    bias_lr_mult: float = 1.0  # biases step at lr × this (Caffe's per-blob lr_mult); the same in every convention


@dataclass(frozen=True)
class Plan:
    optimizer: str
    native_convention: conventions.Convention
    executed_convention: conventions.Convention
    native: dict  # hyperparameters as the paper states them
    executed: dict  # the same, converted to the executed convention
    conversion: conventions.Conversion | None  # None when the paper's own convention is executed
    update: Update

    @property
    def exact(self) -> bool:
        return self.conversion is None or self.conversion.exact

    @property
    def applied(self) -> dict:
        """The update's settings as the report records them ("applied")."""
        settings, update = self.update.optimizer, self.update
        in_loss = update.loss_l2_form is not None
        applied = {"lr": settings.lr, "loss_l2": update.loss_l2, "loss_l2_form": update.loss_l2_form,
                   "optimizer_weight_decay": settings.weight_decay,
                   "optimizer_weight_decay_form": "grad" if in_loss else settings.weight_decay_form}
        values = {**vars(settings), "grad_clip": update.grad_clip, "grad_clip_value": update.grad_clip_value}
        for key in _APPLIED_OPTIONS:
            applied[key] = values[key] if key in self.executed else None
        if "beta1" in self.executed:
            applied["betas"] = settings.betas
        applied["momentum_form"], applied["eps_placement"] = settings.momentum_form, settings.eps_placement
        return applied

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


def conventions_fields(cfg) -> dict:
    """The paper's `conventions` block as keyword arguments for replicate.conventions.Convention."""
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(cfg.conventions, resolve=True))


def native_hparams(optimizer_cfg) -> dict:
    """The optimizer block as the hyperparameters replicate.conventions converts (those of this optimizer)."""
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
            executed_convention = conventions.get_convention(cfg.train.convention, cfg.optimizer.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return build_plan(native_convention, executed_convention, native_hparams(cfg.optimizer), optimizer=cfg.optimizer.name,
                      batch_size=cfg.train.batch_size, seq_len=cfg.data.seq_len if cfg.data.name in ("synthetic", "ptb") else None,
                      constant_batch=constant_batch, constant_lr=cfg.schedule.name == "constant",
                      decay_biases=cfg.optimizer.decay_biases, bias_lr_mult=cfg.optimizer.bias_lr_mult)


def build_plan(native_convention, executed_convention, native: dict, *, optimizer: str, batch_size: int,
               seq_len: int | None = None, constant_batch: bool = True, constant_lr: bool = True,
               decay_biases: bool = True, bias_lr_mult: float = 1.0) -> Plan:
    """Convert `native` hyperparameters (stated in native_convention) to executed_convention (None: run as stated)."""
    convention = native_convention if executed_convention is None else executed_convention
    if convention.loss_reduction == "per_sequence_sum" and not seq_len:
        raise ConfigError("loss_reduction per_sequence_sum needs sequence data; "
                          "the classifiers in this catalog reduce over examples: mean or sum")
    try:
        execution = conventions.execute(native, native_convention, executed_convention, optimizer=optimizer,
                                        batch_size=batch_size, seq_len=seq_len, constant_batch=constant_batch,
                                        constant_lr=constant_lr)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    native_form = native_convention.weight_decay_form
    update = executed_update(execution, convention, optimizer=optimizer, decay_biases=decay_biases, bias_lr_mult=bias_lr_mult,
                             reported_l2=native.get("weight_decay", 0) if native_form in DECAY_IN_LOSS else 0,
                             reported_l2_form=native_form if native_form in DECAY_IN_LOSS else None)
    return Plan(optimizer, native_convention, convention, dict(native), execution.executed, execution.conversion, update)


def executed_update(execution: conventions.Execution, convention: conventions.Convention, *, optimizer: str,
                    decay_biases: bool, reported_l2: float, reported_l2_form: str | None,
                    bias_lr_mult: float = 1.0) -> Update:
    """The Update for the applied numbers: weight decay written into the loss goes to the loss, the other
    forms to the optimizer; a form field that does not apply to this optimizer runs its only form."""
    values, form = execution.applied, execution.applied_decay_form
    decay, in_loss = values.get("weight_decay", 0.0), form in DECAY_IN_LOSS
    forms = native_forms(optimizer)
    chosen = {}
    for field in ("momentum_form", "eps_placement"):
        value = getattr(convention, field)
        chosen[field] = forms[field][0] if value not in forms[field] and len(forms[field]) == 1 else value
    options = {key: values[key] for key in ("momentum", "nesterov", "eps", "alpha", "rho", "centered",
                                            "initial_accumulator_value") if values.get(key) is not None}
    if "beta1" in values:
        options["betas"] = (values["beta1"], values["beta2"])
    try:
        settings = OptimizerSettings(optimizer, lr=values["lr"], weight_decay=0.0 if in_loss else decay,
                                     weight_decay_form="grad" if in_loss else form, **chosen, **options)
    except ValueError as error:
        raise ConfigError(f"the executed convention cannot run {optimizer}: {error}") from None
    return Update(settings, decay_biases, convention.loss_reduction, decay if in_loss else 0.0,
                  form if in_loss else None, values.get("grad_clip"), values.get("grad_clip_value"),
                  reported_l2, reported_l2_form, bias_lr_mult)
