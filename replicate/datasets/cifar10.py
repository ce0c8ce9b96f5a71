"""CIFAR-10 as Krizhevsky's "python version" archive unpacks: `<root>/cifar-10-batches-py/` with
`data_batch_1` … `data_batch_5` (training, 10 000 images each), `test_batch` and `batches.meta`.

Each batch is a Python 2 pickle of a dict (www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout"):
`b"data"`, a uint8 array of N × 3072 (the 1024 red, then green, then blue values of a 32 × 32 image,
row by row) and `b"labels"`, N integers in 0..9; `batches.meta` holds `b"label_names"`. They are read
by a restricted unpickler that builds nothing but numpy arrays, their dtypes, and Python's own
containers and scalars: a pickle can otherwise run any code it names.

    (x_train, y_train), (x_test, y_test), description = read(root)   # uint8 (N, 3, 32, 32), int64 (N,)
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from replicate.datasets import FormatError
from replicate.datasets.download import Download

NUM_CLASSES = 10
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_BATCH, META = "test_batch", "batches.meta"
PIXELS = 3 * 32 * 32
# torchvision/datasets/cifar.py (pytorch/vision @ 5c2bb42d), `url` and `tgz_md5`
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
DOWNLOADS = [Download(urls=[URL], md5=ARCHIVE_MD5, path="cifar-10-python.tar.gz",
                      extract=[f"{FOLDER}/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH, META)])]

# what a CIFAR-10 batch needs to be rebuilt: numpy's array reconstructor (named numpy.core in pickles
# written before numpy 2, numpy._core after), the array and dtype classes; nothing else is importable
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds")
        return getattr(np, name) if module == "numpy" else _reconstruct_array()


def _reconstruct_array():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def unpickle(path: Path) -> dict:
    """A batch file as the dict it holds (keys as bytes, as the page's own `unpickle` reads them)."""
    try:
        with open(path, "rb") as file:
            content = _ArraysOnly(file, encoding="bytes").load()
    except FileNotFoundError:
        raise FormatError(f"CIFAR-10 file {path.name} not found in {path.parent}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise FormatError(f"{path} is damaged or not a CIFAR-10 batch: cannot unpickle it ({error})") from None
    if not isinstance(content, dict):
        raise FormatError(f"{path} is not a CIFAR-10 batch: it holds a {type(content).__name__}, not a dict")
    return content


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = unpickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXELS):
        found = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise FormatError(f"{path} is not a CIFAR-10 batch: b'data' is {found}, expected uint8 [N, {PIXELS}]")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise FormatError(f"{path} is not a CIFAR-10 batch: {len(data)} images but b'labels' is "
                          f"{f'a list of {len(labels)}' if isinstance(labels, list) else type(labels).__name__}")
    labels = np.asarray(labels)
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise FormatError(f"{path} holds labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)  # channel planes, rows, columns: NCHW


def read(root: Path):
    folder = Path(root) / FOLDER
    meta = unpickle(folder / META)
    names = meta.get(b"label_names")
    if not (isinstance(names, list) and len(names) == NUM_CLASSES):
        raise FormatError(f"{folder / META} is not CIFAR-10's batches.meta: b'label_names' is not a list of 10 names")
    train = [read_batch(folder / name) for name in TRAIN_BATCHES]
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    x_test, y_test = read_batch(folder / TEST_BATCH)
    description = {"source": "CIFAR-10 python version (Krizhevsky 2009), cifar-10-batches-py",
                   "folder": str(folder), "classes": [bytes(name).decode("ascii", "replace") for name in names],
                   "pixels": "uint8 0..255, RGB planes"}
    return (x_train, y_train), (x_test, y_test), description
