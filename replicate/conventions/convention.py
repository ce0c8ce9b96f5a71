"""The vocabulary: one `Convention` names how a training setup turns its loss into an update.

Every field is a fact about the update rule that changes what a hyperparameter *number* means.
`PRESETS` (presets.py) fills these fields for frameworks and papers; `convert` (convert.py) turns
numbers from one convention into another.

    get_convention("keras", eps_placement="outside")   # Keras 2 RMSprop: ε outside the square root
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

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

_ALLOWED = {
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
        for field_name, allowed in _ALLOWED.items():
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


def get_convention(name: str, **overrides) -> Convention:
    """A preset by name, optionally with fields replaced:
    get_convention("tf1", eps_placement="inside_sqrt")."""
    from replicate.conventions.presets import PRESETS

    if name not in PRESETS:
        raise ValueError(f"unknown convention {name!r}; presets: {', '.join(sorted(PRESETS))}")
    convention = PRESETS[name]
    if not overrides:
        return convention
    field_names = [f.name for f in fields(Convention)]
    unknown = sorted(set(overrides) - set(field_names))
    if unknown:
        raise ValueError(f"unknown convention field(s) {', '.join(unknown)}; "
                         f"fields: {', '.join(field_names)}")
    if "name" not in overrides:
        changed = ", ".join(f"{k}={v}" for k, v in overrides.items())
        overrides["name"] = f"{name}({changed})"
    return replace(convention, **overrides)


def describe(convention: Convention) -> dict:
    """Plain data for reports: every field with its value, its meaning and, for presets, the evidence."""
    from replicate.conventions.presets import EVIDENCE

    out = {"name": convention.name}
    for field_name, allowed in _ALLOWED.items():
        value = getattr(convention, field_name)
        out[field_name] = value
        out[f"{field_name}_meaning"] = allowed[value]
    out["lr_unit_examples"] = convention.lr_unit_examples
    out["lr_momentum_normalized"] = convention.lr_momentum_normalized
    base_name = convention.name.split("(")[0]
    out["evidence"] = EVIDENCE.get(base_name, "")
    return out
