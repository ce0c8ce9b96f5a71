"""Runs that differ only in hyperparameter values train together, each bit for bit the run alone (issue 14)."""
import json

import pytest
import torch

from replicate.config import compose
from replicate.data import load_dataset
from replicate.hyperparameters import make_plan
from replicate.sweep import train_plans_together, why_not_together
from replicate.train import train_seeds

SEEDS = [0, 1]


pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread, as the runs alone get (conftest)


def runs(common, readings):
    cfgs = [compose([*common, *reading]) for reading in readings]
    data = load_dataset(cfgs[0].data, dtype=torch.float32, device="cpu")
    return cfgs, data, [make_plan(cfg, n_train=len(data.y_train)) for cfg in cfgs]


def same(together, alone):
    """Parameters, final metrics, curves and divergence, bit for bit (NaN equal to NaN)."""
    for a, b in zip(together, alone):
        assert a.seed == b.seed and a.diverged_at == b.diverged_at and a.path == b.path
        assert json.dumps([a.metrics, a.curve]) == json.dumps([b.metrics, b.curve])
        for name in b.parameters:
            assert torch.allclose(a.parameters[name], b.parameters[name], rtol=0, atol=0, equal_nan=True), name


@pytest.mark.parametrize("common, readings", [
    # SGD with momentum at three learning rates, the last one diverging: it stops where it would alone
    (["paper=mnist1d_mlp", "optimizer.name=sgd", "optimizer.momentum=0.9", "train.steps=60", "train.eval_every=5"],
     [["optimizer.lr=0.05"], ["optimizer.lr=0.3"], ["optimizer.lr=300"]]),
    # decoupled weight decay on the weights only, at two coefficients and two learning rates
    (["paper=mnist1d_mlp", "optimizer.name=adamw", "optimizer.decay_biases=false", "train.steps=40",
      "conventions.weight_decay_form=decoupled_lr"],
     [["optimizer.lr=0.001", "optimizer.weight_decay=0.01"], ["optimizer.lr=0.003", "optimizer.weight_decay=0.1"]]),
    # scikit-learn's L2 in the loss (the same for both), lr inside the momentum buffer, invscaling schedule
    (["paper=sklearn_iris_invscaling_momentum", "train.epochs=30"], [["optimizer.lr=0.1"], ["optimizer.lr=0.4"]]),
])
def test_runs_trained_together_are_bit_for_bit_the_runs_alone(common, readings):
    cfgs, data, plans = runs(common, readings)
    assert why_not_together(cfgs, plans, data) is None
    together = train_plans_together(cfgs[0], data, plans, SEEDS)
    for cfg, plan, results in zip(cfgs, plans, together):
        same(results, train_seeds(cfg, data, plan, SEEDS, vectorize=True))


def test_a_run_that_diverges_alone_is_reported_as_alone():
    cfgs, data, plans = runs(["paper=mnist1d_mlp", "optimizer.name=sgd", "train.steps=40", "train.eval_every=4"],
                             [["optimizer.lr=0.1"], ["optimizer.lr=1e6"]])
    healthy, diverged = train_plans_together(cfgs[0], data, plans, SEEDS)
    assert all(result.diverged_at is not None for result in diverged)
    assert all(result.diverged_at is None for result in healthy)
    # it stopped at its first learning-curve point after diverging; the other went on to the end
    assert len(diverged[0].curve) < len(healthy[0].curve) and healthy[0].curve[-1]["step"] == 40


@pytest.mark.parametrize("readings, reason", [
    ([["train.batch_size=50"], ["train.batch_size=100"]], "differ in more than the optimizer"),
    ([["optimizer.momentum=0.5"], ["optimizer.momentum=0.9"]], "differ in more than the learning rate"),
    ([["optimizer.weight_decay=0"], ["optimizer.weight_decay=0.1"]], "another parameter grouping"),
    ([["model.name=cnn1d", "model.channels=8", "optimizer.lr=0.01"], ["model.name=cnn1d", "model.channels=8"]], "vmap"),
    ([["train.early_stopping.enabled=true", "optimizer.lr=0.01"], ["train.early_stopping.enabled=true"]], "early stopping"),
])
def test_runs_that_differ_in_more_than_rates_train_apart(readings, reason):
    cfgs, data, plans = runs(["paper=mnist1d_mlp", "optimizer.name=sgd", "optimizer.momentum=0.9", "train.steps=5"],
                             readings)
    assert reason in why_not_together(cfgs, plans, data)
