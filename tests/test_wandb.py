"""The wandb mirror as the dashboards see it: real wandb, offline, read back from the run files.

Never mocked: each check reads what wandb wrote (tests/wandb_records.py), so a key that is logged under
another name, or not at all, fails here.
"""
import json
import os
import time

import pytest

from conftest import run_command, run_in_process
from wandb_records import summarize_run

OVERRIDES = ["paper=mnist1d_logistic", "seeds=2", "train.steps=50", "logger=wandb"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One short real replication mirrored to wandb: (run dir, report, {seed: offline run read back})."""
    run_dir = tmp_path_factory.mktemp("wandb_run")
    report = run_in_process(OVERRIDES, run_dir)
    runs = [summarize_run(path) for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]
    return run_dir, report, {run["config"]["seed"]: run for run in runs}


def test_one_run_per_seed_grouped_by_paper_and_convention_with_verdict_tags(logged):
    run_dir, report, runs = logged
    assert sorted(runs) == [0, 1]
    assert sorted(run["id"] for run in runs.values()) == sorted(report["wandb_run_ids"])
    verdict = report["claims"][0]["verdict"]["verdict"]
    for run in runs.values():
        assert run["group"] == "mnist1d_logistic/native"
        assert run["job_type"] == "replicate"
        assert run["tags"] == ["mnist1d_logistic", "native", f"verdict:test_accuracy={verdict}"]
        assert all(len(tag) <= 64 for tag in run["tags"])


def test_config_holds_both_hyperparameter_sets_conventions_rules_seed_and_resolved_config(logged):
    _, report, runs = logged
    for seed, run in runs.items():
        config = run["config"]
        assert config["seed"] == seed
        assert config["native_hparams"] == report["plan"]["native_hparams"]
        assert config["executed_hparams"] == report["plan"]["executed_hparams"]
        assert config["native_convention"]["name"] == "native"
        assert config["executed_convention"]["loss_reduction"] == report["plan"]["executed_convention"]["loss_reduction"]
        assert config["conversion_rules"] == report["plan"]["rules"]
        assert config["config"]["train"]["steps"] == 50 and config["config"]["paper"]["id"] == "mnist1d_logistic"
        assert config["claims"][0]["value"] == 32.0 and "verdict" not in config["claims"][0]


def test_summary_holds_the_final_value_the_claim_judged_beside_claimed_value_margin_and_verdict(logged):
    _, report, runs = logged
    claim = report["claims"][0]
    for index, seed in enumerate(report["seeds"]):
        summary = runs[seed["seed"]]["summary"]
        assert summary["final/test_accuracy"] == pytest.approx(claim["measured"][index])  # percent, as claimed
        # define_metric(summary="last"): the curve's last value, as a fraction like the curve itself
        assert summary["test_accuracy"] == {"last": pytest.approx(claim["measured"][index] / 100)}
        assert summary["claim/test_accuracy/value"] == claim["claimed"] == 32.0
        assert summary["claim/test_accuracy/tolerance"] == claim["tolerance"]
        assert summary["claim/test_accuracy/low"] == pytest.approx(claim["claimed"] - claim["tolerance"])
        assert summary["claim/test_accuracy/statistic"] == claim["statistic"]
        assert summary["verdict/test_accuracy"] == claim["verdict"]["verdict"]
        assert summary["verdict/test_accuracy/n"] == 2
        assert summary["verdict/test_accuracy/seeds_needed"] == claim["verdict"]["details"].get("seeds_needed")


def test_curves_are_logged_against_the_step_axis_and_the_plot_as_an_image(logged):
    run_dir, report, runs = logged
    for seed in report["seeds"]:
        history = runs[seed["seed"]]["history"]
        steps = [point["step"] for point in seed["curve"]]
        assert len(steps) > 1 and steps[-1] == 50
        assert [row["step"] for row in history] == [row["_step"] for row in history] == steps
        assert [row["test_accuracy"] for row in history] == pytest.approx([p["test_accuracy"] for p in seed["curve"]])
        assert history[-1]["curves/_type"] == "image-file"  # the report's curves.png, with the final step
        assert history[-1]["verdicts/_type"] == "table-file"
    images = sorted(run_dir.glob("wandb/offline-run-*/files/media/images/curves_*.png"))
    assert len(images) == 2
    assert images[0].read_bytes() == (run_dir / "curves.png").read_bytes()


def test_logging_the_same_run_dir_again_resumes_the_same_runs(logged):
    from replicate.config import compose
    from replicate.log import mirror_to_wandb

    run_dir, report, _ = logged
    stored = json.loads((run_dir / "wandb_ids.json").read_text())
    assert sorted(stored["replicate"].values()) == sorted(report["wandb_run_ids"])
    cfg = compose(["runtime.progress=false", *OVERRIDES])
    assert mirror_to_wandb(cfg, report, run_dir) == report["wandb_run_ids"]
    for run_id in report["wandb_run_ids"]:
        assert len(list(run_dir.glob(f"wandb/offline-run-*/run-{run_id}.wandb"))) == 2  # two sessions, one run
    # another job type gets runs of its own, also kept for the next time
    verify_ids = mirror_to_wandb(cfg, report, run_dir, job_type="verify")
    assert len(verify_ids) == 2 and not set(verify_ids) & set(report["wandb_run_ids"])
    assert json.loads((run_dir / "wandb_ids.json").read_text())["verify"] == {"0": verify_ids[0], "1": verify_ids[1]}
    verify_run = summarize_run(next(run_dir.glob(f"wandb/offline-run-*/run-{verify_ids[0]}.wandb")))
    assert verify_run["job_type"] == "verify" and "verify" in verify_run["tags"]


@pytest.mark.parametrize("service", ["own", "shared"])
def test_an_unreachable_server_costs_one_warning_and_the_runs_go_offline(tmp_path, monkeypatch, service):
    """WANDB_MODE=online with no server: exit 0, the report, one warning line, the runs logged offline.

    "shared": the command inherits $WANDB_SERVICE from a process that already uses wandb (this one), so
    the failed online start keeps its run id busy in that service and the offline run needs a new id.
    """
    import wandb

    monkeypatch.delenv("WANDB_SILENT", raising=False)  # as a user runs it: wandb's own notices would show
    if service == "own":
        monkeypatch.delenv("WANDB_SERVICE", raising=False)
    else:
        wandb.setup()
        assert os.environ.get("WANDB_SERVICE")
    started = time.perf_counter()
    result = run_command(["replicate", "paper=mnist1d_logistic", "seeds=2", "train.steps=20", "logger=wandb",
                          "runtime.progress=false", f"hydra.run.dir={tmp_path}"],
                         env={"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9",
                              "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
                              "WANDB_INIT_TIMEOUT": "3"}, timeout=120)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.md").exists()
    output = (result.stdout + result.stderr).replace(str(tmp_path), "<run dir>")
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "wandb" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("warning: wandb could not start online ("), output
    assert "logging offline" in lines[0]
    report = json.loads((tmp_path / "report.json").read_text())
    runs = [summarize_run(path) for path in tmp_path.glob("wandb/offline-run-*/run-*.wandb")]
    assert sorted(run["id"] for run in runs) == sorted(report["wandb_run_ids"]) and len(runs) == 2
    stored = json.loads((tmp_path / "wandb_ids.json").read_text())["replicate"]
    assert sorted(stored.values()) == sorted(report["wandb_run_ids"])  # a later mirror resumes these runs
    failed_online = [path.name.rsplit("-", 1)[1] for path in tmp_path.glob("wandb/run-*")]
    assert len(failed_online) == 1  # one online attempt
    assert (failed_online[0] in report["wandb_run_ids"]) == (service == "own")  # shared: offline under a new id
    assert elapsed < 60  # one bounded online attempt, not one per seed
