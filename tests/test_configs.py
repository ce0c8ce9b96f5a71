"""Every catalog entry composes, is valid, states its claims completely, and trains a few steps on CPU."""
import json

import pytest
from omegaconf import OmegaConf

from conftest import run_in_process
from replicate.hydra_setup import available_papers
from replicate.config import compose
from replicate.config_checks import check_config

PAPERS = available_papers()
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
def tiny_files(tmp_path_factory):
    """MNIST and CIFAR-10 files in their real formats, enough for the largest recipe batch (128); PTB text of an
    11-word vocabulary, enough for 20 rows of 3 windows of 20 words (zaremba_ptb_small)."""
    from dataset_files import PTB_TEXT, write_cifar10, write_mnist, write_ptb

    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=130, n_test=20)
    write_cifar10(root, per_batch=26, n_test=10)
    write_ptb(root, {"train": PTB_TEXT["train"] * 80, "valid": PTB_TEXT["valid"] * 40, "test": PTB_TEXT["test"] * 4})
    return root


def tiny_file_settings(paper: str, root) -> list[str]:
    """The overrides that point an entry at the tiny files: their root, and for PTB their 11-word vocabulary."""
    data = compose([f"paper={paper}"]).data.name
    vocabulary = ["model.input_size=11", "model.output_size=11"] if data == "ptb" else []
    return [f"data.root={root}", *vocabulary] if data in ("mnist", "cifar10", "ptb") else []


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_trains_a_few_steps_and_reports_what_it_measured(paper, tmp_path, tiny_files):
    files = tiny_file_settings(paper, tiny_files)
    report = run_in_process([f"paper={paper}", "seeds=2", "train.steps=3", "logger=none", *files], tmp_path)
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
