"""Update-rule conventions and exact hyperparameter conversion between them (pure math, no torch).

Owns: the `Convention` vocabulary, the framework/paper `PRESETS` with their evidence, `convert`
(rule by rule, each marked exact or not, with the reason) and the `scale_batch_size` heuristics.

    from replicate.conventions import PRESETS, convert
    convert({"lr": 1.0, "grad_clip": 5.0}, PRESETS["per_sequence_sum"], PRESETS["mean"],
            optimizer="sgd", batch_size=20, seq_len=20).hparams   # {'lr': 20.0, 'grad_clip': 0.25}
"""

from replicate.conventions.batch_scaling import scale_batch_size
from replicate.conventions.convention import FIELD_VALUES, Convention
from replicate.conventions.conversion import (
    DECAY_IN_LOSS, OPTIMIZER_HPARAMS, Conversion, Execution, Rule, UnstatedEpsPlacement, applied_convention, convert,
    decay_form, execute, to_applied,
)
from replicate.conventions.presets import (
    EVIDENCE, OPTIMIZER_FORMS, PRESETS, describe, get_convention, optimizer_forms,
)

__all__ = [
    "DECAY_IN_LOSS", "Convention", "Conversion", "EVIDENCE", "Execution", "FIELD_VALUES", "OPTIMIZER_FORMS",
    "OPTIMIZER_HPARAMS", "PRESETS", "Rule", "UnstatedEpsPlacement", "optimizer_forms",
    "applied_convention", "convert", "decay_form", "describe", "execute", "get_convention", "scale_batch_size",
    "to_applied",
]
