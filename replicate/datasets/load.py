"""Reading a real dataset's files into tensors on the device: the pixel scaling a recipe states, a held-out
validation split, and the download of absent or damaged files (data.download=true).

    fields = load_real_dataset(cfg.data, root, dtype=torch.float32, device="cpu", paper_id="keras_mnist_mlp")
    data = replicate.data.Dataset(**fields)
"""
from __future__ import annotations

from pathlib import Path

from replicate.datasets import DatasetError, FormatError, cifar10, dataset_error, mnist, ptb
from replicate.datasets.download import download
from replicate.errors import ConfigError


def load_real_dataset(data_cfg, root: Path, *, dtype, device, paper_id: str | None = None) -> dict:
    """Read data.name's files under `root` (data.root, else the cache directory) and return the fields of a
    replicate.data.Dataset, tensors on `device`. Files that are absent or damaged are an error, or with
    data.download=true are fetched (verified against their published md5 sums) and read again."""
    import torch

    if data_cfg.scaling != "none":
        raise ConfigError(f"data.scaling={data_cfg.scaling} applies to mnist1d and the scikit-learn data; scale "
                          f"{data_cfg.name} with data.pixel_divisor, data.mean and data.std (docs/datasets.md)")
    modules = {"mnist": mnist, "cifar10": cifar10, "ptb": ptb}
    module = modules[data_cfg.name]
    root = root.resolve()

    try:
        arrays = module.read(root)
    except FormatError as error:
        if not data_cfg.download:
            raise dataset_error(str(error), paper_id=paper_id, root=root) from None
        # absent or damaged: fetch the official files (those already here with the right md5 are kept)
        download(module.DOWNLOADS, root)
        try:
            arrays = module.read(root)
        except FormatError as error:
            raise DatasetError(f"{error}, even after downloading and verifying the official files; "
                               "report this with the file named") from None
    if data_cfg.name == "ptb":
        fields = ptb.dataset_fields(arrays, device=device)
        if data_cfg.seq_len is None:
            return fields
        if not data_cfg.rows:
            raise ConfigError(f"data.seq_len={data_cfg.seq_len} cuts PTB into windows of rows: set data.rows to the batch "
                              "size, e.g. data.rows=${train.batch_size}")
        return ptb.window_fields(fields, rows=data_cfg.rows, seq_len=data_cfg.seq_len)
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
    x_valid, y_valid = first_examples(x_valid, y_valid, data_cfg.valid_examples, "valid_examples", description)
    x_test, y_test = first_examples(x_test, y_test, data_cfg.test_examples, "test_examples", description)
    if data_cfg.flatten:
        x_train, x_test = x_train.flatten(1), x_test.flatten(1)
        x_valid = None if x_valid is None else x_valid.flatten(1)
    description.update(root=str(root), pixel_divisor=data_cfg.pixel_divisor, mean=list(data_cfg.mean),
                       std=list(data_cfg.std), n_train=len(y_train), n_test=len(y_test),
                       n_valid=0 if y_valid is None else len(y_valid), input_shape=list(x_train.shape[1:]),
                       num_classes=module.NUM_CLASSES)
    return dict(name=data_cfg.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                num_classes=module.NUM_CLASSES, description=description, x_valid=x_valid, y_valid=y_valid)


def first_examples(x, y, count: int | None, key: str, description: dict):
    """The first `count` examples of an evaluation split (None: all of it). Scripts that evaluate in whole
    batches of the training batch size score only those (DeepLearningTutorials' n_test_batches = n // batch_size)."""
    if count is None:
        return x, y
    split = key.split("_")[0]
    if y is None:
        raise ConfigError(f"data.{key}={count} but there is no {split} split; set data.holdout=N first, or data.{key}=null")
    if count > len(y):
        raise ConfigError(f"data.{key}={count} but the {split} split has {len(y)} examples; "
                          f"use at most {len(y)}, or data.{key}=null for all")
    description[key] = f"the first {count} of {len(y)} {split} examples"
    return x[:count], y[:count]


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
