"""Conversions proven by training both sides (float64), and `python -m replicate.convert` as a user runs it."""
import json

import pytest

from conftest import run_command, run_in_process
from replicate import conventions
from replicate.conversion_proof import TOLERANCE, verify_conversion

OPTIMIZER_SETUPS = {
    "sgd": {"lr": 0.01, "weight_decay": 1e-3, "grad_clip": 0.5},
    "sgd_momentum": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "grad_clip": 0.5},
    "sgd_nesterov": {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    "adam": {"lr": 0.003, "beta1": 0.9, "beta2": 0.999, "eps": 1e-3, "weight_decay": 1e-3, "grad_clip": 0.5},
    "adamw": {"lr": 0.003, "beta1": 0.9, "beta2": 0.999, "eps": 1e-3, "weight_decay": 1e-2},
    "rmsprop": {"lr": 0.001, "alpha": 0.99, "eps": 1e-3, "weight_decay": 1e-3, "grad_clip_value": 0.05},
    "adagrad": {"lr": 0.01, "eps": 1e-3, "weight_decay": 1e-3, "initial_accumulator_value": 0.1},
}
BATCH, STEPS = 16, 25


def optimizer_name(setup):
    return setup.split("_")[0]


def preset_cases():
    for preset in sorted(conventions.PRESETS):
        for setup in OPTIMIZER_SETUPS:
            for direction in ("to_mean", "from_mean"):
                yield preset, setup, direction


@pytest.mark.parametrize("preset, setup, direction", list(preset_cases()))
def test_every_exact_rule_survives_training_both_sides(preset, setup, direction):
    source, target = (preset, "mean") if direction == "to_mean" else ("mean", preset)
    hparams = dict(OPTIMIZER_SETUPS[setup])
    optimizer = optimizer_name(setup)
    seq_len = 4 if "per_sequence_sum" in (source, target) else None
    try:
        conversion = conventions.convert(hparams, source, target, optimizer=optimizer, batch_size=BATCH, seq_len=seq_len)
    except ValueError as error:  # e.g. an epsilon placement that does not exist for this optimizer
        pytest.skip(f"not applicable: {error}")
    if not conversion.exact:
        assert all(rule.reason for rule in conversion.rules if not rule.exact)
        pytest.skip("inexact, with its reason (checked in test_inexact_rules_really_differ)")
    try:
        proof = verify_conversion(source, target, hparams, optimizer=optimizer, batch_size=BATCH, steps=STEPS,
                                  seq_len=seq_len)
    except Exception as error:  # the convention is described but the trainer cannot run it natively
        if "cannot run" in str(error):
            pytest.skip(str(error))
        raise
    assert proof["passed"], (conversion.rules, proof)
    assert proof["max_abs_diff"] <= TOLERANCE


@pytest.mark.parametrize("source, target, optimizer, hparams, schedule", [
    ("caffe", "mean", "sgd", {"lr": 0.05, "momentum": 0.9}, "multistep"),  # lr inside momentum, lr drop
    ("sklearn", "mean", "adam", {"lr": 0.01, "eps": 1e-8}, "constant"),  # epsilon hat vs epsilon
    ("sum", "mean", "adadelta", {"lr": 1.0, "eps": 1e-6}, "constant"),  # one ε, two accumulators
    ("tf1_rmsprop", "mean", "rmsprop", {"lr": 0.001, "eps": 1e-3}, "constant"),  # ε inside the root
])
def test_inexact_rules_really_differ(source, target, optimizer, hparams, schedule):
    conversion = conventions.convert(hparams, source, target, optimizer=optimizer, batch_size=BATCH,
                                     constant_lr=schedule == "constant")
    assert not conversion.exact
    proof = verify_conversion(source, target, hparams, optimizer=optimizer, batch_size=BATCH, steps=STEPS,
                              schedule=schedule)
    assert proof["max_abs_diff"] > 1e-8 and not proof["passed"]


def test_the_seed_question_is_one_command():
    result = run_command(["replicate.convert", "from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=0.01",
                          "momentum=0.9", "weight_decay=5e-4", "grad_clip=5", "verify=true", "format=json"])
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert set(output) >= {"from", "to", "hparams", "exact", "rules", "warnings", "verify"}
    assert output["hparams"] == pytest.approx({"lr": 0.32, "weight_decay": 5e-4 / 32, "momentum": 0.9, "grad_clip": 5 / 32})
    assert output["exact"] is True
    assert output["verify"]["steps"] == 100 and output["verify"]["dtype"] == "float64"
    assert output["verify"]["passed"] and output["verify"]["max_abs_diff"] <= 1e-12


def test_a_catalog_entry_converts_whole_and_says_why_it_is_not_exact():
    result = run_command(["replicate.convert", "paper=sklearn_digits_nesterov", "to=pytorch", "format=json"])
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["hparams"]["weight_decay"] == pytest.approx(1e-4 / 200)
    assert output["exact"] is False
    (decay,) = [rule for rule in output["rules"] if rule["field"] == "weight_decay"]
    assert "197" in decay["reason"]


def test_batch_size_scaling_is_a_labelled_heuristic_after_conversion():
    result = run_command(["replicate.convert", "from=sum", "to=mean", "batch_size=256", "optimizer=sgd", "lr=0.001",
                          "momentum=0.9", "new_batch_size=1024", "scaling=sqrt", "format=json"])
    assert result.returncode == 0, result.stderr
    scaling = json.loads(result.stdout)["batch_scaling"]
    assert scaling["heuristic"] is True
    assert scaling["hparams"]["lr"] == pytest.approx(0.256 * 2)
    assert all("HEURISTIC" in rule["formula"] for rule in scaling["rules"])


@pytest.mark.parametrize("args, message", [
    (["from=summ", "to=mean", "batch_size=32", "optimizer=sgd", "lr=0.1"], "unknown convention 'summ'"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgdd", "lr=0.1"], "unknown optimizer 'sgdd'"),
    (["from=sum", "to=mean", "optimizer=sgd", "lr=0.1"], "batch_size=… is required"),
    (["from=sum", "to=mean", "batch_size=0", "optimizer=sgd", "lr=0.1"], "batch_size must be a positive integer"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=-0.1"], "lr"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=0.1", "eps=1e-8"], "do not apply to sgd"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=adadelta", "lr=1", "verify=true"], "needs a convertible optimizer"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=0.1", "colour=red"], "unknown option 'colour'"),
    (["paper=nope", "to=mean"], "unknown paper 'nope'"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=0.1", "format=xml"], "unknown format 'xml'"),
    # issue 13: an overflow is not "exact", flags beside paper= are not ignored, a repeated flag is not "the last"
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=1e308"], "lr=1e+308 converts to inf"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=1e308", "format=json"], "converts to inf"),
    (["from=sum", "to=mean", "batch_size=32", "optimizer=sgd", "lr=.nan"], "lr must be a finite number"),
    (["paper=mnist1d_mlp", "to=sum", "optimizer=sgd", "batch_size=7"], "drop optimizer=sgd batch_size=7"),
    (["from=sum", "from=mean", "to=mean", "batch_size=32", "optimizer=sgd", "lr=0.1"], "from= is given twice"),
])
def test_bad_input_is_one_line_with_what_is_allowed(args, message):
    result = run_command(["replicate.convert", *args])
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_trainer_executes_another_convention_natively_and_lands_on_the_same_numbers(tmp_path):
    common = ["paper=mnist1d_mlp", "seeds=2", "train.steps=40", "train.dtype=float64", "logger=none"]
    native = run_in_process(common, tmp_path / "native")
    summed = run_in_process([*common, "train.convention=sum"], tmp_path / "sum")
    assert summed["plan"]["executed_hparams"]["eps"] == pytest.approx(1e-8 * 100)  # Adam: ε_sum = B·ε_mean
    assert summed["plan"]["native_hparams"]["eps"] == 1e-8 and summed["plan"]["conversion_exact"]
    for a, b in zip(native["seeds"], summed["seeds"]):
        for metric in ("train_loss", "test_loss"):
            assert abs(a["metrics"][metric] - b["metrics"][metric]) <= 1e-12
    markdown = (tmp_path / "sum" / "report.md").read_text()
    assert "Conversion rules" in markdown and "eps" in markdown
