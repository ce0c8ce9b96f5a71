"""Tiny datasets written in the real file formats, for the loaders' tests and the catalog entries' smoke tests.

Each writer lays its files out as the publisher's archive unpacks under a data root and returns the
values it wrote, so a test can compare what a loader reads with what is on disk.

    written = write_mnist(tmp_path, n_train=20, n_test=10)        # <tmp>/MNIST/raw/*-ubyte
    written = write_cifar10(tmp_path, per_batch=4, n_test=4)      # <tmp>/cifar-10-batches-py/
    written = write_ptb(tmp_path)                                 # <tmp>/ptb.{train,valid,test}.txt
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship",
                       b"truck"]  # the order of the real batches.meta


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, the sizes as big-endian uint32, the values."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    content = idx_bytes(array)
    path = Path(f"{path}.gz") if gz else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    return path


def write_mnist(root: Path, *, n_train: int = 20, n_test: int = 10, gz: bool = False, seed: int = 0) -> dict:
    """Random 28 × 28 images and labels covering every digit; {"train"|"t10k": (uint8 images, labels)}."""
    generator = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = generator.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = generator.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(Path(root) / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", images, gz=gz)
        write_idx(Path(root) / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte", labels, gz=gz)
        written[split] = (images, labels)
    return written


class _Python2Pickler(pickle._Pickler):
    """Pickle protocol 2 as Python 2's cPickle wrote the CIFAR-10 batches: str and bytes as 8-bit strings
    (SHORT_BINSTRING / BINSTRING), which Python 3 reads back as bytes under encoding="bytes"."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_python2_string
    dispatch[str] = save_python2_string


def python2_pickle(value) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(value)
    # numpy 2 names its array reconstructor numpy._core; the real batches, pickled long before, say numpy.core
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], batch_label: bytes = b"training batch") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    filenames = [b"image_%d.png" % index for index in range(len(labels))]
    path.write_bytes(python2_pickle({b"batch_label": batch_label, b"labels": list(labels), b"data": data,
                                     b"filenames": filenames}))
    return path


def write_cifar10(root: Path, *, per_batch: int = 4, n_test: int = 4, seed: int = 0) -> dict:
    """Five training batches, a test batch and batches.meta; {"train"|"test": (uint8 N × 3072, labels)}."""
    generator = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    train_data, train_labels = [], []
    for k in range(1, 6):
        data = generator.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(label) for label in generator.integers(0, 10, size=per_batch)]
        write_cifar_batch(folder / f"data_batch_{k}", data, labels, b"training batch %d of 5" % k)
        train_data.append(data)
        train_labels += labels
    test_data = generator.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    test_labels = [int(label) for label in generator.integers(0, 10, size=n_test)]
    write_cifar_batch(folder / "test_batch", test_data, test_labels, b"testing batch 1 of 1")
    (folder / "batches.meta").write_bytes(python2_pickle({b"num_cases_per_batch": per_batch,
                                                          b"label_names": CIFAR10_LABEL_NAMES, b"num_vis": 3072}))
    return {"train": (np.concatenate(train_data), train_labels), "test": (test_data, test_labels)}


PTB_TEXT = {  # Mikolov's format: a space, the words separated by spaces, a space, the newline
    "train": [["the", "cat", "sat", "on", "the", "mat"], ["a", "cat", "is", "<unk>"], ["the", "dog", "ran"]],
    "valid": [["the", "cat", "ran"], ["a", "dog", "sat", "on", "a", "mat"]],
    "test": [["the", "mat", "is", "a", "<unk>"]],
}


def write_ptb(root: Path, sentences: dict | None = None) -> dict:
    """ptb.{train,valid,test}.txt from lists of sentences (PTB_TEXT by default); returns the sentences."""
    sentences = sentences or PTB_TEXT
    for split, lines in sentences.items():
        text = "".join(" " + " ".join(words) + " \n" for words in lines)
        (Path(root) / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    return sentences
