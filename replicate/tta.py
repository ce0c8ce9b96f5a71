"""Test-time augmentation: the logits of an image averaged over mirrored and shifted views of it (`train.tta`).

The views and weights are airbench's (KellerJordan/cifar10-airbench legacy/airbench94.py at f1c599c, lines
307–340, `infer` at tta_level 1 and 2):
  flip            ½·f(x) + ½·f(mirror x)                                                    (tta_level 1)
  flip_translate  ½·flip(x) + ½·mean(flip(x shifted up-left 1 px), flip(x shifted down-right 1 px)),
                  the shifts cut from x reflect-padded by 1 pixel                           (tta_level 2)

    logits = tta_logits(model, images, "flip_translate")   # images: (batch, C, H, W)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TTA_MODES = ("none", "flip", "flip_translate")


def tta_logits(forward, images: torch.Tensor, mode: str) -> torch.Tensor:
    """forward(images (batch, C, H, W)) → logits; the test-time-augmented logits under `mode` (TTA_MODES)."""
    if mode == "none":
        return forward(images)

    def mirrored(x):  # left-right: the last axis is the width
        return 0.5 * forward(x) + 0.5 * forward(x.flip(-1))

    if mode == "flip":
        return mirrored(images)
    if mode != "flip_translate":
        raise ValueError(f"unknown tta mode {mode!r}; allowed: {', '.join(TTA_MODES)}")
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = (padded[..., 0:height, 0:width], padded[..., 2:height + 2, 2:width + 2])
    translated = torch.stack([mirrored(x) for x in shifted]).mean(0)
    return 0.5 * mirrored(images) + 0.5 * translated
