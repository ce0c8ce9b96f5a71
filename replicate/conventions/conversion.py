"""Convert optimizer hyperparameters between conventions, one rule per field, with exactness.

Every rule goes source → canonical (PyTorch, mean loss) → target, using the factors of scales.py:

    convert({"lr": 11.5, "momentum": 0.85, "nesterov": True, "weight_decay": 0.0153},
            PRESETS["airbench"], PRESETS["mean"], optimizer="sgd", batch_size=1024)
    # → lr 1.5, weight_decay 1.3304e-3, exact

A rule is exact when the two runs produce the same parameters step for step (up to rounding).
Rounding includes torch.nn.utils.clip_grad_norm_, which divides by norm + 1e-6: a clip threshold
scaled by B then matches to ~1e-7, not bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from replicate.conventions.convention import Convention
from replicate.conventions.presets import OPTIMIZER_FORMS, get_convention, optimizer_forms
from replicate.conventions.scales import (
    ADAPTIVE_OPTIMIZERS, EPS_OPTIMIZERS, MOMENTUM_OPTIMIZERS, ONE, Scale, StepShape,
    canonical_lr_factor, coupled_decay_factor, decoupled_decay_factor, eps_scale,
    reduction_scale, unit_gradient_scale,
)

_CLIP = ("grad_clip", "grad_clip_value")
OPTIMIZER_HPARAMS: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "momentum", "nesterov", "weight_decay", *_CLIP),
    "adam": ("lr", "beta1", "beta2", "eps", "weight_decay", *_CLIP),
    "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay", *_CLIP),
    "rmsprop": ("lr", "alpha", "eps", "momentum", "centered", "weight_decay", *_CLIP),
    "adagrad": ("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value", *_CLIP),
    "adadelta": ("lr", "rho", "eps", "weight_decay", *_CLIP),
}

# Allowed range of each value: (lowest, highest, lowest allowed itself, highest allowed itself)
_RANGES = {
    "lr": (0, math.inf, False, False), "weight_decay": (0, math.inf, True, False),
    "momentum": (0, 1, True, False), "beta1": (0, 1, True, False), "beta2": (0, 1, True, False),
    "alpha": (0, 1, True, True), "rho": (0, 1, True, True), "eps": (0, math.inf, True, False),
    "grad_clip": (0, math.inf, False, False), "grad_clip_value": (0, math.inf, False, False),
    "lr_decay": (0, math.inf, True, False), "initial_accumulator_value": (0, math.inf, True, False),
}
_FLAGS = ("nesterov", "centered")
_DECAY_AFTER_CLIPPING = ("grad", "coupled_lr_independent")   # added inside the optimizer
DECAY_IN_LOSS = ("l2_half", "l2", "per_batch_l2")             # written into the loss: clipped with the data gradient
_DECOUPLED = ("decoupled_lr", "decoupled")


@dataclass
class Rule:
    field: str
    source_value: object
    target_value: object
    formula: str          # e.g. "lr_mean = lr_sum × B = 0.01 × 32 = 0.32", or "unchanged"
    exact: bool
    reason: str = ""      # why not exact; "" when exact


@dataclass
class Conversion:
    source: Convention
    target: Convention
    hparams: dict
    rules: list[Rule]
    exact: bool
    warnings: list[str] = field(default_factory=list)


def convert(hparams: dict, source: Convention | str, target: Convention | str, *, optimizer: str,
            batch_size: int, seq_len: int | None = None, constant_batch: bool = True,
            constant_lr: bool = True, grad_clip: bool | None = None, world_size: int = 1,
            accum_steps: int = 1) -> Conversion:
    """Hyperparameters `hparams` of a `source` run, restated for `target`.

    batch_size: examples per optimizer step over all ranks and accumulation steps (global batch).
    constant_batch: every step has batch_size examples (and seq_len tokens each): n_train % B == 0
        or drop_last. constant_lr: no schedule. grad_clip: clipping on (default: a clip is in hparams).
    """
    source, target = (get_convention(c) if isinstance(c, str) else c for c in (source, target))
    _check(hparams, source, target, optimizer, batch_size, seq_len, world_size, accum_steps)
    return _restate(hparams, source, target, optimizer=optimizer, batch_size=batch_size, seq_len=seq_len,
                    constant_batch=constant_batch, constant_lr=constant_lr, grad_clip=grad_clip,
                    world_size=world_size, accum_steps=accum_steps)


@dataclass(frozen=True)
class Execution:
    """A paper's hyperparameters restated for the run that executes them, checked once."""

    conversion: Conversion | None  # native → executed convention; None when the native convention runs
    executed: dict                 # the hyperparameters in the executed convention
    applied: dict                  # the same numbers as the executed code hands its optimizer (to_applied)
    applied_decay_form: str        # what the applied weight_decay is: decay_form of the applied convention


def execute(hparams: dict, native: Convention, executed: Convention | None, *, optimizer: str, batch_size: int,
            seq_len: int | None = None, constant_batch: bool = True, constant_lr: bool = True) -> Execution:
    """`hparams`, stated in `native`, converted to `executed` (None: run as stated) and then restated in
    the units the executed code applies them (`to_applied`). The values are checked once, here."""
    target = native if executed is None else executed
    _check(hparams, native, target, optimizer, batch_size, seq_len, 1, 1)
    shared = dict(optimizer=optimizer, batch_size=batch_size, seq_len=seq_len, constant_batch=constant_batch)
    conversion = None if executed is None else _restate(hparams, native, executed, constant_lr=constant_lr, **shared)
    values = dict(hparams) if conversion is None else dict(conversion.hparams)
    applied = _restate(values, target, applied_convention(target), **shared)
    return Execution(conversion, values, dict(applied.hparams), decay_form(applied.target, optimizer))


def _restate(hparams: dict, source: Convention, target: Convention, *, optimizer: str, batch_size: int,
             seq_len: int | None = None, constant_batch: bool = True, constant_lr: bool = True,
             grad_clip: bool | None = None, world_size: int = 1, accum_steps: int = 1) -> Conversion:
    """convert's rules, on values already checked."""
    mu = hparams.get("momentum", 0.0 if optimizer in MOMENTUM_OPTIMIZERS else None)
    shape = StepShape(batch_size, seq_len, mu)
    if grad_clip is None:
        grad_clip = bool(hparams.get("grad_clip") or hparams.get("grad_clip_value"))
    warnings = _warnings(source, target, optimizer, batch_size, world_size, accum_steps)
    ctx = _Context(source, target, optimizer, shape, constant_batch, constant_lr, grad_clip, mu or 0.0)
    _check_eps_placement(ctx)

    lr_ratio = canonical_lr_factor(source, shape, optimizer) / canonical_lr_factor(target, shape, optimizer)
    lr_target = hparams["lr"] * lr_ratio.value
    rules = []
    for key, value in hparams.items():
        if key == "lr":
            rules.append(ctx.scaled("lr", value, lr_ratio, _momentum_form_issue(ctx)))
        elif key == "weight_decay":
            rules.append(_weight_decay_rule(ctx, value, hparams["lr"], lr_target))
        elif key == "eps":
            rules.append(_eps_rule(ctx, value))
        elif key == "initial_accumulator_value":
            s_ratio = reduction_scale(target, shape) / reduction_scale(source, shape)
            rules.append(ctx.scaled(key, value, s_ratio ** 2, []))
        elif key in _CLIP:
            ratio = unit_gradient_scale(target, shape) / unit_gradient_scale(source, shape)
            rules.append(ctx.scaled(key, value, ratio, []))
        else:
            rules.append(Rule(key, value, value, "unchanged", True))
    missing_eps = _missing_eps_rule(ctx, hparams)
    if missing_eps:
        rules.append(missing_eps)
    converted = {r.field: r.target_value for r in rules if r.field in hparams}
    return Conversion(source, target, converted, rules, all(r.exact for r in rules), warnings)


@dataclass
class _Context:
    source: Convention
    target: Convention
    optimizer: str
    shape: StepShape
    constant_batch: bool
    constant_lr: bool
    clipping: bool
    mu: float

    def lr_symbols(self, lr_source: float, lr_target: float) -> tuple[Scale, Scale]:
        a, b = self.source.name, self.target.name
        a, b = (a, b) if a != b else ("source", "target")
        return Scale.of(f"lr_{a}", lr_source), Scale.of(f"lr_{b}", lr_target)

    def scaled(self, key: str, value: float, ratio: Scale, issues: list[str]) -> Rule:
        """target = value × ratio; inexact when an issue applies or the ratio moves with B or T
        while batches are not constant."""
        if not self.constant_batch and ratio.depends_on("B", "T"):
            issues = [*issues, f"the factor {ratio.text()} involves the batch size or sequence "
                               f"length, which varies between steps (constant_batch=False)"]
        result = value * ratio.value
        if not ratio.powers:
            formula = "unchanged"
        else:
            formula = (f"{key}_{self.target.name} = {key}_{self.source.name} × {ratio.text()}"
                       f" = {value:.6g} × {ratio.value:.6g} = {result:.6g}")
        return Rule(key, value, result, formula, not issues, "; ".join(issues))


def _momentum_form_issue(ctx: _Context) -> list[str]:
    if ctx.optimizer not in MOMENTUM_OPTIMIZERS or not ctx.mu or ctx.constant_lr:
        return []
    inside = {c.momentum_form == "lr_inside" for c in (ctx.source, ctx.target)}
    if len(inside) == 1:
        return []
    return ["lr_inside keeps each step's own lr inside the velocity while lr_outside/unit_gain "
            "rescale the whole velocity when lr changes (pytorch/pytorch#1099); with momentum "
            "(Nesterov included) they agree only at constant lr"]


def _weight_decay_rule(ctx: _Context, value: float, lr_source: float, lr_target: float) -> Rule:
    src_form, tgt_form = (decay_form(c, ctx.optimizer) for c in (ctx.source, ctx.target))
    lr_s, lr_t = ctx.lr_symbols(lr_source, lr_target)
    src = replace(ctx.source, weight_decay_form=src_form)
    tgt = replace(ctx.target, weight_decay_form=tgt_form)
    shape = ctx.shape
    src_coupled, tgt_coupled = src_form not in _DECOUPLED, tgt_form not in _DECOUPLED
    to_canonical = (coupled_decay_factor(src, shape, lr_s) if src_coupled
                    else decoupled_decay_factor(src, shape, lr_s))
    from_canonical = (coupled_decay_factor(tgt, shape, lr_t) if tgt_coupled
                      else decoupled_decay_factor(tgt, shape, lr_t))
    bridge = ONE  # ρ (fraction removed per step) = lr_pytorch_mean · λ_pytorch_mean
    if src_coupled and not tgt_coupled:
        bridge = lr_s * canonical_lr_factor(ctx.source, shape, ctx.optimizer)
    elif tgt_coupled and not src_coupled:
        bridge = ONE / (lr_t * canonical_lr_factor(ctx.target, shape, ctx.optimizer))
    ratio = to_canonical * bridge / from_canonical
    issues = [] if value == 0 else _decay_issues(ctx, src_form, tgt_form)
    return ctx.scaled("weight_decay", value, ratio, issues)


def decay_form(c: Convention, optimizer: str) -> str:
    """The weight-decay form `c` means for `optimizer`."""
    # An AdamW optimizer's weight_decay is its own decoupled decay (PyTorch and Keras 3 multiply it
    # by lr); the coupled forms describe an L2 term, which AdamW's weight_decay is not.
    if optimizer == "adamw" and c.weight_decay_form not in _DECOUPLED:
        return "decoupled_lr"
    return c.weight_decay_form


def _decay_issues(ctx: _Context, src_form: str, tgt_form: str) -> list[str]:
    if src_form == tgt_form:
        return []
    issues = []
    forms = {src_form, tgt_form}
    if "per_batch_l2" in forms and not ctx.constant_batch:
        issues.append("per_batch_l2 divides λ by each batch's own size, so a smaller batch (e.g. "
                      "sklearn's digits: 1797 = 8·200 + 197) gets a stronger decay than any single "
                      "coupled value gives")
    if forms <= set(_DECOUPLED):
        if not ctx.constant_lr:
            issues.append("decoupled_lr follows the lr schedule and decoupled does not: they agree "
                          "only at constant lr")
        return issues
    if forms & set(_DECOUPLED):
        return issues + _coupled_vs_decoupled(ctx, forms)
    if ctx.clipping and forms & set(DECAY_IN_LOSS) and forms & set(_DECAY_AFTER_CLIPPING):
        issues.append("with gradient clipping on, the L2 gradient of a loss term is clipped while "
                      "'grad' decay is added after clipping")
    return issues


def _coupled_vs_decoupled(ctx: _Context, forms: set[str]) -> list[str]:
    if ctx.optimizer != "sgd" or ctx.mu:
        return ["decoupled decay shrinks w directly while coupled decay passes through the "
                f"{'momentum buffer' if ctx.optimizer == 'sgd' else ctx.optimizer + ' normalisation'}"
                ": no value makes them equal (Loshchilov & Hutter 2019, 'Decoupled Weight Decay "
                "Regularization'); the per-step product lr·λ is kept"]
    issues = []
    if ctx.clipping and forms & set(DECAY_IN_LOSS):
        issues.append("with gradient clipping on, the L2 gradient of a loss term is clipped while "
                      "decoupled decay is not")
    if "decoupled" in forms and not ctx.constant_lr:
        issues.append("coupled decay follows the lr schedule and decoupled does not: they agree "
                      "only at constant lr")
    return issues


def _eps_rule(ctx: _Context, value: float) -> Rule:
    shape = ctx.shape
    s_src, s_tgt = reduction_scale(ctx.source, shape), reduction_scale(ctx.target, shape)
    if ctx.optimizer == "adadelta":
        # ε sits inside both square roots: √(Δ² avg + ε)/√(g² avg + ε). The gradient one would
        # need ε × (s_t/s_s)², the update one ε unchanged.
        ratio = s_tgt / s_src
        if not ratio.powers or value == 0:
            return Rule("eps", value, value, "unchanged", True)
        return Rule("eps", value, value, "unchanged (no single ε is right)", False,
                    f"Adadelta uses one ε in two accumulators: the squared-gradient one needs "
                    f"ε × ({ratio.text()})², the squared-update one needs ε unchanged")
    p_src, p_tgt = ctx.source.eps_placement, ctx.target.eps_placement
    if (p_src == "inside_sqrt") == (p_tgt == "inside_sqrt"):
        issues = []
        if p_src != p_tgt and value != 0:
            issues.append("ε outside √v̂ (PyTorch) and ε̂ outside √v (TF/Keras/sklearn Adam) differ "
                          "by the time-varying factor √(1−β2ᵗ): ε_pytorch(t) = ε̂/√(1−β2ᵗ) "
                          "(tensorflow/tensorflow#9047); the value is kept")
        return ctx.scaled("eps", value, eps_scale(p_tgt, s_tgt) / eps_scale(p_src, s_src), issues)
    eps_mean = value / eps_scale(p_src, s_src).value
    into_mean = f"eps_{ctx.source.name}" + _per(eps_scale(p_src, s_src))
    out_of_mean = _times(eps_scale(p_tgt, s_tgt))
    if p_src == "inside_sqrt":
        result = math.sqrt(eps_mean) * eps_scale(p_tgt, s_tgt).value
        formula = f"eps_{ctx.target.name} = √({into_mean}){out_of_mean}"
    else:
        result = eps_mean ** 2 * eps_scale(p_tgt, s_tgt).value
        formula = f"eps_{ctx.target.name} = ({into_mean})²{out_of_mean}"
    issues = [] if value == 0 else [
        "√(v + ε) and √v + ε′ agree only where v is negligible; ε′ = √ε matches them at v = 0 "
        "(torch/optim#149), an approximation"]
    if not ctx.constant_batch and (s_src.depends_on("B", "T") or s_tgt.depends_on("B", "T")):
        issues.append("the reduction scale varies between steps (constant_batch=False)")
    return Rule("eps", value, result, f"{formula} = {result:.6g}", not issues, "; ".join(issues))


def _per(scale: Scale) -> str:
    text = scale.text()
    return "" if not scale.powers else f"/({text})" if "·" in text else f"/{text}"


def _times(scale: Scale) -> str:
    return "" if not scale.powers else f" × {scale.text()}"


def _check_eps_placement(ctx: _Context) -> None:
    """'eps_hat' names Adam's form; for RMSprop/Adagrad the framework's own placement must be stated
    whenever it matters (the placement changes, or ε is rescaled)."""
    if ctx.optimizer not in ("rmsprop", "adagrad"):
        return
    placements = {ctx.source.eps_placement, ctx.target.eps_placement}
    rescaled = (reduction_scale(ctx.source, ctx.shape) / reduction_scale(ctx.target, ctx.shape)).powers
    if "eps_hat" in placements and (len(placements) > 1 or rescaled):
        c = ctx.source if ctx.source.eps_placement == "eps_hat" else ctx.target
        raise UnstatedEpsPlacement(c, ctx.optimizer)


class UnstatedEpsPlacement(ValueError):
    """A convention records Adam's ε form ('eps_hat'), and no form of its framework for this optimizer is on record."""

    def __init__(self, convention: Convention, optimizer: str):
        self.convention, self.optimizer = convention, optimizer
        base = convention.name.split("(")[0]
        if optimizer in OPTIMIZER_FORMS.get(base, {}):
            fix = f"use its {optimizer} form, get_convention({base!r}, {optimizer!r})"
        else:
            fix = (f"no {optimizer} form of {base!r} is on record (forms: {optimizer_forms(base)}); state where "
                   f"{optimizer}'s ε sits: eps_placement 'outside' or 'inside_sqrt' (see its evidence)")
        super().__init__(f"convention {convention.name!r} has eps_placement 'eps_hat', which describes Adam; {fix}")


def _missing_eps_rule(ctx: _Context, hparams: dict) -> Rule | None:
    if "eps" in hparams or ctx.optimizer not in (*EPS_OPTIMIZERS, "adadelta"):
        return None
    shape = ctx.shape
    moved = (reduction_scale(ctx.source, shape) / reduction_scale(ctx.target, shape)).powers
    placed = ctx.optimizer != "adadelta" and ctx.source.eps_placement != ctx.target.eps_placement
    if not moved and not placed:
        return None
    return Rule("eps", None, None, "not given", False,
                "eps is not in hparams but the conversion changes its scale or placement: pass the "
                "source ε so it can be converted (each framework's default ε differs)")


def _warnings(source, target, optimizer, batch_size, world_size, accum_steps) -> list[str]:
    warnings = []
    for side, c in (("source", source), ("target", target)):
        if world_size > 1 and c.loss_reduction == "sum":
            warnings.append(f"{side} {c.name!r} sums the loss, but DDP averages gradients over the "
                            f"{world_size} ranks: multiply each rank's loss by world_size (fairseq "
                            f"does) to get the sum over the global batch")
        if accum_steps > 1 and c.loss_reduction != "sum":
            warnings.append(f"{side} {c.name!r} averages the loss: with {accum_steps} accumulation "
                            f"steps divide each micro-batch loss by {accum_steps}, and keep the "
                            f"micro-batches equal, to get the mean over the global batch")
    if batch_size % (world_size * accum_steps):
        warnings.append(f"batch_size {batch_size} is not divisible by world_size × accum_steps = "
                        f"{world_size * accum_steps}: micro-batches differ in size")
    if optimizer == "adamw":
        for side, c in (("source", source), ("target", target)):
            if c.weight_decay_form not in _DECOUPLED:
                warnings.append(f"adamw: the {side} weight_decay is read as 'decoupled_lr' (PyTorch/"
                                f"Keras 3 AdamW); use weight_decay_form='decoupled' for tfa AdamW")
    return warnings


def _check(hparams, source, target, optimizer, batch_size, seq_len, world_size, accum_steps) -> None:
    if optimizer not in OPTIMIZER_HPARAMS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZER_HPARAMS)}")
    allowed = OPTIMIZER_HPARAMS[optimizer]
    unknown = [k for k in hparams if k not in allowed]
    if unknown:
        raise ValueError(f"hparam(s) {', '.join(map(repr, unknown))} do not apply to {optimizer}; "
                         f"allowed: {', '.join(allowed)}")
    if "lr" not in hparams:
        raise ValueError(f"hparams must include 'lr' (allowed for {optimizer}: {', '.join(allowed)})")
    for key, value in hparams.items():
        if key in _FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            continue
        low, high, low_ok, high_ok = _RANGES[key]
        number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if not number or not (low < value < high or (value == low and low_ok) or (value == high and high_ok)):
            interval = f"{'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"
            raise ValueError(f"{key} must be a number in {interval}, got {value!r}")
    for name, number, lowest in (("batch_size", batch_size, 1), ("world_size", world_size, 1),
                                 ("accum_steps", accum_steps, 1)):
        if isinstance(number, bool) or not isinstance(number, int) or number < lowest:
            raise ValueError(f"{name} must be a positive integer, got {number!r}")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ValueError(f"seq_len must be a positive integer or None, got {seq_len!r}")
    for c in (source, target):
        if not isinstance(c, Convention):
            raise ValueError(f"source and target must be Convention objects (see PRESETS), got {c!r}")
        if c.lr_momentum_normalized and optimizer not in MOMENTUM_OPTIMIZERS:
            raise ValueError(f"convention {c.name!r} divides lr by 1 + 1/(1−μ), which needs an "
                             f"optimizer with momentum ({', '.join(MOMENTUM_OPTIMIZERS)}), not {optimizer}")
        if c.lr_momentum_normalized and "momentum" not in hparams:
            raise ValueError(f"convention {c.name!r} divides lr by 1 + 1/(1−μ): pass 'momentum'")


def applied_convention(c: Convention) -> Convention:
    """The same run described by what its code hands the optimizer: lr per batch on the gradient of
    the loss as reduced, coupled decay added to that gradient (forms in the loss stay in the loss)."""
    form = "grad" if c.weight_decay_form == "coupled_lr_independent" else c.weight_decay_form
    return replace(c, name=f"{c.name}:applied", lr_unit="per_batch", lr_unit_examples=1,
                   lr_momentum_normalized=False, weight_decay_form=form)


def to_applied(hparams: dict, c: Convention | str, **kwargs) -> Conversion:
    """`hparams` restated as the numbers a per-batch optimizer receives, e.g. airbench's torch SGD
    arguments lr/kilostep_scale and weight_decay = wd/lr. kwargs as for `convert`."""
    c = get_convention(c) if isinstance(c, str) else c
    return convert(hparams, c, applied_convention(c), **kwargs)
