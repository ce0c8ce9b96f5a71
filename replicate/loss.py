"""The loss of one step, per seed: each example's cross-entropy, its reduction under the executed
convention, weight decay written into the loss, and the values the source reports as its loss.
This module owns the reported-loss names a config may use (`LOSS_VALUES`) and the factor of each
weight-decay form written into the loss (replicate.conventions.DECAY_IN_LOSS lists those forms).

    objective = reduce_loss(per_example_loss(logits, y), "mean", examples=batch)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# cross_entropy; or clipped_log_loss = log of probabilities clipped to [eps, 1 - eps] (scikit-learn's log_loss)
LOSS_VALUES = ("cross_entropy", "clipped_log_loss")


def per_example_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of each example, or of each token: (n_seeds, batch) or (n_seeds, batch, seq_len).

    label_smoothing ε: PyTorch's definition (torch.nn.CrossEntropyLoss), the cross-entropy against the target
    mixed with the uniform distribution, (1 − ε)·(−log p_y) + ε·mean_k(−log p_k), per example; summed or averaged
    by reduce_loss it equals CrossEntropyLoss(label_smoothing=ε) with reduction "sum" or "mean"."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none",
                           label_smoothing=label_smoothing).view(targets.shape)


def reduce_loss(losses: torch.Tensor, reduction: str, examples: int) -> torch.Tensor:
    """Per-seed loss of (a part of) a batch under the executed convention's reduction, normalised by
    the count of the WHOLE global batch (`examples` examples): shards and micro-batches then add up
    to the full-batch loss exactly, whatever their sizes. losses: (n_seeds, part[, seq_len])."""
    if reduction == "mean":  # over examples, or over every token
        tokens = losses.shape[2] if losses.dim() == 3 else 1
        return losses.flatten(1).sum(1) / (examples * tokens)
    if reduction == "sum":  # over examples, or over every token
        return losses.flatten(1).sum(1)
    if reduction == "per_sequence_sum":  # Σ over time steps, mean over the batch (Zaremba et al. 2014)
        if losses.dim() != 3:
            raise ValueError("loss_reduction per_sequence_sum needs sequence data (data.seq_len)")
        return losses.sum(2).sum(1) / examples
    raise ValueError(f"unknown loss_reduction {reduction!r}")


def reported_values(logits, targets, losses, loss_value: str) -> torch.Tensor:
    """Per-example (or per-token) loss values as the source reports them, in float64. Reduced-precision
    logits (bf16/fp16 autocast) are widened first: the clipping and the log run in at least float32,
    never at bf16's epsilon (2^-7)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if loss_value == "clipped_log_loss":
        eps = torch.finfo(logits.dtype).eps
        probabilities = logits.softmax(-1).clamp(eps, 1 - eps)
        return -probabilities.gather(-1, targets.unsqueeze(-1)).squeeze(-1).log().to(torch.float64)
    return losses.to(torch.float64)


def reported_loss(logits, targets, loss_value: str) -> torch.Tensor:
    """Mean reported loss per seed over a whole split."""
    losses = per_example_loss(logits, targets) if loss_value == "cross_entropy" else None
    return reported_values(logits, targets, losses, loss_value).flatten(1).mean(1)


def l2_penalty(stack, names, form: str, coefficient: float, batch: int) -> torch.Tensor:
    """Weight decay written into the loss, per seed: (n_seeds,), over the parameters `names` of a
    replicate.seed_stack.SeedStack."""
    squares = sum(stack.param(name).flatten(1).pow(2).sum(1) for name in names)
    # the loss term factor·λ·‖w‖² of each form in conventions.DECAY_IN_LOSS; per_batch_l2: scikit-learn's alpha/(2·n_batch)
    factor = {"l2_half": 0.5, "l2": 1.0, "per_batch_l2": 0.5 / batch}[form]
    return factor * coefficient * squares
