"""The real datasets in their standard file layouts under `data.root`: MNIST, CIFAR-10, Penn Treebank.

Each format has its own module (`mnist`, `cifar10`, `ptb`) that reads and checks the files as their
publishers ship them; this module turns what they read into a `replicate.data.Dataset` on the device,
applies the pixel scaling a recipe states, holds out a validation split, and fetches missing files
with `data.download=true`. Layouts, sources and checksums: docs/datasets.md.

    data = load_real_dataset(cfg.data, dtype=torch.float32, device="cpu", paper_id="keras_mnist_mlp")
"""
from __future__ import annotations

from pathlib import Path

from replicate.errors import ConfigError

REAL_DATASETS = ("mnist", "cifar10", "ptb")


class FormatError(Exception):
    """A file that is absent or not in its format; the message names the path and what is wrong."""


class DatasetError(ConfigError):
    """A dataset that is missing or damaged: one line naming the path looked in and the command that fetches it."""


def fetch_command(paper_id: str | None, root: Path) -> str:
    return f"python -m replicate paper={paper_id or '<id>'} data.root={root} data.download=true"


def dataset_error(problem: str, *, paper_id: str | None, root: Path) -> DatasetError:
    return DatasetError(f"{problem}; fetch it with: {fetch_command(paper_id, root)}")


def load_real_dataset(data_cfg, *, dtype, device, paper_id: str | None = None):
    """Read data.name's files under data.root (else the cache directory) and return a Dataset with tensors
    on `device`. Files that are absent or damaged are an error, or with data.download=true are fetched
    (verified against their published md5 sums) and read again."""
    import torch

    from replicate.data import Dataset, cache_dir
    from replicate.datasets import cifar10, mnist, ptb

    if data_cfg.scaling != "none":
        raise ConfigError(f"data.scaling={data_cfg.scaling} applies to mnist1d and the scikit-learn data; scale "
                          f"{data_cfg.name} with data.pixel_divisor, data.mean and data.std (docs/datasets.md)")
    modules = {"mnist": mnist, "cifar10": cifar10, "ptb": ptb}
    module = modules[data_cfg.name]
    root = cache_dir(data_cfg.root).resolve()

    try:
        arrays = module.read(root)
    except FormatError as error:
        if not data_cfg.download:
            raise dataset_error(str(error), paper_id=paper_id, root=root) from None
        from replicate.datasets.download import download

        # absent or damaged: fetch the official files (those already here with the right md5 are kept)
        download(module.DOWNLOADS, root)
        try:
            arrays = module.read(root)
        except FormatError as error:
            raise DatasetError(f"{error}, even after downloading and verifying the official files; "
                               "report this with the file named") from None
    if data_cfg.name == "ptb":
        return ptb.to_dataset(arrays, device=device)
    (x_train, y_train), (x_test, y_test), description = arrays
    scale = pixel_scaling(data_cfg, channels=x_train.shape[1])
    x_train, x_test = (scale(torch.as_tensor(x).to(device=device, dtype=dtype)) for x in (x_train, x_test))
    y_train, y_test = (torch.as_tensor(y, dtype=torch.long, device=device) for y in (y_train, y_test))
    x_valid = y_valid = None
    if data_cfg.holdout:
        if not 0 < data_cfg.holdout < len(y_train):
            raise ConfigError(f"data.holdout={data_cfg.holdout} must be between 1 and {len(y_train) - 1} "
                              f"(the training file has {len(y_train)} examples), or 0 for no validation split")
        # the last `holdout` training examples, in file order: the Theano tutorials' 50 000 + 10 000 split of
        # MNIST as MILA describes it (docs/datasets.md says how far that is checked)
        split = len(y_train) - data_cfg.holdout
        x_train, x_valid, y_train, y_valid = x_train[:split], x_train[split:], y_train[:split], y_train[split:]
        description["holdout"] = f"the last {data_cfg.holdout} examples of the training files, in file order"
    if data_cfg.flatten:
        x_train, x_test = x_train.flatten(1), x_test.flatten(1)
        x_valid = None if x_valid is None else x_valid.flatten(1)
    description.update(root=str(root), pixel_divisor=data_cfg.pixel_divisor, mean=list(data_cfg.mean),
                       std=list(data_cfg.std), n_train=len(y_train), n_test=len(y_test),
                       n_valid=0 if y_valid is None else len(y_valid), input_shape=list(x_train.shape[1:]),
                       num_classes=module.NUM_CLASSES)
    return Dataset(data_cfg.name, x_train, y_train, x_test, y_test, module.NUM_CLASSES, description,
                   x_valid=x_valid, y_valid=y_valid)


def pixel_scaling(data_cfg, *, channels: int):
    """x ↦ (x / data.pixel_divisor − mean[c]) / std[c] per channel c, in the tensor's dtype.

    The divisor, not a multiplier, so that both common recipes are exact: Keras's `x /= 255` is a
    division (1/255 has no exact binary value) and Caffe's `scale: 0.00390625` is exactly 1/256."""
    divisor = data_cfg.pixel_divisor
    mean, std = list(data_cfg.mean), list(data_cfg.std)
    if not divisor > 0:
        raise ConfigError(f"data.pixel_divisor must be positive, got {divisor} (255: pixels in [0, 1]; 1: raw 0..255)")
    for name, values in (("mean", mean), ("std", std)):
        if values and len(values) != channels:
            raise ConfigError(f"data.{name} has {len(values)} value(s) but the images have {channels} channel(s); "
                              f"give one per channel, e.g. data.{name}=[{', '.join(['0.5'] * channels)}], or []")
    if any(value <= 0 for value in std):
        raise ConfigError(f"data.std must be positive, got {std}")

    def scale(x):
        x = x / divisor
        shape = (1, channels) + (1,) * (x.dim() - 2)  # broadcast over (N, C, H, W)
        if mean:
            x = x - x.new_tensor(mean).view(shape)
        if std:
            x = x / x.new_tensor(std).view(shape)
        return x

    return scale
