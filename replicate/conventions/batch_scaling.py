"""Batch-size scaling rules: heuristics for keeping training similar at another batch size.

Unlike `convert`, these are not identities: a run at another batch size takes different steps.

    scale_batch_size({"lr": 0.1, "momentum": 0.9}, optimizer="sgd", batch_size=256,
                     new_batch_size=1024, scaling="linear").hparams["lr"]   # 0.4
"""

from __future__ import annotations

import math

from replicate.conventions.convention import Convention
from replicate.conventions.conversion import Conversion, Rule, convert
from replicate.conventions.presets import PRESETS

SCALINGS = {
    # Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour": "When the
    # minibatch size is multiplied by k, multiply the learning rate by k" (with gradual warmup).
    "linear": lambda k: k,
    # Krizhevsky 2014, "One weird trick for parallelizing convolutional neural networks": multiply
    # the learning rate by √k "to keep the variance in the gradient expectation constant".
    "sqrt": math.sqrt,
    "none": lambda k: 1.0,
}
_REASON = "batch-size scaling is a heuristic, not an identity"


def scale_batch_size(hparams: dict, *, optimizer: str, batch_size: int, new_batch_size: int, scaling: str,
                     convention: Convention | None = None, seq_len: int | None = None) -> Conversion:
    """Hyperparameters for `new_batch_size`: the PyTorch-mean lr is scaled by k (linear), √k (sqrt) or
    kept (none), k = new_batch_size / batch_size; everything else keeps its PyTorch-mean value.

    Under a sum convention the gradient already grows with the batch, so e.g. linear scaling keeps
    the summed-loss lr unchanged; `convention` (default "mean") says which one `hparams` use.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of: {', '.join(SCALINGS)}")
    if isinstance(new_batch_size, bool) or not isinstance(new_batch_size, int) or new_batch_size < 1:
        raise ValueError(f"new_batch_size must be a positive integer, got {new_batch_size!r}")
    convention = convention or PRESETS["mean"]
    mean = PRESETS["mean"]
    to_mean = convert(hparams, convention, mean, optimizer=optimizer, batch_size=batch_size, seq_len=seq_len)
    k = new_batch_size / batch_size
    lr_factor = SCALINGS[scaling](k)
    scaled = {**to_mean.hparams, "lr": to_mean.hparams["lr"] * lr_factor}
    back = convert(scaled, mean, convention, optimizer=optimizer, batch_size=new_batch_size, seq_len=seq_len)

    rules = []
    for key, value in hparams.items():
        new_value = back.hparams[key]
        if key == "lr":
            formula = (f"HEURISTIC {scaling} scaling: lr_mean × {lr_factor:.6g} (k = {new_batch_size}/"
                       f"{batch_size} = {k:.6g}), then restated for {convention.name!r} at batch "
                       f"{new_batch_size}: {value:.6g} → {new_value:.6g}")
        elif new_value == value:
            formula = "HEURISTIC: unchanged"
        else:
            formula = (f"HEURISTIC: PyTorch-mean value kept, restated for {convention.name!r} at batch "
                       f"{new_batch_size}: {value:.6g} → {new_value:.6g}")
        rules.append(Rule(key, value, new_value, formula, False, _REASON))
    warnings = [*to_mean.warnings, *back.warnings]
    if scaling == "linear" and k > 1:
        warnings.append("Goyal et al. pair the linear rule with a gradual warmup (5 epochs at 8k)")
    return Conversion(convention, convention, dict(back.hparams), rules, False, warnings)
