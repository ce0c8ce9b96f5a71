"""Seeds trained together equal seeds trained alone; models vmap cannot batch fall back by themselves."""
import pytest
import torch

from conftest import run_in_process
from replicate.config import compose
from replicate.data import load_dataset
from replicate.plan import make_plan
from replicate.train import can_vectorize, train_seeds

SEEDS = [0, 1, 2]


def batched_and_alone(overrides, dtype, steps):
    cfg = compose([*overrides, f"train.dtype={dtype}", f"train.steps={steps}"])
    data = load_dataset(cfg.data, dtype=getattr(torch, dtype), device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    together = train_seeds(cfg, data, plan, SEEDS, vectorize=True)
    alone = [train_seeds(cfg, data, plan, [seed], vectorize=False)[0] for seed in SEEDS]
    assert [result.path for result in together] == ["batched"] * 3
    return together, alone


def largest_abs(together, alone):
    return max(float((a.parameters[n] - b.parameters[n]).abs().max()) for a, b in zip(together, alone) for n in a.parameters)


def largest_relative_norm(together, alone):
    return max(float((a.parameters[n] - b.parameters[n]).norm() / b.parameters[n].norm())
               for a, b in zip(together, alone) for n in a.parameters)


SETUPS = {
    "adam": ["paper=mnist1d_mlp"],
    "adam, sum convention": ["paper=mnist1d_mlp", "train.convention=sum"],  # Σ over seeds of each seed's sum
    "conv1d": ["paper=mnist1d_cnn"],
    "sgd lr-inside momentum, per-batch L2": ["paper=sklearn_digits_momentum"],
}


@pytest.mark.parametrize("setup", SETUPS)
def test_float64_seeds_together_equal_seeds_alone(setup):
    # not bit-for-bit: batched GEMMs and the tails of fused optimizer kernels round differently (~1e-15)
    together, alone = batched_and_alone(SETUPS[setup], "float64", steps=25)
    assert largest_abs(together, alone) <= 1e-12


@pytest.mark.parametrize("setup", SETUPS)
def test_float32_one_step_agrees_to_float_rounding(setup):
    together, alone = batched_and_alone(SETUPS[setup], "float32", steps=1)
    assert largest_relative_norm(together, alone) <= 1e-6


def test_float32_sgd_stays_together_over_many_steps():
    # Adam amplifies 1-ulp differences of near-zero gradients (m/(√v+ε)), SGD does not
    together, alone = batched_and_alone(SETUPS["sgd lr-inside momentum, per-batch L2"], "float32", steps=50)
    assert largest_relative_norm(together, alone) <= 1e-6


def test_models_vmap_cannot_batch_fall_back_to_the_sequential_loop(tmp_path):
    cfg = compose(["paper=mnist1d_gru"])
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    assert not can_vectorize(cfg.model, data, torch.float32)
    report = run_in_process(["paper=mnist1d_gru", "seeds=2", "train.steps=2", "logger=none"], tmp_path)
    assert report["training_path"] == "sequential"
    assert "training path: sequential" in (tmp_path / "report.md").read_text()
