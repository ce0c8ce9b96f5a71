"""MNIST in the IDX files LeCun distributes, laid out as torchvision downloads them:
`<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, each plain or gzipped (`.gz`).

The IDX format (yann.lecun.com/exdb/mnist, "FILE FORMATS FOR THE MNIST DATABASE"): a 4-byte magic
number `0x00 0x00 <type> <ndim>` (type 0x08 = unsigned byte), then `ndim` dimension sizes as 32-bit
big-endian integers, then the values in C order. Images are `0x00000803` (N, 28, 28), labels
`0x00000801` (N,).

    (x_train, y_train), (x_test, y_test), description = read(root)   # uint8 (N, 1, 28, 28), int64 (N,)
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from replicate.datasets import FormatError
from replicate.datasets.download import Download

NUM_CLASSES = 10
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 and 1 dimensions
FILES = {split: (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte") for split in ("train", "t10k")}
# torchvision/datasets/mnist.py (pytorch/vision @ 01977a18), `mirrors` and `resources`: the four .gz
# files and their md5 sums; the mirrors are tried in turn
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MD5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
       "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
       "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
       "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
DOWNLOADS = [Download(urls=[mirror + name for mirror in MIRRORS], md5=md5, path=f"MNIST/raw/{name}")
             for name, md5 in MD5.items()]


def raw_dir(root: Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def find(root: Path, name: str) -> Path | None:
    """The .gz (the file whose md5 is published, and what data.download=true writes), else the plain file
    (torchvision keeps both after extracting them; either holds the same data)."""
    for candidate in (raw_dir(root) / f"{name}.gz", raw_dir(root) / name):
        if candidate.is_file():
            return candidate
    return None


def read(root: Path):
    splits = []
    for split, (images_name, labels_name) in FILES.items():
        images = read_idx(_require(root, images_name), magic=IMAGES_MAGIC)
        labels = read_idx(_require(root, labels_name), magic=LABELS_MAGIC)
        if len(images) != len(labels):
            raise FormatError(f"{raw_dir(root)}: {images_name} holds {len(images)} images but {labels_name} "
                              f"{len(labels)} labels")
        if labels.size and labels.max() >= NUM_CLASSES:
            raise FormatError(f"{_require(root, labels_name)} holds label {labels.max()}; MNIST labels are 0..9")
        splits.append((images[:, None], labels.astype(np.int64)))  # (N, 1, 28, 28): one grey channel
    description = {"source": "MNIST IDX files (LeCun, Cortes & Burges), torchvision's layout",
                   "files": {name: str(_require(root, name)) for names in FILES.values() for name in names},
                   "pixels": "uint8 0..255, white digit on black"}
    return splits[0], splits[1], description


def _require(root: Path, name: str) -> Path:
    path = find(root, name)
    if path is None:
        raise FormatError(f"MNIST file {name} (or {name}.gz) not found in {raw_dir(root)}")
    return path


def read_idx(path: Path, *, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes, checked: magic number, dimensions, and a length that matches them."""
    try:
        content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError; a cut .gz is an EOFError
        raise FormatError(f"{path} is damaged: cannot decompress it ({error})") from None
    if len(content) < 4:
        raise FormatError(f"{path} is damaged: {len(content)} bytes, shorter than the IDX header")
    found = struct.unpack(">I", content[:4])[0]
    if found != magic:
        raise FormatError(f"{path} is damaged or not this IDX file: magic number {found:#010x}, expected {magic:#010x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(content) < header:
        raise FormatError(f"{path} is damaged: {len(content)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack(f">{ndim}I", content[4:header])
    expected = header + int(np.prod(shape))
    if len(content) != expected:
        raise FormatError(f"{path} is damaged: {len(content)} bytes, but its header {list(shape)} needs {expected}")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable, for torch
