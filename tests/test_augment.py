"""Device-side augmentation: each operation checked pixel for pixel against the offsets it drew, seeds independent."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from replicate.augment import augment, augment_seeds, cutout, random_crop, random_flip, step_seed
from replicate.config import ConfigError



def images(batch=64, channels=3, size=8):
    return torch.arange(batch * channels * size * size, dtype=torch.float32).reshape(batch, channels, size, size) + 1


def settings(**values):
    return SimpleNamespace(**{"crop_padding": 0, "padding_mode": "zeros", "flip": False, "cutout": 0, **values})


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_is_the_window_at_the_drawn_offsets(mode):
    x = images()
    out = random_crop(x, 2, mode, torch.Generator().manual_seed(5))
    offsets = torch.randint(0, 5, (2, len(x)), generator=torch.Generator().manual_seed(5))
    padded = F.pad(x, (2,) * 4, mode="constant" if mode == "zeros" else "reflect")
    for i, (top, left) in enumerate(offsets.T.tolist()):
        assert torch.equal(out[i], padded[i, :, top:top + 8, left:left + 8])
    # every offset in [0, 2·padding] occurs, and some windows hold padding (zeros), so the crop really moves
    assert set(offsets.flatten().tolist()) == set(range(5))
    if mode == "zeros":
        assert (out == 0).any() and not (x == 0).any()


def test_flip_mirrors_exactly_the_drawn_images():
    x = images()
    out = random_flip(x, torch.Generator().manual_seed(3))
    flips = torch.randint(0, 2, (len(x),), generator=torch.Generator().manual_seed(3)).bool()
    assert 0 < flips.sum() < len(x)
    for i, flipped in enumerate(flips.tolist()):
        assert torch.equal(out[i], x[i].flip(-1) if flipped else x[i])


def test_cutout_zeroes_one_square_inside_each_image():
    x = images(batch=200)
    out = cutout(x, 3, torch.Generator().manual_seed(1))
    zeroed = out == 0
    assert torch.equal(out[~zeroed], x[~zeroed])
    for i in range(len(x)):
        rows = zeroed[i, 0].any(1).nonzero().flatten()
        cols = zeroed[i, 0].any(0).nonzero().flatten()
        assert zeroed[i].sum() == 3 * 3 * 3 and rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2
        assert torch.equal(zeroed[i], zeroed[i, :1].expand_as(zeroed[i]))  # the same square in every channel
    corners = {(int(zeroed[i, 0].any(1).nonzero()[0]), int(zeroed[i, 0].any(0).nonzero()[0])) for i in range(len(x))}
    assert {top for top, _ in corners} == set(range(6))  # corners 0..H−size: wholly inside, every position reachable
    with pytest.raises(ConfigError, match="larger than the 8×8 images; use a side of at most 8"):
        cutout(x, 9, torch.Generator())


def test_each_seed_gets_its_own_draws_whatever_trains_beside_it():
    x = images(batch=16).expand(3, 16, 3, 8, 8)
    setup = settings(crop_padding=2, flip=True, cutout=2)
    together = augment_seeds(x, setup, [0, 1, 2], step=7)
    alone = torch.cat([augment_seeds(x[:1], setup, [seed], step=7) for seed in (0, 1, 2)])
    assert torch.equal(together, alone)
    assert not torch.equal(together[0], together[1])  # seeds differ
    assert not torch.equal(augment_seeds(x[:1], setup, [0], step=8), together[:1])  # steps differ
    # the draws are the generator's at step_seed(seed, step): a resumed run repeats them
    generator = torch.Generator().manual_seed(step_seed(1, 7, 1))
    assert torch.equal(augment(x[1], setup, generator), together[1])


def test_augmentation_needs_images():
    with pytest.raises(ConfigError, match=r"needs images of shape \(C, H, W\); these examples have shape \[784\]"):
        augment_seeds(torch.zeros(1, 4, 784), settings(flip=True), [0], step=0)
