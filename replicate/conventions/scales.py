"""The scale factors of a convention, each defined once.

Notation (ḡ = mean gradient over the n loss elements of one step; n = B examples, or B·T tokens
when seq_len is given):

    s       reduction scale: the loss as reduced has gradient s·ḡ. mean 1, sum n, per_sequence_sum T.
    s_unit  scale of the gradient the lr unit refers to, against which λ (grad form) and clip
            thresholds are stated: per_batch s (the reduced loss); per_example and per_n_examples 1
            (the per-example gradient: CNTK multiplies its per-sample L2 weight and clip threshold
            by the minibatch size; dawn.py passes weight_decay·batch_size next to lr/batch_size).
    v       lr units per step: per_batch 1, per_example n, per_n_examples n/N, then divided by
            1 + 1/(1−μ) when lr_momentum_normalized (airbench kilostep_scale).
    u       lr on the mean gradient per unit of lr, u = v·s_unit: per_batch s, per_example n,
            per_n_examples n/N (÷ 1+1/(1−μ)). Plain SGD with lr steps by lr·u·ḡ.
    m       momentum gain: 1−μ for unit_gain (its buffer b = μb + (1−μ)g is (1−μ) × PyTorch's),
            else 1.

A `Scale` keeps each factor's symbol next to its number, so a formula can be printed
("lr × B/1024 ÷ (1+1/(1−μ))") and symbols that cancel leave exactly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from replicate.conventions.convention import Convention

MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")       # optimizers with a momentum buffer
# optimizers whose step does not change when the gradient is scaled, up to ε
ADAPTIVE_OPTIMIZERS = ("adam", "adamw", "rmsprop", "adagrad", "adadelta")
EPS_OPTIMIZERS = ("adam", "adamw", "rmsprop", "adagrad")  # one ε whose placement the convention names


class Scale:
    """A product of named factors, e.g. B/1024 ÷ (1+1/(1−μ)), with their numeric values."""

    def __init__(self, powers: dict[str, int] | None = None, values: dict[str, float] | None = None):
        self.powers = {k: p for k, p in (powers or {}).items() if p != 0}
        self.values = dict(values or {})

    @classmethod
    def of(cls, symbol: str, value: float) -> "Scale":
        return cls({symbol: 1}, {symbol: float(value)})

    def __mul__(self, other: "Scale") -> "Scale":
        powers = dict(self.powers)
        for k, p in other.powers.items():
            powers[k] = powers.get(k, 0) + p
        return Scale(powers, {**self.values, **other.values})

    def __truediv__(self, other: "Scale") -> "Scale":
        return self * other ** -1

    def __pow__(self, exponent: int) -> "Scale":
        return Scale({k: p * exponent for k, p in self.powers.items()}, self.values)

    @property
    def value(self) -> float:
        return math.prod(self.values[k] ** p for k, p in self.powers.items())

    def depends_on(self, *symbols: str) -> bool:
        return any(self.powers.get(s, 0) != 0 for s in symbols)

    def text(self) -> str:
        def part(sign):
            items = [(k, abs(p)) for k, p in sorted(self.powers.items()) if (p > 0) == (sign > 0)]
            return "·".join(k if p == 1 else f"{k}^{p}" for k, p in items)
        top, bottom = part(+1), part(-1)
        if not bottom:
            return top or "1"
        return f"{top or '1'}/{bottom}" if "·" not in bottom else f"{top or '1'}/({bottom})"


ONE = Scale()


@dataclass(frozen=True)
class StepShape:
    """What one training step looks like: the numbers the scale factors depend on."""

    batch_size: int                 # B, examples per step (global, after DDP and accumulation)
    seq_len: int | None = None      # T, tokens per example for sequence losses
    momentum: float | None = None   # μ, when the optimizer has one

    def batch(self) -> Scale:
        return Scale.of("B", self.batch_size)

    def elements(self) -> Scale:
        """n: the loss elements one step averages (mean) or adds (sum)."""
        if self.seq_len is None:
            return self.batch()
        return self.batch() * Scale.of("T", self.seq_len)

    def momentum_symbol(self, symbol: str, value_of_mu) -> Scale:
        if self.momentum is None:
            raise ValueError(f"this conversion uses {symbol}: pass 'momentum' in hparams")
        return Scale.of(symbol, value_of_mu(self.momentum))


def reduction_scale(c: Convention, shape: StepShape) -> Scale:
    """s: gradient of the loss as reduced, in units of the mean gradient."""
    if c.loss_reduction == "mean":
        return ONE
    if c.loss_reduction == "sum":
        return shape.elements()
    if shape.seq_len is None:
        raise ValueError(f"convention {c.name!r} sums over time steps (per_sequence_sum): pass seq_len")
    return Scale.of("T", shape.seq_len)


def unit_gradient_scale(c: Convention, shape: StepShape) -> Scale:
    """s_unit: scale of the gradient that λ (grad form) and clip thresholds are stated against."""
    return reduction_scale(c, shape) if c.lr_unit == "per_batch" else ONE


def lr_units_per_step(c: Convention, shape: StepShape) -> Scale:
    """v: how many lr units one step holds."""
    if c.lr_unit == "per_batch":
        units = ONE
    elif c.lr_unit == "per_example":
        units = shape.elements()
    else:
        units = shape.elements() / Scale.of(str(c.lr_unit_examples), c.lr_unit_examples)
    if c.lr_momentum_normalized:
        units = units / shape.momentum_symbol("(1+1/(1−μ))", lambda mu: 1 + 1 / (1 - mu))
    return units


def mean_gradient_lr_factor(c: Convention, shape: StepShape) -> Scale:
    """u = v·s_unit: plain SGD steps by lr·u·ḡ."""
    return lr_units_per_step(c, shape) * unit_gradient_scale(c, shape)


def momentum_gain(c: Convention, shape: StepShape, optimizer: str) -> Scale:
    """m: unit-gain momentum carries (1−μ) × the PyTorch buffer, so it steps (1−μ) times smaller."""
    if c.momentum_form != "unit_gain" or optimizer not in MOMENTUM_OPTIMIZERS or not shape.momentum:
        return ONE
    return Scale.of("(1−μ)", 1 - shape.momentum)


def canonical_lr_factor(c: Convention, shape: StepShape, optimizer: str) -> Scale:
    """lr_pytorch_mean = lr × this. SGD moves with the gradient scale (u); adaptive optimizers
    normalise the gradient away, so only the factor the code applies to lr on top of it (u/s) stays."""
    factor = mean_gradient_lr_factor(c, shape) * momentum_gain(c, shape, optimizer)
    if optimizer in ADAPTIVE_OPTIMIZERS:
        factor = factor / reduction_scale(c, shape)
    return factor


def coupled_decay_factor(c: Convention, shape: StepShape, lr: Scale) -> Scale:
    """λ_pytorch_mean (g += λ·w on the mean gradient) = λ × this, for the coupled forms."""
    form = c.weight_decay_form
    if form == "grad":
        return ONE / unit_gradient_scale(c, shape)
    if form == "l2_half":
        return ONE / reduction_scale(c, shape)
    if form == "l2":
        return Scale.of("2", 2) / reduction_scale(c, shape)
    if form == "per_batch_l2":
        return ONE / (shape.batch() * reduction_scale(c, shape))
    if form == "coupled_lr_independent":
        # per-step decay λ·v equals lr·u·λ_mean, and u = v·s_unit
        return ONE / (lr * unit_gradient_scale(c, shape))
    raise AssertionError(form)


def decoupled_decay_factor(c: Convention, shape: StepShape, lr: Scale) -> Scale:
    """ρ, the fraction of w removed per step at the base lr, = λ × this, for the decoupled forms."""
    if c.weight_decay_form == "decoupled_lr":
        return lr * lr_units_per_step(c, shape)
    if c.weight_decay_form == "decoupled":
        return lr_units_per_step(c, shape)
    raise AssertionError(c.weight_decay_form)


def eps_scale(placement: str, s: Scale) -> Scale:
    """ε moves with the gradient scale outside √ and with its square inside:
    √(s²v + ε) = s·√(v + ε/s²)."""
    return s ** 2 if placement == "inside_sqrt" else s
