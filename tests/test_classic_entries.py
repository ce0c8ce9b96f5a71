"""The classic MNIST and CIFAR-10 entries (tests/test_configs.py trains each a few steps on tiny real-format files):
dropout seeded per (seed, step), and a catalog table that says they have not been run rather than showing a number."""
import math
from pathlib import Path

import pytest
import torch

from dataset_files import write_cifar10, write_mnist
from replicate.checkpoint import Interrupted
from replicate.config import ConfigError, compose
from replicate.data import load_dataset
from replicate.hyperparameters import make_plan
from replicate.train import train_seeds

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = {"caffe_lenet_mnist": "mnist", "keras_mnist_mlp": "mnist", "resnet20_cifar10": "cifar10", "caffe_cifar10_quick": "cifar10",
           "cifar10_fast_resnet9": "cifar10", "cudaconvnet_cifar10_18pct": "cifar10", "airbench94": "cifar10",
           "zaremba_ptb_small": "ptb"}
ENTRIES["theano_logreg_mnist"] = "mnist"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=130, n_test=20)  # one batch of the largest recipe batch (128) and a bit
    write_cifar10(root, per_batch=26, n_test=10)
    return root


def test_a_resumed_dropout_run_draws_the_masks_of_an_uninterrupted_one(data_root, tmp_path):
    """keras_mnist_mlp, 3 steps straight against 1 step, a checkpoint, then the last 2 in a fresh call: dropout masks
    come from (seed, step), so the resumed steps draw what the uninterrupted ones drew (a generator left where
    model building leaves it would repeat step 0's masks). The model also refuses to batch its seeds."""
    cfg = compose(["paper=keras_mnist_mlp", f"data.root={data_root}", "train.steps=3", "seeds=1", "logger=none"])
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    straight = train_seeds(cfg, data, plan, [0], vectorize=False)[0]
    checkpoint = {"path": tmp_path / "seed0.pt", "every": 1, "fingerprint": "test"}
    with pytest.MonkeyPatch.context() as patch:  # stop after step 1: the checkpoint then holds step 1
        patch.setattr("replicate.train.stop_requested", lambda: "SIGTERM")
        with pytest.raises(Interrupted):
            train_seeds(cfg, data, plan, [0], vectorize=False, checkpoint=checkpoint)
    resumed = train_seeds(cfg, data, plan, [0], vectorize=False, checkpoint=checkpoint)[0]
    assert all(math.isfinite(value) for value in straight.metrics.values())
    assert all(torch.equal(resumed.parameters[name], value) for name, value in straight.parameters.items())
    with pytest.raises(ConfigError, match="trains its seeds one at a time"):
        train_seeds(cfg, data, plan, [0, 1], vectorize=True)


def test_catalog_table_says_not_yet_run_for_unmeasured_entries():
    from replicate.catalog import catalog_table

    rows = {line.split("|")[1].strip(" `"): line for line in catalog_table().splitlines()[2:]}
    for paper in ENTRIES:
        assert "| not yet run here (needs dataset / GPU) | — |" in rows[paper], rows[paper]
    assert "| test accuracy | 0.9897 |" in rows["caffe_lenet_mnist"] and "| 98.4% |" in rows["keras_mnist_mlp"]
    assert "| REPRODUCED |" in rows["mnist1d_cnn"]  # measured records keep their result


def test_readme_catalog_is_the_table_built_from_the_records():
    from replicate.catalog import TABLE_END, TABLE_START, catalog_table

    readme = (ROOT / "README.md").read_text()
    assert readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip() == catalog_table()


def test_mean_image_is_the_training_splits_per_pixel_mean(data_root):
    """data.mean_image subtracts Caffe's compute_image_mean: each pixel's mean over the training split, from every split."""
    cfg = compose(["paper=resnet20_cifar10", f"data.root={data_root}", "data.pixel_divisor=1", "data.mean_image=false"])
    raw = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
    cfg.data.mean_image = True
    centred = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
    mean = raw.x_train.sum(0) / len(raw.y_train)  # as compute_image_mean: sum over the database, divided by the count
    assert torch.allclose(centred.x_train, raw.x_train - mean, rtol=0, atol=1e-12)
    assert torch.allclose(centred.x_test, raw.x_test - mean, rtol=0, atol=1e-12)
    assert mean.std() > 1  # random pixels: a mean image that varies, so a per-channel mean would not pass


def test_micro_batches_see_the_images_the_whole_batch_would(data_root):
    """Augmentation draws for the global batch, then splits it: caffe_lenet_mnist with crop, flip and cutout in
    float64 takes the same step in one batch of 64 or in two micro-batches of 32, up to summation order
    (1e-12; images augmented per micro-batch with the batch's draws would differ by far more)."""
    settings = ["paper=caffe_lenet_mnist", f"data.root={data_root}", "train.steps=1", "train.dtype=float64",
                "augment.crop_padding=2", "augment.flip=true", "augment.cutout=6", "logger=none"]
    results = []
    for accum in (1, 2):
        cfg = compose([*settings, f"train.accum_steps={accum}"])
        data = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
        results.append(train_seeds(cfg, data, make_plan(cfg, n_train=len(data.y_train)), [0], vectorize=False)[0])
    whole, split = results
    for name, value in whole.parameters.items():
        assert torch.allclose(split.parameters[name], value, rtol=0, atol=1e-12), name
