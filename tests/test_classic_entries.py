"""The classic MNIST and CIFAR-10 entries: each trains two steps on tiny files in the real formats, and the catalog
table says they have not been run rather than showing a number."""
import math
from pathlib import Path

import pytest
import torch

from dataset_files import write_cifar10, write_mnist
from replicate.config import check_config, compose
from replicate.data import load_dataset
from replicate.plan import make_plan
from replicate.train import train_seeds

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = {"caffe_lenet_mnist": "mnist", "keras_mnist_mlp": "mnist", "resnet20_cifar10": "cifar10"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=130, n_test=20)  # one batch of the largest recipe batch (128) and a bit
    write_cifar10(root, per_batch=26, n_test=10)
    return root


@pytest.mark.parametrize("paper", sorted(ENTRIES))
def test_entry_trains_two_steps_on_real_format_files(paper, data_root):
    cfg = compose([f"paper={paper}", f"data.root={data_root}", "train.steps=2", "seeds=1", "logger=none"])
    check_config(cfg)
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    [result] = train_seeds(cfg, data, plan, [0], vectorize=False)
    assert len(result.curve) == 2 and all(math.isfinite(value) for value in result.metrics.values())
    if paper == "keras_mnist_mlp":  # dropout masks come from (seed, step): a second run draws the same
        again = train_seeds(cfg, data, plan, [0], vectorize=False)[0]
        assert all(torch.equal(again.parameters[name], value) for name, value in result.parameters.items())


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
