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
class GroupUpdate:
    """One optimizer.param_groups entry as executed: the parameters matching `match` step at lr × lr_mult, and
    decay by their own weight decay, converted as the global one is, at their own lr (lr × lr_mult)."""

    match: str  # fnmatch glob over parameter names; the first entry that matches a parameter wins
    lr_mult: float
    weight_decay: float  # applied: in the units of Update.optimizer.weight_decay
    native_weight_decay: float  # as the paper states it (its own value, or optimizer.weight_decay, × weight_decay_mult)
    executed_weight_decay: float  # in the executed convention
    rule: str  # the conversion's formula for this value ("unchanged" when the paper's convention runs)
    exact: bool
    reason: str = ""  # why not exact; "" when exact


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
    param_groups: tuple[GroupUpdate, ...] = ()  # per-parameter overrides of lr and decay, in order (optimizer.param_groups)

    def group_overrides(self) -> tuple[tuple[str, float, float], ...]:
        """(pattern, lr multiplier, applied weight decay) per group, as replicate.optim.parameter_groups takes them."""
        return tuple((group.match, group.lr_mult, group.weight_decay) for group in self.param_groups)


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
        return (self.conversion is None or self.conversion.exact) and all(group.exact for group in self.update.param_groups)

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
            **({"param_groups": [vars(group) for group in self.update.param_groups]} if self.update.param_groups else {}),
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


def native_param_groups(optimizer_cfg) -> list[tuple[str, float, float]]:
    """optimizer.param_groups as (pattern, lr multiplier, weight decay in the paper's form) per entry."""
    return [(group.match, group.lr_mult,
             (optimizer_cfg.weight_decay if group.weight_decay is None else group.weight_decay) * group.weight_decay_mult)
            for group in optimizer_cfg.get("param_groups") or []]


def has_constant_batch(cfg, n_train: int) -> bool:
    """Every step sees batch_size examples: the epoch divides evenly, a short last batch is dropped, or batches run on
    across the epoch's end (order cycle)."""
    if cfg.data.order == "file_batches":  # every file's examples, the last file's remainder included, fill whole batches
        size, batch = cfg.data.file_batch_size, cfg.train.batch_size
        return min(size, n_train) % batch == 0 and (n_train % size) % batch == 0
    return (n_train % cfg.train.batch_size == 0 or cfg.data.order == "cycle"
            or (cfg.data.drop_last and cfg.data.order != "cycle"))


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
                      decay_biases=cfg.optimizer.decay_biases, bias_lr_mult=cfg.optimizer.bias_lr_mult,
                      param_groups=native_param_groups(cfg.optimizer))


def build_plan(native_convention, executed_convention, native: dict, *, optimizer: str, batch_size: int,
               seq_len: int | None = None, constant_batch: bool = True, constant_lr: bool = True,
               decay_biases: bool = True, bias_lr_mult: float = 1.0, param_groups: list | tuple = ()) -> Plan:
    """Convert `native` hyperparameters (stated in native_convention) to executed_convention (None: run as stated).
    param_groups: (pattern, lr multiplier, native weight decay) per optimizer.param_groups entry."""
    convention = native_convention if executed_convention is None else executed_convention
    if convention.loss_reduction == "per_sequence_sum" and not seq_len:
        raise ConfigError("loss_reduction per_sequence_sum needs sequence data; "
                          "the classifiers in this catalog reduce over examples: mean or sum")
    shared = dict(optimizer=optimizer, batch_size=batch_size, seq_len=seq_len, constant_batch=constant_batch,
                  constant_lr=constant_lr)
    try:
        execution = conventions.execute(native, native_convention, executed_convention, **shared)
        groups = tuple(group_update(native, native_convention, executed_convention, *group, **shared)
                       for group in param_groups)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    native_form = native_convention.weight_decay_form
    if groups and execution.applied_decay_form in DECAY_IN_LOSS and (
            native.get("weight_decay") or any(group.native_weight_decay for group in groups)):
        raise ConfigError(f"optimizer.param_groups cannot set a weight decay of its own when the decay is written into the "
                          f"loss (weight_decay_form {execution.applied_decay_form}: one λ over every decayed parameter); "
                          "allowed: grad, coupled_lr_independent, decoupled_lr, decoupled; or drop the groups' weight decay")
    update = executed_update(execution, convention, optimizer=optimizer, decay_biases=decay_biases, bias_lr_mult=bias_lr_mult,
                             reported_l2=native.get("weight_decay", 0) if native_form in DECAY_IN_LOSS else 0,
                             reported_l2_form=native_form if native_form in DECAY_IN_LOSS else None, param_groups=groups)
    return Plan(optimizer, native_convention, convention, dict(native), execution.executed, execution.conversion, update)


def group_update(native: dict, native_convention, executed_convention, match: str, lr_mult: float, weight_decay: float,
                 **shared) -> GroupUpdate:
    """A parameter group's weight decay converted exactly as the global one is, by the same rules, for a run whose
    lr is the group's (lr × lr_mult): the forms whose conversion involves lr (coupled_lr_independent, coupled ↔
    decoupled) then see the lr these parameters step with."""
    group_native = {**native, "lr": native["lr"] * lr_mult, "weight_decay": weight_decay}
    execution = conventions.execute(group_native, native_convention, executed_convention, **shared)
    rule = None if execution.conversion is None else next(
        rule for rule in execution.conversion.rules if rule.field == "weight_decay")
    return GroupUpdate(match, lr_mult, execution.applied.get("weight_decay", 0.0), weight_decay,
                       execution.executed.get("weight_decay", weight_decay), "unchanged" if rule is None else rule.formula,
                       True if rule is None else rule.exact, "" if rule is None else rule.reason)


def executed_update(execution: conventions.Execution, convention: conventions.Convention, *, optimizer: str,
                    decay_biases: bool, reported_l2: float, reported_l2_form: str | None,
                    bias_lr_mult: float = 1.0, param_groups: tuple[GroupUpdate, ...] = ()) -> Update:
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
                  reported_l2, reported_l2_form, bias_lr_mult, param_groups)
