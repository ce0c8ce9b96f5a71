"""The data path: MNIST-1D and digits against known properties, and the batch orders against their sources."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from replicate.config import ConfigError, DataConfig
from replicate.data import BatchOrder, load_dataset


def data_config(**fields):
    return OmegaConf.structured(DataConfig(**fields))


@pytest.fixture(scope="module")
def mnist1d():
    return load_dataset(data_config(name="mnist1d", seed=42), dtype=torch.float64, device="cpu")


def test_mnist1d_has_the_published_shapes_and_splits(mnist1d):
    assert mnist1d.x_train.shape == (4000, 40) and mnist1d.y_train.shape == (4000,)
    assert mnist1d.x_test.shape == (1000, 40) and mnist1d.y_test.shape == (1000,)
    assert mnist1d.num_classes == 10


def test_mnist1d_labels_are_balanced(mnist1d):
    # make_dataset draws num_samples // 10 = 500 per class, then shuffles and splits 80/20
    counts = torch.bincount(torch.cat([mnist1d.y_train, mnist1d.y_test]), minlength=10)
    assert counts.tolist() == [500] * 10
    train_counts = torch.bincount(mnist1d.y_train, minlength=10)
    assert train_counts.min() >= 370 and train_counts.max() <= 430


def test_mnist1d_is_standardized_over_the_whole_set(mnist1d):
    everything = torch.cat([mnist1d.x_train, mnist1d.x_test])
    assert abs(everything.mean().item()) < 1e-12
    assert abs(everything.std(unbiased=False).item() - 1) < 1e-12


def test_shuffled_mnist1d_is_the_same_data_under_one_fixed_permutation_of_positions(mnist1d):
    # mnist1d/data.py lines 83–85: one permutation of the 40 positions, for every example of both splits
    shuffled = load_dataset(data_config(name="mnist1d", seed=42, shuffle_seq=True), dtype=torch.float64, device="cpu")
    assert torch.equal(shuffled.y_train, mnist1d.y_train) and torch.equal(shuffled.y_test, mnist1d.y_test)
    # each shuffled column is exactly one original column: find it, then check the map is a permutation
    permutation = [int((mnist1d.x_train - shuffled.x_train[:, [j]]).abs().sum(0).argmin()) for j in range(40)]
    assert sorted(permutation) == list(range(40)) and permutation != list(range(40))
    assert torch.equal(mnist1d.x_train[:, permutation], shuffled.x_train)
    assert torch.equal(mnist1d.x_test[:, permutation], shuffled.x_test)
    assert shuffled.description["shuffle_seq"] and not mnist1d.description["shuffle_seq"]
    assert shuffled.description["cache"] != mnist1d.description["cache"]


def test_mnist1d_sizes_are_the_generators_own_num_samples_and_train_split(mnist1d):
    # benchmark-pooling.ipynb cell 9: num_samples 2000, train_split 0.5 → 1000 train / 1000 test,
    # 200 per class, split after make_dataset's shuffle (mnist1d/data.py lines 70, 79, 91)
    small = load_dataset(data_config(name="mnist1d", seed=42, num_samples=2000, train_split=0.5),
                         dtype=torch.float64, device="cpu")
    assert small.x_train.shape == (1000, 40) and small.x_test.shape == (1000, 40)
    assert torch.bincount(torch.cat([small.y_train, small.y_test]), minlength=10).tolist() == [200] * 10
    assert small.description["num_samples"] == 2000 and small.description["cache"] != mnist1d.description["cache"]
    assert not torch.equal(small.x_train[:1000], mnist1d.x_train[:1000])  # another generation, not a slice

def test_label_noise_redraws_about_that_share_of_training_labels_and_nothing_else(tmp_path):
    # deep-double-descent.ipynb cell 4: each training label redrawn from 0–9 with probability 0.15; on 1000
    # training examples (a small set, for speed) about 0.15 · 9/10 · 1000 = 135 change (binomial sd ≈ 11)
    sizes = dict(name="mnist1d", seed=42, num_samples=2000, train_split=0.5)
    clean = load_dataset(data_config(**sizes), dtype=torch.float64, device="cpu")
    noisy = load_dataset(data_config(**sizes, label_noise=0.15, root=str(tmp_path)), dtype=torch.float64, device="cpu")
    changed = int((noisy.y_train != clean.y_train).sum())
    assert 135 - 5 * 11 < changed < 135 + 5 * 11
    assert torch.equal(noisy.x_train, clean.x_train) and torch.equal(noisy.y_test, clean.y_test)
    again = load_dataset(data_config(**sizes, label_noise=0.15, root=str(tmp_path)), dtype=torch.float64, device="cpu")
    assert torch.equal(again.y_train, noisy.y_train)  # deterministic: make_dataset seeds the stream the noise continues

def test_mnist1d_matches_a_fresh_generation_and_the_cache_is_reused(mnist1d, tmp_path):
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())
    assert np.array_equal(mnist1d.y_train.numpy(), reference["y"])
    assert np.abs(mnist1d.x_test.numpy() - reference["x_test"]).max() == 0
    again = load_dataset(data_config(name="mnist1d", seed=42), dtype=torch.float64, device="cpu")
    assert torch.equal(again.x_train, mnist1d.x_train)


def test_a_damaged_cache_file_is_regenerated_not_trusted(tmp_path, mnist1d):
    load_dataset(data_config(name="mnist1d", root=str(tmp_path)), dtype=torch.float64, device="cpu")
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    cached.write_bytes(b"not an npz file")
    again = load_dataset(data_config(name="mnist1d", root=str(tmp_path)), dtype=torch.float64, device="cpu")
    assert torch.equal(again.x_train, mnist1d.x_train)


def test_digits_are_minmax_scaled_with_no_test_split():
    digits = load_dataset(data_config(name="sklearn_digits", scaling="minmax"), dtype=torch.float64, device="cpu")
    assert digits.x_train.shape == (1797, 64) and digits.x_test is None
    assert digits.x_train.min() == 0 and digits.x_train.max() == 1


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="allowed: mnist1d, sklearn_digits"):
        load_dataset(data_config(name="imagenet"), dtype=torch.float32, device="cpu")


def test_sequential_order_is_the_notebooks_slicing():
    order = BatchOrder(4000, batch_size=100, order="sequential", seeds=[0, 1])
    for step in (0, 39, 40, 6000):
        start = (step * 100) % 4000  # greydanus/mnist1d notebooks/train.py
        assert torch.equal(order.indices(step)[1], torch.arange(start, start + 100))


def test_shuffle_order_gives_each_seed_its_own_permutation_per_epoch():
    order = BatchOrder(10, batch_size=4, order="shuffle", seeds=[0, 1])
    epoch = torch.cat([order.indices(step) for step in range(order.steps_per_epoch)], dim=1)
    assert epoch.shape == (2, 10)
    for row in epoch:
        assert sorted(row.tolist()) == list(range(10))
    assert not torch.equal(epoch[0], epoch[1])


def test_sklearn_order_repeats_sklearn_shuffles_from_one_random_state():
    from sklearn.utils import shuffle

    streams = [np.random.RandomState(0)]
    order = BatchOrder(1797, batch_size=200, order="sklearn_shuffle", seeds=[0], numpy_streams=streams)
    reference_state = np.random.RandomState(0)
    sample_idx = np.arange(1797)
    assert order.steps_per_epoch == 9  # 8 batches of 200 and one of 197
    for epoch in range(3):
        sample_idx = shuffle(sample_idx, random_state=reference_state)  # MLP._fit_stochastic
        batches = [order.indices(epoch * 9 + k)[0] for k in range(9)]
        assert [len(batch) for batch in batches] == [200] * 8 + [197]
        assert np.array_equal(torch.cat(batches).numpy(), sample_idx)


def test_batch_larger_than_the_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="larger than the training set"):
        BatchOrder(100, batch_size=101, order="shuffle", seeds=[0])


def test_a_restored_order_gives_its_indices_on_the_orders_device():
    # a checkpoint is loaded onto the CPU; the restored order must hand the training device its indices
    # at once, not from the next epoch on ("meta" stands for a GPU here: a device other than the CPU)
    saved = BatchOrder(10, batch_size=4, order="shuffle", seeds=[0, 1])
    saved.indices(0)
    restored = BatchOrder(10, batch_size=4, order="shuffle", seeds=[0, 1], device=torch.device("meta"))
    restored.load_state_dict(saved.state_dict())
    assert restored.indices(1).device == torch.device("meta")
