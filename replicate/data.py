"""Datasets as tensors on the training device, and the order in which a paper walked them.

Data is loaded once, converted once, and batches are taken by index: `x_train[indices]`, with
`indices` of shape (n_seeds, batch) so several seeds can train at once, each in its own order.

    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    order = BatchOrder(len(data.y_train), batch_size=100, order="sequential", seeds=[0, 1])
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from replicate.checkpoint import replace_atomically
from replicate.errors import ConfigError

# the dataset names a config may use (data.name); a new dataset: its name here and its loader in load_dataset
DATASETS = ("mnist1d", "sklearn_digits", "sklearn_iris", "synthetic", "mnist", "cifar10", "ptb")  # the last three: replicate.datasets
DATA_ORDERS = ("sequential", "cycle", "shuffle", "sklearn_shuffle", "file_batches")  # data.order: how BatchOrder walks the training set
SCALINGS = ("none", "minmax")  # data.scaling: feature scaling fitted on the training set


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None  # None when the source evaluates on the training set only
    y_test: torch.Tensor | None
    num_classes: int
    description: dict  # provenance and properties, for the report
    x_valid: torch.Tensor | None = None  # a validation split held out of training (data.holdout), for recipes with one
    y_valid: torch.Tensor | None = None


def cache_dir(root: str | None) -> Path:
    """Where generated data is cached: data.root, else $REPLICATE_CACHE, else ~/.cache/replicate."""
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("REPLICATE_CACHE", Path.home() / ".cache" / "replicate"))


def load_dataset(data_cfg, *, dtype: torch.dtype, device: torch.device | str, paper_id: str | None = None) -> Dataset:
    from replicate.datasets import REAL_DATASETS

    if data_cfg.name in REAL_DATASETS:  # files under data.root; paper_id: for the command that fetches them
        from replicate.datasets.load import load_real_dataset

        data = Dataset(**load_real_dataset(data_cfg, cache_dir(data_cfg.root), dtype=dtype, device=device,
                                           paper_id=paper_id))
        return subtract_mean_image(data) if data_cfg.mean_image else data
    loaders = {"mnist1d": _load_mnist1d, "sklearn_digits": _load_sklearn_digits, "sklearn_iris": _load_sklearn_iris,
               "synthetic": _make_synthetic}
    if data_cfg.name not in loaders:
        raise ConfigError(f"unknown dataset {data_cfg.name!r}; allowed: {', '.join([*loaders, *REAL_DATASETS])}")
    arrays, description = loaders[data_cfg.name](data_cfg)
    x_train, y_train, x_test, y_test = arrays
    if data_cfg.scaling == "minmax":
        x_train, x_test = _minmax_scale(x_train, x_test)
        description["scaling"] = "min-max to [0, 1], fitted on the training set"

    def to_device(x, y):
        if x is None:
            return None, None
        return (torch.as_tensor(x, dtype=dtype, device=device),
                torch.as_tensor(y, dtype=torch.long, device=device))

    x_train, y_train = to_device(x_train, y_train)
    x_test, y_test = to_device(x_test, y_test)
    num_classes = data_cfg.classes if data_cfg.name == "synthetic" else int(y_train.max().item()) + 1
    description.update(n_train=len(y_train), n_test=0 if y_test is None else len(y_test),
                       input_shape=list(x_train.shape[1:]), num_classes=num_classes)
    return Dataset(data_cfg.name, x_train, y_train, x_test, y_test, num_classes, description)


def subtract_mean_image(data: Dataset) -> Dataset:
    """Every split minus the training split's per-pixel mean image: Caffe's `compute_image_mean` (the sum of each pixel
    over the training database divided by the count, BVLC/caffe tools/compute_image_mean.cpp lines 84–104 at 9b89154)
    applied through `mean_file`; He et al. 2016 section 4.2, "per-pixel mean subtracted". Averaged in float64."""
    mean = data.x_train.to(torch.float64).mean(0, keepdim=True).to(data.x_train.dtype)
    splits = {name: None if x is None else x - mean for name, x in (("x_train", data.x_train), ("x_test", data.x_test),
                                                                    ("x_valid", data.x_valid))}
    description = {**data.description, "mean_image": "the training split's per-pixel mean image subtracted from every split"}
    return replace(data, **splits, description=description)


def _minmax_scale(x_train, x_test):
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler().fit(x_train)
    return scaler.transform(x_train), None if x_test is None else scaler.transform(x_test)


def _load_mnist1d(data_cfg):
    """MNIST-1D generated offline by the `mnist1d` package with its default arguments.

    Greydanus & Kobak (ICML 2024); `mnist1d.data.make_dataset(get_dataset_args())` regenerates the
    published `mnist1d_data.pkl` (never `get_dataset`, which tries a download first). Generation
    takes seconds and imports matplotlib, so the arrays are cached as .npz keyed by the arguments.

    data.num_samples, data.train_split: get_dataset_args' num_samples (5000) and train_split (0.8),
    replaced when set. data.label_noise: the double-descent notebook's noisy training labels (_noisy_labels).
    data.shuffle_seq: the "MNIST-1D (shuffle)" variant: make_dataset permutes the 40 positions of
    every example by one permutation, drawn from the generation seed's stream after the examples are
    shuffled (greydanus/mnist1d mnist1d/data.py, `if args.shuffle_seq`, lines 83–85).
    """
    from importlib import metadata

    shuffle_seq = bool(data_cfg.shuffle_seq)
    # numpy's SIMD kernels change the generated float64 values in the last bit (runtime.numerics), so data
    # generated under other kernels are another cache entry, never mixed in
    args_key = {"seed": data_cfg.seed, "mnist1d": metadata.version("mnist1d"),  # no import: it pulls in matplotlib
                "numpy_kernels": numpy_kernels()}
    if shuffle_seq:  # only when set, so the unshuffled data keep their cache name
        args_key["shuffle_seq"] = True
    sizes = {name: getattr(data_cfg, name) for name in ("num_samples", "train_split", "label_noise")
             if getattr(data_cfg, name, None) is not None}
    args_key.update(sizes)  # likewise only when set
    digest = hashlib.sha256(json.dumps(args_key, sort_keys=True).encode()).hexdigest()[:12]
    variant = ("-shuffle" if shuffle_seq else "") + "".join(f"-{name}{value}" for name, value in sizes.items())
    path = cache_dir(data_cfg.root) / f"mnist1d{variant}-seed{data_cfg.seed}-{digest}.npz"
    if path.exists():
        try:
            with np.load(path) as cached:
                arrays = tuple(cached[k] for k in ("x", "y", "x_test", "y_test"))
        except (OSError, ValueError, KeyError):
            arrays = None  # a damaged cache file is regenerated, never trusted
    else:
        arrays = None
    if arrays is None:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.seed = data_cfg.seed
        args.shuffle_seq = shuffle_seq
        for name in ("num_samples", "train_split"):  # the smaller or larger sets of the use-case notebooks
            if name in sizes:
                setattr(args, name, sizes[name])
        generated = make_dataset(args)
        if "label_noise" in sizes:
            generated["y"] = _noisy_labels(generated["y"], sizes["label_noise"])
        arrays = tuple(generated[k] for k in ("x", "y", "x_test", "y_test"))
        _save_atomically(path, dict(zip(("x", "y", "x_test", "y_test"), arrays)))
    description = {
        "source": "mnist1d.data.make_dataset(get_dataset_args()) (package mnist1d), generated offline",
        "generation_seed": data_cfg.seed,
        "shuffle_seq": shuffle_seq,
        **sizes,
        "cache": str(path),
    }
    return arrays, description


def _noisy_labels(y: np.ndarray, probability: float) -> np.ndarray:
    """Training labels with noise as greydanus/mnist1d notebooks/deep-double-descent.ipynb cell 4 adds it:
    each label in turn, with `probability`, is replaced by a uniform draw from 0–9 (so it changes with
    probability·9/10), drawn from numpy's global stream where make_dataset's seeding left it, as the
    notebook's next cell does."""
    noisy = y.copy()
    for index in range(len(noisy)):
        if np.random.random_sample() < probability:
            noisy[index] = np.random.randint(0, 10)
    return noisy


def numpy_kernels() -> list[str]:
    """The SIMD targets numpy dispatches to in this process (those NPY_DISABLE_CPU_FEATURES left on)."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as umath
    features = getattr(umath, "__cpu_features__", {})
    return sorted(name for name in getattr(umath, "__cpu_dispatch__", []) if features.get(name))


def _save_atomically(path: Path, arrays: dict) -> None:
    try:
        replace_atomically(path, lambda file: np.savez(file, **arrays))
    except OSError:
        pass  # caching is an optimisation; an unwritable cache directory only costs time


def _load_sklearn_digits(data_cfg):
    """scikit-learn's bundled 8×8 digits (1797 images, no download). No split: the scikit-learn
    MLP example scores on the data it trained on, so there is no test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    description = {"source": "sklearn.datasets.load_digits() (bundled with scikit-learn)"}
    return (digits.data, digits.target, None, None), description


def _load_sklearn_iris(data_cfg):
    """scikit-learn's bundled iris data (150 flowers, 4 features, 3 classes; no download), unsplit like
    the digits: the scikit-learn MLP example scores on the data it trained on."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    description = {"source": "sklearn.datasets.load_iris() (bundled with scikit-learn)"}
    return (iris.data, iris.target, None, None), description


def _make_synthetic(data_cfg):
    """Gaussian inputs labelled by the argmax of a fixed random linear map (with label noise from the
    inputs' own randomness), so there is a signal to fit. With seq_len, every position has its own label."""
    generator = np.random.default_rng(data_cfg.seed)
    shape = (data_cfg.size, data_cfg.seq_len, data_cfg.features) if data_cfg.seq_len else (data_cfg.size, data_cfg.features)
    x = generator.standard_normal(shape)
    teacher = generator.standard_normal((data_cfg.features, data_cfg.classes))
    y = (x @ teacher + 0.5 * generator.standard_normal((*shape[:-1], data_cfg.classes))).argmax(-1)
    description = {"source": f"synthetic: {data_cfg.size} Gaussian examples, {data_cfg.features} features, "
                             f"{data_cfg.classes} classes from a random linear teacher (seed {data_cfg.seed})"
                             + (f", {data_cfg.seq_len} positions each" if data_cfg.seq_len else "")}
    return (x, y, None, None), description


class BatchOrder:
    """Which training examples each step uses, per seed.

    Orders:
      sequential       batch k starts at (k·B) mod N, no shuffling, same for every seed
                       (greydanus/mnist1d notebooks/train.py: `bix = (step*batch_size) % len(x_train)`);
                       with drop_last, each epoch is the ⌊N/B⌋ whole batches from example 0 and the last
                       N mod B examples are never used (DeepLearningTutorials code/logistic_sgd.py lines 284,
                       347 and 377 at 11c46510: `train_set_x[index * batch_size: (index + 1) * batch_size]`)
      cycle            examples k·B … k·B + B − 1, all mod N: a database read round and round, batches running on
                       across the epoch's end (BVLC/caffe src/caffe/layers/data_layer.cpp `Next`, lines 70–78)
      shuffle          a fresh torch.randperm each epoch from a generator seeded with the seed
      sklearn_shuffle  scikit-learn's MLP: each epoch `sklearn.utils.shuffle` with the model's
                       numpy RandomState (shared with its initialisation), then consecutive batches,
                       the last one short
      file_batches     the training set as consecutive data files of file_batch_size examples, each cut into batches
                       in order, its last one short; the same batches every epoch (cuda-convnet: DataProvider
                       getNumMinibatches = DIVUP(numCases, minibatchSize) per 10,000-image CIFAR batch, src/data.cu
                       line 103, walked in order by src/worker.cu lines 91–97 at dnouri/cuda-convnet e4ac0c1)
    """

    def __init__(self, n: int, *, batch_size: int, order: str, seeds: Sequence[int], drop_last: bool = False,
                 numpy_streams: Sequence[np.random.RandomState] | None = None, device="cpu", file_batch_size: int = 0):
        if batch_size > n:
            raise ConfigError(f"train.batch_size {batch_size} is larger than the training set ({n} examples)")
        self.n, self.batch_size, self.order, self.device = n, batch_size, order, device
        self.drop_last = drop_last and order not in ("cycle", "file_batches")
        self.seeds = list(seeds)
        self.numpy_streams = numpy_streams
        self.generators = [torch.Generator().manual_seed(seed) for seed in self.seeds]
        self._epoch, self._permutations, self._sklearn_order = -1, None, None
        if order == "file_batches":  # (first, end) of each step's batch within an epoch
            if file_batch_size < 1:
                raise ConfigError(f"data.order=file_batches needs data.file_batch_size, the examples per data file "
                                  f"(cuda-convnet's CIFAR-10 batches: 10000), got {file_batch_size}")
            self._windows = [(first, min(first + batch_size, file_start + file_batch_size, n))
                             for file_start in range(0, n, file_batch_size)
                             for first in range(file_start, min(file_start + file_batch_size, n), batch_size)]

    @property
    def steps_per_epoch(self) -> int:
        if self.order == "file_batches":
            return len(self._windows)
        if self.order == "cycle" or not self.drop_last:
            return math.ceil(self.n / self.batch_size)
        return self.n // self.batch_size

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        """Long tensor (n_seeds, batch) of example indices for optimizer step `step` (0-based)."""
        if self.order == "cycle":
            return (step * self.batch_size + torch.arange(self.batch_size, device=self.device)).remainder_(self.n).expand(len(self.seeds), -1)
        if self.order == "sequential":
            start = (step % self.steps_per_epoch if self.drop_last else step) * self.batch_size % self.n
            window = torch.arange(start, min(start + self.batch_size, self.n), device=self.device)
            return window.expand(len(self.seeds), -1)
        if self.order == "file_batches":
            first, end = self._windows[step % len(self._windows)]
            return torch.arange(first, end, device=self.device).expand(len(self.seeds), -1)
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            if epoch != self._epoch + 1:
                raise RuntimeError("batch order must be walked step by step from step 0 (or restored)")
            self._permutations = self._new_permutations().to(self.device)
            self._epoch = epoch
        start = position * self.batch_size
        return self._permutations[:, start:start + self.batch_size]

    def _new_permutations(self) -> torch.Tensor:
        if self.order == "shuffle":
            return torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])
        if self.order == "sklearn_shuffle":
            # MLP._fit_stochastic: sample_idx = shuffle(sample_idx, random_state), and sklearn.utils.shuffle
            # permutes with random_state.shuffle(arange(n)); so each epoch re-permutes the previous order.
            if self._sklearn_order is None:
                self._sklearn_order = [np.arange(self.n) for _ in self.numpy_streams]
            for row, stream in enumerate(self.numpy_streams):
                permutation = np.arange(self.n)
                stream.shuffle(permutation)
                self._sklearn_order[row] = self._sklearn_order[row][permutation]
            return torch.stack([torch.from_numpy(order) for order in self._sklearn_order])
        raise ConfigError(f"unknown data.order {self.order!r}; allowed: {', '.join(DATA_ORDERS)}")

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "permutations": self._permutations,
                "generators": [g.get_state() for g in self.generators],
                "numpy_streams": [_numpy_state_to_tensors(stream.get_state()) for stream in self.numpy_streams or []]}

    def load_state_dict(self, state: dict) -> None:
        self._epoch, self._permutations = state["epoch"], state["permutations"]
        if self._permutations is not None:  # a checkpoint is loaded onto the CPU; the indices live on the device
            self._permutations = self._permutations.to(self.device)
        for generator, saved in zip(self.generators, state["generators"]):
            generator.set_state(saved)
        for stream, saved in zip(self.numpy_streams or [], state["numpy_streams"]):
            stream.set_state(_numpy_state_from_tensors(saved))
        if self.order == "sklearn_shuffle" and self._permutations is not None:
            self._sklearn_order = [row.cpu().numpy().copy() for row in self._permutations]


def _numpy_state_to_tensors(state: tuple) -> dict:
    """RandomState.get_state() as values torch.load(weights_only=True) accepts."""
    kind, keys, position, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_tensors(saved: dict) -> tuple:
    return saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["position"], saved["has_gauss"], saved["cached"]
