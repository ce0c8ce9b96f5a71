"""`python -m replicate` as a user runs it: the report, the wandb mirror, and one-line errors."""
import json

import pytest

from conftest import run_command
from wandb_records import summarize_run


def test_a_short_real_run_writes_a_report_whose_numbers_are_the_per_seed_results(tmp_path):
    result = run_command(["replicate", "paper=mnist1d_logistic", "seeds=3", "train.steps=300",
                          "logger=wandb", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and f"report: {tmp_path}" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    claim = report["claims"][0]
    accuracies = [100 * seed["metrics"]["test_accuracy"] for seed in report["seeds"]]
    assert claim["measured"] == pytest.approx(accuracies)
    assert claim["verdict"]["mean"] == pytest.approx(sum(accuracies) / 3)
    assert claim["verdict"]["n"] == 3
    for key in ("native_hparams", "executed_hparams", "native_convention", "executed_convention"):
        assert key in report["plan"]
    assert report["software"]["torch"] and report["hardware"]["threads"] >= 1
    assert f"{claim['verdict']['mean']:.2f}" in (tmp_path / "report.md").read_text()

    # wandb, offline: one run per seed, grouped by paper, with both hyperparameter sets and the finals
    runs = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 3
    logged = [summarize_run(path) for path in runs]
    assert sorted(run["id"] for run in logged) == sorted(report["wandb_run_ids"])
    by_seed = {run["config"]["seed"]: run for run in logged}
    for index, seed in enumerate(report["seeds"]):
        run = by_seed[seed["seed"]]
        assert run["group"] == "mnist1d_logistic/native" and run["job_type"] == "replicate"
        assert run["config"]["native_hparams"]["lr"] == 0.01
        assert run["config"]["executed_hparams"]["lr"] == 0.01
        assert run["summary"]["final/test_accuracy"] == pytest.approx(claim["measured"][index])
        assert run["summary"]["verdict/test_accuracy"] == claim["verdict"]["verdict"]
        assert [row["_step"] for row in run["history"]] == [point["step"] for point in seed["curve"]]


def test_logger_none_writes_no_wandb_files(tmp_path):
    result = run_command(["replicate", "paper=mnist1d_logistic", "seeds=1", "train.steps=5", "logger=none",
                          f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "wandb").exists()


@pytest.mark.parametrize("args, message", [
    (["paper=mnist1d_transformer"], "unknown paper 'mnist1d_transformer'; available: "),  # then every entry, by name
    (["optimizer.lr=-1"], "optimizer.lr must be positive"),
    (["seeds=0"], "seeds must be positive"),
    (["train.batch_size=5000"], "larger than the training set"),
    (["train.convention=caffee"], "caffee"),
    (["device=tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    result = run_command(["replicate", *args, "logger=none", "train.steps=2", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_override_is_hydras_own_error_without_traceback(tmp_path):
    result = run_command(["replicate", "train.stepz=5", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0
    assert "stepz" in result.stderr and "Traceback" not in result.stderr
