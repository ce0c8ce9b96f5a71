"""Early stopping (train.early_stopping): the DeepLearningTutorials rule step for step, each seed stopping on its own
and selecting its best validation point, batched seeds equal to seeds alone, and a resumed run equal to an
uninterrupted one. Also the tutorial's data handling: whole batches from example 0 each epoch, and the first N
validation and test examples."""
import math

import numpy as np
import pytest
import torch

from dataset_files import write_mnist
from replicate.checkpoint import Interrupted
from replicate.config import ConfigError, EarlyStoppingConfig, compose
from replicate.config_checks import check_config
from replicate.data import BatchOrder, Dataset, load_dataset
from replicate.early_stopping import EarlyStopping, PatienceRule
from replicate.hyperparameters import make_plan
from replicate.seed_stack import SeedStack
from replicate.train import train_seeds


def tutorial_loop(validation_losses, *, n_train_batches, n_epochs, patience, patience_increase,
                  improvement_threshold, validation_frequency):
    """lisa-lab/DeepLearningTutorials code/logistic_sgd.py lines 369–432 at 11c46510, transcribed with the
    training and the test score left out: validate_model's mean is the next value of `validation_losses`.
    Returns (best_iter + 1, the iter + 1 at which the loop ended, best_validation_loss), in steps taken."""
    losses = iter(validation_losses)
    best_validation_loss, best_iter, done_looping, epoch, last = np.inf, None, False, 0, None
    while (epoch < n_epochs) and (not done_looping):
        epoch = epoch + 1
        for minibatch_index in range(n_train_batches):
            iter_ = (epoch - 1) * n_train_batches + minibatch_index
            last = iter_
            if (iter_ + 1) % validation_frequency == 0:
                this_validation_loss = next(losses)
                if this_validation_loss < best_validation_loss:
                    if this_validation_loss < best_validation_loss * improvement_threshold:
                        patience = max(patience, iter_ * patience_increase)
                    best_validation_loss = this_validation_loss
                    best_iter = iter_
            if patience <= iter_:
                done_looping = True
                break
    return best_iter + 1, last + 1, best_validation_loss


def run_rule(sequences, rule: PatienceRule, steps: int):
    """Drive EarlyStopping on a real two-seed stack with scripted validation errors (one sequence per seed)."""
    cfg = compose(["paper=theano_logreg_mnist", "model.input_size=4", "model.output_size=3"])
    stack = SeedStack(cfg.model, [0, 1], dtype=torch.float32, device="cpu")
    settings = EarlyStoppingConfig(enabled=True, criterion="error", every=rule.every, patience=rule.patience,
                                   patience_increase=rule.patience_increase,
                                   improvement_threshold=rule.improvement_threshold)
    stopper = EarlyStopping(settings, stack, steps)
    values = [iter(sequence) for sequence in sequences]

    def scripted(stack, x, y):
        return {"error": torch.tensor([next(value) if stopped is None else math.nan
                                       for value, stopped in zip(values, stopper.stopped_at)], dtype=torch.float64)}

    inputs = torch.zeros(1, 4)  # what a validation would read; the scripted errors stand for its result
    data = Dataset("scripted", inputs, torch.zeros(1, dtype=torch.long), None, None, 3, {}, inputs, torch.zeros(1, dtype=torch.long))
    for step in range(steps):
        if stopper.after_step(stack, data, step, scripted):
            break
    return stopper


def test_the_stopping_rule_is_the_tutorials_loop_on_a_hand_run_sequence():
    """patience 6, validation every 3 steps, ×2, threshold 0.995. By hand (steps counted from 0, as `iter`):
    iter 2: 0.5 is a first best, patience max(6, 4) = 6; iter 5: 0.4 < 0.5·0.995, patience max(6, 10) = 10;
    iter 8: 0.3 < 0.398, patience 16; iter 11: 0.3 is no better; iter 14: 0.29 < 0.2985, patience 28;
    iter 17: 0.2899 is better but not by 0.5 %: a new best (step 18), patience stays 28; then nothing better,
    and the loop ends after iter 28, i.e. 29 steps."""
    sequence = [0.5, 0.4, 0.3, 0.3, 0.29, 0.2899] + [0.2899] * 20
    rule = PatienceRule(every=3, patience=6, patience_increase=2.0, improvement_threshold=0.995)
    stopper = run_rule([sequence, sequence], rule, steps=100)
    assert (stopper.best_step, stopper.stopped_at, stopper.best) == ([18, 18], [29, 29], [0.2899, 0.2899])
    assert stopper.patience == [28.0, 28.0]
    assert tutorial_loop(sequence, n_train_batches=5, n_epochs=20, patience=6, patience_increase=2,
                         improvement_threshold=0.995, validation_frequency=3) == (18, 29, 0.2899)


@pytest.mark.parametrize("draw", range(20))
def test_each_seed_stops_where_the_tutorials_loop_would(draw):
    """Random validation sequences, one per seed: the seeds' best steps, stops and best values are the
    transcribed loop's, each on its own."""
    generator = np.random.default_rng(draw)
    # falling, then a noisy plateau: significant, slight and no improvements, and a stop inside the 240 steps
    sequences = [list(np.maximum(0.5 * np.exp(-0.15 * np.arange(60)), 0.1) + 0.01 * generator.random(60)) for _ in range(2)]
    rule = PatienceRule(every=4, patience=10, patience_increase=2.0, improvement_threshold=0.99)
    stopper = run_rule(sequences, rule, steps=4 * 60)
    for m, sequence in enumerate(sequences):
        expected = tutorial_loop(sequence, n_train_batches=8, n_epochs=30, patience=10, patience_increase=2,
                                 improvement_threshold=0.99, validation_frequency=4)
        assert (stopper.best_step[m], stopper.stopped_at[m], stopper.best[m]) == expected and expected[1] < 4 * 60


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=130, n_test=20)
    return root


def short_run(data_root, *overrides):
    """The entry on the tiny files: 100 training images in a seed's own shuffled order (the entry itself draws
    nothing, so its seeds would be one run), validation every 2 steps, patience 6 steps."""
    return compose(["paper=theano_logreg_mnist", f"data.root={data_root}", "data.holdout=30", "data.valid_examples=20",
                    "data.test_examples=20", "data.order=shuffle", "train.batch_size=10", "train.epochs=null",
                    "train.steps=60", "train.early_stopping.every=2", "train.early_stopping.patience=6", "logger=none",
                    *overrides])


def test_batched_seeds_stop_on_their_own_and_equal_the_seeds_alone(data_root, one_thread):
    cfg = short_run(data_root)
    check_config(cfg)
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    together = train_seeds(cfg, data, plan, [0, 1, 2], vectorize=True)
    assert together[0].path == "batched"
    assert len({result.early_stopping["stopped_at"] for result in together}) > 1, "the seeds should stop apart"
    for result in together:
        alone = train_seeds(cfg, data, plan, [result.seed], vectorize=False)[0]
        assert alone.early_stopping == result.early_stopping and alone.metrics == result.metrics
        assert all(torch.equal(alone.parameters[name], value) for name, value in result.parameters.items())
        record = result.early_stopping
        assert record["stopped_at"] < 60 and record["best_step"] <= record["stopped_at"]
        # the metrics are the best point's: its validation error, and the parameters of a run that ends there
        assert result.metrics["valid_error"] == record["best_valid_error"]
        assert result.curve[-1]["step"] <= record["stopped_at"]
        ended = train_seeds(short_run(data_root, f"train.steps={record['best_step']}", "train.early_stopping.enabled=false"),
                            data, plan, [result.seed], vectorize=False)[0]
        assert all(torch.equal(ended.parameters[name], value) for name, value in result.parameters.items())
        assert ended.metrics["test_error"] == result.metrics["test_error"]


def test_a_resumed_run_selects_and_stops_as_an_uninterrupted_one(data_root, tmp_path, one_thread):
    cfg = short_run(data_root)
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    straight = train_seeds(cfg, data, plan, [0, 1], vectorize=True)
    checkpoint = {"path": tmp_path / "seeds.pt", "every": 0, "fingerprint": "test"}
    calls = []

    def stop_after_five_steps():
        calls.append(1)
        return "SIGTERM" if len(calls) >= 5 else None

    with pytest.MonkeyPatch.context() as patch:  # a stop signal after step 5: two validations are in the checkpoint
        patch.setattr("replicate.train.stop_requested", stop_after_five_steps)
        with pytest.raises(Interrupted):
            train_seeds(cfg, data, plan, [0, 1], vectorize=True, checkpoint=checkpoint)
    resumed = train_seeds(cfg, data, plan, [0, 1], vectorize=True, checkpoint=checkpoint)
    for before, after in zip(straight, resumed):
        assert after.early_stopping == before.early_stopping and after.metrics == before.metrics
        assert all(torch.equal(after.parameters[name], value) for name, value in before.parameters.items())
        assert len(after.early_stopping["validations"]) > 2


def test_sequential_order_with_drop_last_starts_each_epoch_at_example_zero():
    """logistic_sgd.py: minibatch_index 0 .. n_train_batches − 1 each epoch; 10 // 3 = 3 batches, example 9 unused."""
    order = BatchOrder(10, batch_size=3, order="sequential", seeds=[0, 1], drop_last=True)
    assert order.steps_per_epoch == 3
    assert [order.indices(step)[1].tolist() for step in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]]
    walked = BatchOrder(10, batch_size=3, order="sequential", seeds=[0])  # the mnist1d walk is unchanged
    assert walked.steps_per_epoch == 4 and walked.indices(3).tolist() == [[9]] and walked.indices(4).tolist() == [[2, 3, 4]]


def test_only_the_first_validation_and_test_examples_are_evaluated(data_root):
    cfg = short_run(data_root)
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    full = load_dataset(short_run(data_root, "data.valid_examples=null", "data.test_examples=null").data,
                        dtype=torch.float32, device="cpu")
    assert len(data.y_valid) == 20 and len(full.y_valid) == 30 and len(data.y_test) == 20
    assert torch.equal(data.x_valid, full.x_valid[:20]) and torch.equal(data.x_test, full.x_test[:20])
    unsplit = short_run(data_root, "data.holdout=0", "data.valid_examples=null").data
    assert torch.equal(full.x_valid, load_dataset(unsplit, dtype=torch.float32, device="cpu").x_train[100:130])  # the last 30
    with pytest.raises(ConfigError, match="data.valid_examples=20 but there is no valid split; set data.holdout=N first"):
        load_dataset(short_run(data_root, "data.holdout=0").data, dtype=torch.float32, device="cpu")
    with pytest.raises(ConfigError, match="data.test_examples=21 but the test split has 20 examples"):
        load_dataset(short_run(data_root, "data.test_examples=21").data, dtype=torch.float32, device="cpu")


@pytest.mark.parametrize("override, message", [
    ("data.holdout=0", "train.early_stopping.enabled=true needs a validation split: set data.holdout=N"),
    ("train.early_stopping.criterion=accuracy", "unknown train.early_stopping.criterion 'accuracy'; allowed: error, loss"),
    ("train.early_stopping.every=0", "train.early_stopping.every must be positive, got 0"),
])
def test_early_stopping_settings_are_checked_in_one_line(data_root, override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(short_run(data_root, override))


def test_the_report_says_where_each_seed_was_measured_and_a_rerun_reads_it_back(data_root, tmp_path):
    from conftest import run_in_process

    overrides = ["paper=theano_logreg_mnist", f"data.root={data_root}", "data.holdout=30", "data.valid_examples=20",
                 "data.test_examples=20", "data.order=shuffle", "train.batch_size=10", "train.epochs=null",
                 "train.steps=60", "train.early_stopping.every=2", "train.early_stopping.patience=6", "seeds=2",
                 "logger=none"]
    report = run_in_process(overrides, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    for seed in report["seeds"]:
        record = seed["early_stopping"]
        assert f"- seed {seed['seed']}: best validation error {100 * record['best_valid_error']:.6f} % at step " \
               f"{record['best_step']}; stopped after step {record['stopped_at']}" in markdown
        assert seed["metrics"]["valid_error"] == record["best_valid_error"]
    assert [claim["measured"] for claim in report["claims"]][1] == [100 * seed["early_stopping"]["best_valid_error"]
                                                                    for seed in report["seeds"]]
    again = run_in_process(overrides, tmp_path)  # the finished seeds are read back from their files
    assert again["seeds"] == report["seeds"]
