"""The dashboard command builds a real wandb-workspaces Workspace (no server) with the panels docs/wandb.md lists."""
import json

import pytest

pytest.importorskip("wandb_workspaces")

from replicate.dashboard import build_workspace, main  # noqa: E402


def panels(workspace, section):
    return next(s for s in workspace.sections if s.name == section).panels


def test_the_workspace_has_grouped_curves_claims_and_verdicts():
    workspace = build_workspace("proj", "team", ["mnist1d_mlp", "sklearn_digits_constant"])
    curves = panels(workspace, "Learning curves")
    accuracy = next(panel for panel in curves if panel.y == ["test_accuracy"])
    assert accuracy.x == "step" and accuracy.groupby_aggfunc == "mean" and accuracy.groupby_rangefunc == "stddev"
    assert any(panel.y == ["train_accuracy"] for panel in curves)  # the sklearn claims are on the training split
    bars = {panel.metrics[0]: panel for panel in panels(workspace, "Final value against the claim")}
    assert set(bars) == {"final/test_accuracy", "final/train_accuracy", "final/train_epoch_loss"}
    assert bars["final/test_accuracy"].metrics[1] == "claim/test_accuracy/value"
    assert [type(panel).__name__ for panel in panels(workspace, "Verdicts")][0] == "WeavePanelSummaryTable"
    runset = workspace.runset_settings
    assert "JobType" in str(runset.filters) and "mnist1d_mlp" in str(runset.filters)
    assert "summary:verdict/test_accuracy" in runset.pinned_columns
    # the request body save() would send is built locally, and names the same panels
    body = workspace._to_model().model_dump_json()
    assert "final/test_accuracy" in body and "stddev" in body and json.loads(body)["project"] == "proj"


def test_best_of_n_claims_aggregate_as_the_maximum(tmp_path, monkeypatch):
    import replicate.dashboard as dashboard

    (tmp_path / "best.yaml").write_text("paper:\n  claims:\n  - {metric: test_accuracy, statistic: best_of_n, direction: higher}\n")
    monkeypatch.setattr(dashboard, "PAPERS_DIR", tmp_path)
    bar = panels(build_workspace("p", None, ["best"]), "Final value against the claim")[0]
    assert bar.groupby_aggfunc == "max"


def test_offline_it_says_what_it_would_create_and_how(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["wandb.project=demo", "mnist1d_cnn"]) == 0
    out = capsys.readouterr().out
    assert "workspace 'replicate: mnist1d_cnn' in project 'demo'" in out
    assert "not saved" in out and "wandb.entity=<your entity> mnist1d_cnn" in out


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["nope_paper"]) == 2
    assert "unknown paper 'nope_paper'; catalog entries:" in capsys.readouterr().err
    assert main(["wandb.projekt=x"]) == 2
    assert "unknown option 'wandb.projekt'; allowed: wandb.project" in capsys.readouterr().err
