"""Nothing finished is lost: kill and resume, divergence as a result, determinism, one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_command, run_in_process

SHORT = ["paper=mnist1d_logistic", "seeds=2", "train.steps=3000", "checkpoint.every=100", "logger=none",
         "runtime.progress=false"]


def comparable(report):
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    return {"seeds": [{k: seed[k] for k in ("seed", "metrics", "diverged_at", "curve")} for seed in report["seeds"]],
            "claims": [{k: claim[k] for k in ("measured", "verdict")} for claim in report["claims"]]}


def test_a_run_killed_mid_seed_resumes_to_the_same_report(tmp_path):
    interrupted, uninterrupted = tmp_path / "interrupted", tmp_path / "uninterrupted"
    command = [sys.executable, "-m", "replicate", *SHORT, f"hydra.run.dir={interrupted}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = interrupted / "checkpoints" / "seeds-0-1.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run ended before its first checkpoint; make it longer"
    assert not (interrupted / "report.json").exists() and not list(interrupted.glob("seeds/*.json"))
    saved = torch.load(checkpoint, weights_only=True)
    assert 0 < saved["step"] < 3000

    resumed = run_command(["replicate", *SHORT, f"hydra.run.dir={interrupted}"])
    assert resumed.returncode == 0, resumed.stderr
    assert run_command(["replicate", *SHORT, f"hydra.run.dir={uninterrupted}"]).returncode == 0
    a = json.loads((interrupted / "report.json").read_text())
    b = json.loads((uninterrupted / "report.json").read_text())
    assert comparable(a) == comparable(b)  # bit-identical metrics and curves on CPU
    assert not checkpoint.exists()


def test_finished_seeds_are_skipped_and_a_different_configuration_is_refused(tmp_path):
    first = run_in_process(["paper=mnist1d_logistic", "seeds=2", "train.steps=30", "logger=none"], tmp_path)
    seed_files = sorted(tmp_path.glob("seeds/seed-*.json"))
    assert [path.name for path in seed_files] == ["seed-0.json", "seed-1.json"]
    stamps = [path.stat().st_mtime_ns for path in seed_files]
    again = run_in_process(["paper=mnist1d_logistic", "seeds=2", "train.steps=30", "logger=none"], tmp_path)
    assert [path.stat().st_mtime_ns for path in seed_files] == stamps  # not retrained
    assert comparable(again) == comparable(first)
    result = run_command(["replicate", "paper=mnist1d_logistic", "seeds=2", "train.steps=31", "logger=none",
                          f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 2 and "different configuration" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupted_checkpoint_is_a_clear_error_never_a_wrong_result(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "seeds-0-1.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x80\x02 not a checkpoint")
    result = run_command(["replicate", *SHORT, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 2
    assert "cannot be read" in result.stderr and "delete it" in result.stderr and "Traceback" not in result.stderr


def test_a_checkpoint_of_an_older_layout_is_refused_in_one_line(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "seeds-0-1.pt"
    checkpoint.parent.mkdir(parents=True)
    # no "format": older; the layout is checked before the fingerprint, which older versions computed otherwise
    torch.save({"fingerprint": "0123456789abcdef", "step": 100, "epoch_loss": torch.zeros(2)}, checkpoint)
    result = run_command(["replicate", *SHORT, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 2, result.stderr
    assert "another version of replicate" in result.stderr and "Traceback" not in result.stderr


def test_same_seed_twice_gives_bit_identical_metrics(tmp_path):
    overrides = ["paper=mnist1d_mlp", "seeds=2", "train.steps=200", "logger=none"]
    first = run_in_process(overrides, tmp_path / "a")
    second = run_in_process(overrides, tmp_path / "b")
    assert comparable(first) == comparable(second)


def test_a_diverging_seed_is_a_finding_and_the_others_carry_on(tmp_path):
    # SGD at lr 3 on the MNIST-1D MLP: seed 0 trains, seeds 1-3 blow up within ~20 steps
    overrides = ["paper=mnist1d_mlp", "optimizer.name=sgd", "optimizer.lr=3", "train.steps=300", "logger=none",
                 "train.dtype=float64"]
    report = run_in_process([*overrides, "seeds=4"], tmp_path / "four")
    diverged = [seed["diverged_at"] for seed in report["seeds"]]
    assert diverged[0] is None and all(step is not None and step < 300 for step in diverged[1:])
    verdict = report["claims"][0]["verdict"]
    assert verdict["verdict"] == "NOT_REPRODUCED" and verdict["rule"] == "most_diverged" and verdict["diverged"] == 3
    saved = json.loads((tmp_path / "four" / "report.json").read_text())
    assert saved["claims"][0]["measured"][1] is None  # strict JSON: a diverged value is null
    alone = run_in_process([*overrides, "seed=0"], tmp_path / "alone")
    assert report["seeds"][0]["metrics"]["train_loss"] == pytest.approx(alone["seeds"][0]["metrics"]["train_loss"], rel=1e-9)


def user_paper(tmp_path, name, text):
    (tmp_path / "paper").mkdir(exist_ok=True)
    (tmp_path / "paper" / f"{name}.yaml").write_text(text)
    return ["--config-dir", str(tmp_path), f"paper={name}"]


def logistic_config(**replace):
    text = (ROOT / "conf" / "paper" / "mnist1d_logistic.yaml").read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


BAD_INPUTS = [
    (["paper=nope"], "unknown paper 'nope'; available:"),
    (["train.convention=summ"], "unknown convention 'summ'"),
    (["optimizer.name=sgdd"], "unknown optimizer 'sgdd'; allowed:"),
    (["data.name=imagenet"], "unknown dataset 'imagenet'; allowed:"),
    (["model.name=resnet50"], "unknown model 'resnet50'; allowed:"),
    (["optimizer.lr=0"], "optimizer.lr must be positive"),
    (["optimizer.lr=-0.1"], "optimizer.lr must be positive"),
    (["train.batch_size=0"], "train.batch_size must be positive"),
    (["train.channels_last=true"], "train.channels_last=true needs a model with 2-D convolutions"),
    (["train.batch_size=-8"], "train.batch_size must be positive"),
    (["train.steps=0"], "train.steps must be positive"),
    (["train.steps=-5"], "train.steps must be positive"),
    (["seeds=0"], "seeds must be positive"),
    (["seeds=-1"], "seeds must be positive"),
    (["train.batch_size=4001"], "larger than the training set (4000 examples)"),
    (["optimizer.momentum=1.5"], "optimizer.momentum must be in [0, 1)"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay must be >= 0"),
    (["device=tpu"], "unknown device 'tpu'; allowed: auto, cpu, cuda"),
    (["logger=tensorboard"], "unknown logger 'tensorboard'; allowed: wandb, none"),
    (["train.dtype=float16"], "unknown train.dtype 'float16'; allowed: float32, float64"),
    (["checkpoint.every=-1"], "checkpoint.every must be >= 0"),
    (["data.root=/nonexistent/mnist1d"], "data.root /nonexistent/mnist1d is not a directory"),
    (["seed=-3"], "seed must be >= 0"),
    (["conventions.momentum_form=sideways"], "sideways"),
]


def run_main(argv, monkeypatch, capsys):
    """`python -m replicate <argv>` in this process (the same entry point, without a new interpreter)."""
    from replicate.cli import main

    monkeypatch.setattr(sys, "argv", ["replicate", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    captured = capsys.readouterr()
    return exit_.value.code, captured.err


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_is_one_line_naming_what_is_allowed(tmp_path, monkeypatch, capsys, args, message):
    code, stderr = run_main(["logger=none", "train.steps=2", f"hydra.run.dir={tmp_path / 'run'}", *args],
                            monkeypatch, capsys)
    assert code == 2, stderr
    assert stderr.startswith("error: ") and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


@pytest.mark.parametrize("case, text, message", [
    ("claim without a value", logistic_config(**{"      value: 32\n": ""}), "missing value(s) for paper.claims[0].value"),
    ("claim without a statistic", logistic_config(**{"      statistic: single_run\n": ""}), "paper.claims[0].statistic"),
    ("malformed YAML", "paper:\n  id: [mine\n", "is not valid YAML at line"),
    ("unknown statistic", logistic_config(**{"statistic: single_run": "statistic: luckiest"}), "unknown statistic"),
])
def test_mistakes_in_a_users_own_paper_config_are_one_line(tmp_path, case, text, message):
    result = run_command(["replicate", *user_paper(tmp_path, "mine", text), "logger=none", "train.steps=2",
                          f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode != 0, case
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_unknown_key_in_a_users_paper_config_is_hydras_error(tmp_path):
    text = logistic_config(**{"  batch_size: 100": "  batch_size: 100\n  batchsize: 100"})
    result = run_command(["replicate", *user_paper(tmp_path, "mine", text), "logger=none",
                          f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode != 0 and "batchsize" in result.stderr and "Traceback" not in result.stderr


def test_an_unwritable_output_directory_is_one_line(tmp_path):
    result = run_command(["replicate", "logger=none", "hydra.run.dir=/proc/replicate-cannot-write"])
    assert result.returncode == 2 and "cannot write the output directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
