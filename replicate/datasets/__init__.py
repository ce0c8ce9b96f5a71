"""The real datasets in their standard file layouts under `data.root`: MNIST, CIFAR-10, Penn Treebank.

Each format has its own module (`mnist`, `cifar10`, `ptb`) that reads and checks the files as their
publishers ship them; this module turns what they read into a `replicate.data.Dataset` on the device,
applies the pixel scaling a recipe states, holds out a validation split, and fetches missing files
with `data.download=true` (replicate.datasets.load). This module holds their names and errors.
Layouts, sources and checksums: docs/datasets.md.

    fields = load_real_dataset(cfg.data, root, dtype=torch.float32, device="cpu", paper_id="keras_mnist_mlp")
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
