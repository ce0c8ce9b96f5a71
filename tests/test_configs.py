"""Every catalog entry composes, is valid, states its claims completely, and trains a few steps on CPU."""
import json

import pytest
from omegaconf import OmegaConf

from conftest import run_in_process
from replicate.hydra_setup import available_papers
from replicate.config import compose
from replicate.config_checks import check_config

PAPERS = available_papers()
# recipes whose own batch takes about 20 s a step on one CPU core: the default run steps them on batches of 26 (the
# same code), and `-m slow` at their own batch
SLOW_TO_TRAIN = {"cifar10_fast_resnet9": "batch 512 of a 6.6M-parameter ResNet", "airbench94": "batch 1024"}
EXPECTED = {"mnist1d_logistic", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru",
            "mnist1d_shuffled_logistic", "mnist1d_shuffled_mlp", "mnist1d_shuffled_cnn", "mnist1d_shuffled_gru",
            "sklearn_digits_constant", "sklearn_digits_momentum", "sklearn_digits_nesterov"}
EXPECTED |= {"mnist1d_pool_max", "mnist1d_pool_stride", "mnist1d_pool_none",  # benchmark-pooling.ipynb, 1000 examples
             "mnist1d_double_descent_mlp300", "mnist1d_double_descent_noisy_mlp61",  # deep-double-descent.ipynb
             "mnist1d_double_descent_noisy_mlp300"}


def test_the_catalog_holds_the_fixed_ids():
    assert EXPECTED <= set(PAPERS)


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_config_composes_and_states_its_claims(paper):
    cfg = compose([f"paper={paper}"])
    check_config(cfg)
    assert cfg.paper.id == paper
    assert cfg.paper.source_files, "cite the source files behind the claims"
    for claim in cfg.paper.claims:
        assert claim.location and claim.tolerance_reason
    for field in ("loss_reduction", "weight_decay_form", "momentum_form", "eps_placement"):
        assert cfg.conventions[field], f"conventions.{field} must be stated"


@pytest.fixture(scope="module")
def files_for(tmp_path_factory):
    """data.root and its overrides for an entry: MNIST or CIFAR-10 files in their real formats, one batch of the entry's
    recipe and a bit beyond any held-out validation split, and the test examples it evaluates (theano_logreg_mnist:
    9,600), each size written once; PTB text of an 11-word vocabulary, enough for 20 rows of 3 windows of 20 words
    (zaremba_ptb_small)."""
    from dataset_files import PTB_TEXT, write_cifar10, write_mnist, write_ptb

    roots = {}

    def settings_for(cfg) -> list[str]:
        data = cfg.data
        if data.name == "ptb":
            if "ptb" not in roots:
                roots["ptb"] = tmp_path_factory.mktemp("ptb")
                write_ptb(roots["ptb"], {"train": PTB_TEXT["train"] * 80, "valid": PTB_TEXT["valid"] * 40,
                                         "test": PTB_TEXT["test"] * 4})
            return [f"data.root={roots['ptb']}", "model.input_size=11", "model.output_size=11"]
        if data.name not in ("mnist", "cifar10"):
            return []
        n_train, n_test = data.holdout + cfg.train.batch_size + 2, max(20, data.test_examples or 0)
        key = (data.name, n_train, n_test)
        if key not in roots:
            roots[key] = tmp_path_factory.mktemp(data.name)
            if data.name == "mnist":
                write_mnist(roots[key], n_train=n_train, n_test=n_test)
            else:  # five training files
                write_cifar10(roots[key], per_batch=-(-n_train // 5), n_test=n_test)
        return [f"data.root={roots[key]}"]

    return settings_for


@pytest.mark.parametrize("paper, own_batch", [(paper, True) for paper in PAPERS if paper not in SLOW_TO_TRAIN]
                         + [(paper, False) for paper in SLOW_TO_TRAIN]
                         + [pytest.param(paper, True, marks=pytest.mark.slow) for paper in SLOW_TO_TRAIN])
def test_paper_trains_a_few_steps_and_reports_what_it_measured(paper, own_batch, tmp_path, files_for):
    overrides = [f"paper={paper}"] + ([] if own_batch else ["train.batch_size=26"])
    files = files_for(compose(overrides))
    report = run_in_process([*overrides, "seeds=2", "train.steps=3", "logger=none", *files], tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["paper"]["id"] == paper and len(saved["seeds"]) == 2
    for claim in saved["claims"]:
        per_seed = [seed["metrics"][claim["metric"]] for seed in saved["seeds"]]
        scale = 100 if claim["unit"] == "%" else 1
        assert claim["measured"] == pytest.approx([scale * value for value in per_seed])
        assert claim["verdict"]["verdict"] in ("REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE")
    assert (tmp_path / "report.md").read_text().startswith("# [")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert report["steps"] == 3


def test_a_misspelt_key_is_an_error_not_a_silent_default():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose(["paper=mnist1d_mlp", "train.stepz=5"])
    assert "stepz" in str(error.value)
