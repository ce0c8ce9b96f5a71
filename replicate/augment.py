"""Training-time image augmentation, batch-wise on the device, drawn per training seed and step.

    x = augment_seeds(x, cfg.augment, seeds=[0, 1], step=17)   # x: (n_seeds, batch, C, H, W)

Each image gets its own random offsets, flip and cutout square, drawn from a generator that depends only on
(seed, step): a seed sees the same augmented batches whether it trains alone or beside other seeds, and a run
resumed from a checkpoint continues with the draws an uninterrupted run would have made. Every operation only
moves or zeroes pixels (indexing, flipping, masking), so it is exact in any dtype.

The recipes' names for these operations:
  crop_padding=4, padding_mode=zeros, flip   He et al. 2016 section 4.2: "4 pixels are padded on each side, and a
                                             32×32 crop is randomly sampled from the padded image or its flip"
  crop_padding=2, padding_mode=reflect       airbench's "translate" (a random crop of a reflect-padded image)
  cutout=8                                   cifar10-fast's Cutout(8, 8): an 8×8 square, wholly inside the image, set to 0
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from replicate.errors import ConfigError

PADDING_MODES = ("zeros", "reflect")
AUGMENT_STREAM, DROPOUT_STREAM = 1, 2  # independent streams per (seed, step): augmentation draws, dropout masks
FLIP_STREAM = 3  # the alternating flip's one coin per training image, drawn once per seed


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for one training seed's draws at one optimizer step, from numpy's SeedSequence (well mixed:
    neighbouring seeds or steps give unrelated streams)."""
    return int(np.random.SeedSequence([stream, seed, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def is_active(settings) -> bool:
    return settings is not None and (settings.crop_padding > 0 or settings.flip or settings.cutout > 0)


def random_crop(images: torch.Tensor, padding: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Pad each (C, H, W) image by `padding` pixels per side, then take an H×W window at a random offset in
    [0, 2·padding] along each axis. images: (batch, C, H, W)."""
    if padding == 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4, mode="constant" if mode == "zeros" else "reflect")
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=images.device)
    rows = (offsets[0, :, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(width, device=images.device))[:, None, None, :]
    examples = torch.arange(batch, device=images.device)[:, None, None, None]
    return padded[examples, torch.arange(channels, device=images.device)[None, :, None, None], rows, cols]


def mirror(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror left to right the images where `flips` ((batch,) bool) is true."""
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left to right with probability 1/2."""
    return mirror(images, torch.randint(0, 2, (images.shape[0],), generator=generator, device=images.device).bool())


def flip_orientations(seeds: list[int], n: int, device) -> torch.Tensor:
    """airbench's flip (KellerJordan/cifar10-airbench legacy/airbench94.py at f1c599c, lines 131–147): a random half
    of the n training images is mirrored once, and every image is mirrored again on odd epochs, so each image
    alternates between its two orientations from epoch to epoch. This is the first orientation, one coin per image
    and seed, drawn from the seed alone, once per run: (n_seeds, n) bool."""
    generator = torch.Generator(device=device)
    rows = []
    for seed in seeds:
        generator.manual_seed(step_seed(seed, 0, FLIP_STREAM))
        rows.append(torch.randint(0, 2, (n,), generator=generator, device=device).bool())
    return torch.stack(rows)


def alternating_flips(first: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
    """The images of a batch to mirror in `epoch`: first (flip_orientations) at the batch's training-set indices
    ((n_seeds, batch)), inverted on odd epochs → (n_seeds, batch) bool."""
    return first.gather(1, indices) ^ bool(epoch % 2)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Set a size×size square of each image to 0, its corner uniform over the positions that keep it inside."""
    if size == 0:
        return images
    batch, _, height, width = images.shape
    if size > min(height, width):
        raise ConfigError(f"augment.cutout={size} is larger than the {height}×{width} images; "
                          f"use a side of at most {min(height, width)} pixels, or 0 for none")
    top = torch.randint(0, height - size + 1, (batch,), generator=generator, device=images.device)
    left = torch.randint(0, width - size + 1, (batch,), generator=generator, device=images.device)
    rows = torch.arange(height, device=images.device)[None, :]
    cols = torch.arange(width, device=images.device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (batch, H)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (batch, W)
    square = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]
    return images.masked_fill(square, 0)


def augment(images: torch.Tensor, settings, generator: torch.Generator, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Crop, then flip, then cutout (cifar10-fast's order), each as `settings` asks. images: (batch, C, H, W);
    flips: (batch,) bool, the images to mirror (alternating_flips), or None: a coin per image."""
    images = random_crop(images, settings.crop_padding, settings.padding_mode, generator)
    if settings.flip:  # a coin per image, unless the recipe alternates each image's orientation (flips)
        images = random_flip(images, generator) if flips is None else mirror(images, flips)
    return cutout(images, settings.cutout, generator)


def augment_seeds(x: torch.Tensor, settings, seeds: list[int], step: int, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Each seed's batch augmented with its own (seed, step) draws. x: (n_seeds, batch, C, H, W); flips: (n_seeds,
    batch) bool from alternating_flips, or None."""
    if x.dim() != 5:
        raise ConfigError(f"augment.* needs images of shape (C, H, W); these examples have shape {list(x.shape[2:])} "
                          "(data.flatten=true?): set data.flatten=false, or switch the augmentation off")
    generator = torch.Generator(device=x.device)
    rows = []
    for m, (row, seed) in enumerate(zip(x, seeds)):
        generator.manual_seed(step_seed(seed, step, AUGMENT_STREAM))
        rows.append(augment(row, settings, generator, None if flips is None else flips[m]))
    return torch.stack(rows)
