"""`python -m replicate.audit`: every reading replicated through the ordinary path, ranked, and readings
that are the same update reported as one class; bad readings are one-line errors."""
import json

import pytest

from conftest import run_command
from replicate.audit import AuditError, parse_arguments
from wandb_records import summarize_run


def test_the_reading_the_source_actually_ran_is_found(tmp_path):
    # scikit-learn 0.20's example printed "inv-scaling with momentum" for a run with Nesterov's momentum:
    # only that reading gives its printed loss to six digits (scikit-learn itself agrees:
    # tests/test_sklearn_digits.py compares this trainer with live scikit-learn runs)
    result = run_command(["replicate.audit", "paper=sklearn_iris_invscaling_momentum", "logger=wandb", "format=json",
                          f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    audit = json.loads(result.stdout)
    assert audit == json.loads((tmp_path / "audit.json").read_text())
    assert audit["recommended"] == {"optimizer.nesterov": "true"} and audit["distinguishable"] is True
    by_setting = {entry["settings"]["optimizer.nesterov"]: entry for entry in audit["readings"]}
    assert by_setting["true"]["rank"] == 1 and not by_setting["true"]["excluded"]
    assert by_setting["false"]["excluded"] and by_setting["false"]["rank"] == 2
    loss = {key: next(c for c in entry["claims"] if c["name"] == "training set loss") for key, entry in by_setting.items()}
    assert loss["true"]["verdict"]["verdict"] == "REPRODUCED" and loss["false"]["verdict"]["verdict"] == "NOT_REPRODUCED"
    assert f"{loss['false']['measured'][0]:.6f}" == "0.504185"  # what the label's reading prints instead
    assert "recommended: `optimizer.nesterov=true`" in (tmp_path / "audit.md").read_text()
    # each reading is its own replication, with its own wandb group
    groups = set()
    for entry in audit["readings"]:
        report = json.loads((tmp_path / entry["run_dir"].split("/")[-1] / "report.json").read_text())
        assert report["config"]["optimizer"]["nesterov"] is (entry["settings"]["optimizer.nesterov"] == "true")
        (run_file,) = (tmp_path / entry["run_dir"].split("/")[-1]).glob("wandb/offline-run-*/run-*.wandb")
        groups.add(summarize_run(run_file)["group"])
    assert groups == {"sklearn_iris_invscaling_momentum/audit/nesterov=true",
                      "sklearn_iris_invscaling_momentum/audit/nesterov=false"}
    # and compare reads them side by side
    compared = run_command(["replicate.compare", str(tmp_path), "format=json"])
    assert compared.returncode == 0, compared.stderr
    assert len({row["run_dir"] for row in json.loads(compared.stdout)}) == 2


def test_readings_that_are_the_same_update_are_one_class_trained_once(tmp_path):
    # lr inside or outside the momentum buffer at a constant lr: replicate.conventions converts one into
    # the other exactly, so the claims cannot tell them apart, and the audit must not pretend they can
    result = run_command(["replicate.audit", "paper=sklearn_digits_momentum", "logger=none", "format=json",
                          f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    audit = json.loads(result.stdout)
    assert audit["distinguishable"] is False and audit["recommended"] is None
    assert audit["classes"] == [[{"conventions.momentum_form": "lr_inside"}, {"conventions.momentum_form": "lr_outside"}]]
    assert {entry["rank"] for entry in audit["readings"]} == {1}
    assert len(list(tmp_path.glob("reading-*/report.json"))) == 1  # trained once for the class
    assert "train identically" in audit["reason"]


def test_readings_that_differ_are_ranked_on_the_command_line(tmp_path):
    # the loss reduction read as a sum with the same lr is a different update: two classes, and the
    # paper's own reading (mean) ranks first against the published digits
    result = run_command(["replicate.audit", "paper=sklearn_digits_constant", "logger=none", "train.epochs=3",
                          "readings.conventions.loss_reduction=mean,sum", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["distinguishable"] is True and len(audit["classes"]) == 2
    assert [entry["settings"] for entry in audit["readings"]] == [{"conventions.loss_reduction": "mean"},
                                                                    {"conventions.loss_reduction": "sum"}]
    assert "distinguishable: yes" in result.stdout and "rank" in result.stdout


def test_readings_that_differ_only_in_the_learning_rate_train_together_each_as_alone(tmp_path):
    # issue 14: one batched computation for the three readings, each reading's seeds bit for bit what the
    # audit trains with batch=false, one replication at a time
    common = ["replicate.audit", "paper=mnist1d_mlp", "seeds=2", "train.steps=20", "logger=none", "format=json",
              "readings.optimizer.lr=0.001,0.003,0.01"]
    audits = {}
    for batch in ("true", "false"):
        result = run_command([*common, f"batch={batch}", f"hydra.run.dir={tmp_path / batch}"])
        assert result.returncode == 0, result.stderr
        audits[batch] = json.loads(result.stdout)
    assert audits["true"]["trained_together"] == [[{"optimizer.lr": lr} for lr in ("0.001", "0.003", "0.01")]]
    assert audits["false"]["trained_together"] == []
    assert "trained together as one batched computation" in (tmp_path / "true" / "audit.md").read_text()
    for entry in audits["false"]["readings"]:
        name = entry["run_dir"].split("/")[-1]
        alone, together = (json.loads((tmp_path / batch / name / "report.json").read_text()) for batch in ("false", "true"))
        assert json.dumps(together["seeds"]) == json.dumps(alone["seeds"])  # metrics and curves, bit for bit
    assert [e["rank"] for e in audits["true"]["readings"]] == [e["rank"] for e in audits["false"]["readings"]]


def test_one_seed_readings_train_together_under_the_fingerprint_of_their_sequential_runs(tmp_path):
    # one seed trains on the sequential path alone: its saved result must carry that run's fingerprint,
    # or replicate_paper would refuse it as another configuration's
    result = run_command(["replicate.audit", "paper=sklearn_digits_constant", "logger=none", "train.epochs=3",
                          "format=json", "readings.optimizer.lr=0.1,0.2", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trained_together"] == [[{"optimizer.lr": "0.1"}, {"optimizer.lr": "0.2"}]]


@pytest.mark.parametrize("args, message", [
    (["paper=sklearn_digits_momentum", "readings.optimizer.lrr=0.1,0.2"], "no config key 'optimizer.lrr'"),
    (["paper=sklearn_digits_momentum", "readings.optimizer.nesterov=true"], "set it directly with optimizer.nesterov=true"),
    (["paper=sklearn_digits_momentum", "readings.conventions.momentum_form=lr_inside,sideways"], "sideways"),
    (["paper=sklearn_digits_momentum", "format=yaml"], "unknown format 'yaml'"),
    (["paper=mnist1d_mlp"], "declares no unstated settings"),
    (["paper=sklearn_digits_momentum", "optimizer.nesterov=true", "readings.optimizer.nesterov=false,true"],
     "both set and listed as a reading"),
])
def test_bad_readings_are_one_line_errors(tmp_path, args, message):
    result = run_command(["replicate.audit", *args, "logger=none", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_describes_the_command():
    result = run_command(["replicate.audit", "--help"])
    assert result.returncode == 0 and "readings.<key>" in result.stdout and "Example" in result.stdout


def test_readings_parse_with_hydras_grammar():
    overrides, readings, options = parse_arguments(["paper=x", "seeds=3", "readings.optimizer.nesterov=false,true",
                                                    "readings.conventions.loss_reduction=mean,sum", "format=json"])
    assert overrides == ["paper=x", "seeds=3"] and options["format"] == "json"
    assert readings == {"optimizer.nesterov": ["false", "true"], "conventions.loss_reduction": ["mean", "sum"]}
    with pytest.raises(AuditError, match="given twice"):
        parse_arguments(["readings.seeds=1,2", "readings.seeds=3,4"])
    with pytest.raises(AuditError, match="sweep outside readings"):
        parse_arguments(["seeds=1,2"])
