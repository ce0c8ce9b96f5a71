"""The vocabulary: one `Convention` names how a training setup turns its loss into an update.

Every field is a fact about the update rule that changes what a hyperparameter *number* means.
`PRESETS` (presets.py) fills these fields for frameworks and papers; `convert` (conversion.py) turns
numbers from one convention into another. This module imports nothing of the package: presets.py
builds on it, never the other way round.

    Convention("mine", "sum", "grad", "lr_outside", "outside", "per_batch")
"""

from __future__ import annotations

from dataclasses import dataclass

# Allowed values of each field, with the meaning `describe` reports. One entry per value.
LOSS_REDUCTIONS = {
    "mean": "mean over the batch (per example, or per token for sequence losses)",
    "sum": "sum over the batch (over every token when seq_len is given)",
    "per_sequence_sum": "sum over the time steps, mean over the batch",
}
WEIGHT_DECAY_FORMS = {
    "grad": "g += λw inside the optimizer, after clipping; λ is stated against the gradient the "
            "lr unit refers to (≡ λ/2·‖w‖² in the loss when nothing clips)",
    "l2_half": "loss += λ/2·‖w‖² (gradient λw, before clipping)",
    "l2": "loss += λ·‖w‖² (gradient 2λw, before clipping)",
    "per_batch_l2": "loss += λ/(2·n_batch)·‖w‖², n_batch = size of this batch",
    "decoupled_lr": "w -= lr·λ·w every step, scaled with the lr schedule",
    "decoupled": "w -= λ·w every step per lr unit, not multiplied by lr nor by its schedule",
    "coupled_lr_independent": "g += (λ·v / lr_applied)·w: a per-step decay λ per lr unit that still "
                              "passes through momentum, independent of the lr value",
}
MOMENTUM_FORMS = {
    "lr_outside": "b = μb + g; p -= lr·b",
    "lr_inside": "v = μv − lr·g; p += v",
    "unit_gain": "b = μb + (1−μ)g; p -= lr·b",
}
EPS_PLACEMENTS = {
    "outside": "update ∝ m/(√v + ε)",
    "inside_sqrt": "update ∝ m/√(v + ε)",
    "eps_hat": "Adam 'epsilon hat': lr_t = lr·√(1−β2ᵗ)/(1−β1ᵗ), θ -= lr_t·m/(√v + ε̂)",
}
LR_UNITS = {
    "per_batch": "lr multiplies the gradient of the loss as reduced",
    "per_example": "lr multiplies each example's gradient: update = lr·Σᵢgᵢ",
    "per_n_examples": "lr per N examples: update = lr·Σᵢgᵢ/N",
}

FIELD_VALUES = {  # every field with a fixed vocabulary, and its allowed values

    "loss_reduction": LOSS_REDUCTIONS,
    "weight_decay_form": WEIGHT_DECAY_FORMS,
    "momentum_form": MOMENTUM_FORMS,
    "eps_placement": EPS_PLACEMENTS,
    "lr_unit": LR_UNITS,
}


@dataclass(frozen=True)
class Convention:
    """How one setup computes its update; see the module tables for the meaning of each value."""

    name: str
    loss_reduction: str
    weight_decay_form: str
    momentum_form: str
    eps_placement: str
    lr_unit: str
    lr_unit_examples: int = 1               # N for lr_unit="per_n_examples" (airbench: 1024)
    lr_momentum_normalized: bool = False    # lr divided by 1 + 1/(1−μ) (airbench "kilostep_scale")

    def __post_init__(self):
        for field_name, allowed in FIELD_VALUES.items():
            value = getattr(self, field_name)
            if value not in allowed:
                raise ValueError(f"{field_name}={value!r} is not allowed for convention "
                                 f"{self.name!r}; choose one of: {', '.join(allowed)}")
        if isinstance(self.lr_unit_examples, bool) or not isinstance(self.lr_unit_examples, int) \
                or self.lr_unit_examples < 1:
            raise ValueError(f"lr_unit_examples must be a positive integer, "
                             f"got {self.lr_unit_examples!r}")
        if not isinstance(self.lr_momentum_normalized, bool):
            raise ValueError(f"lr_momentum_normalized must be true or false, "
                             f"got {self.lr_momentum_normalized!r}")
