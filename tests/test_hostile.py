"""Issue 13's hostile cases: two runs into one directory, changed settings on resume, stop signals, full
disks, damaged seed files, permissions, and bad claims, each one line and never a wrong or lost result."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_command, run_in_process
from test_reliability import comparable, logistic_config, run_main, user_paper

TINY = ["paper=mnist1d_logistic", "seeds=2", "train.steps=30", "logger=none", "runtime.progress=false"]
# long enough that a signal sent at the first checkpoint arrives while training, short enough for the suite
STOPPABLE = [*TINY[:2], "train.steps=1000", "checkpoint.every=50", *TINY[3:]]


def start(args, run_dir, **popen):
    return subprocess.Popen([sys.executable, "-m", "replicate", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for(path, process, seconds=180):
    deadline = time.time() + seconds
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared; {process.poll()=}"


def one_line(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- one list of result-neutral settings -------------------------------------------------------------------

OVERRIDES = [("checkpoint.every=7", True), ("runtime.threads=2", True), ("device=cpu", True), ("logger=none", True),
             ("train.batched=false", True), ("seeds=3", True), ("wandb.project=other", True),
             ("optimizer.lr=0.02", False), ("train.eval_every=3", False), ("train.dtype=float64", False),
             ("data.drop_last=true", False), ("train.deterministic=true", False)]


@pytest.mark.parametrize("override, neutral", OVERRIDES)
def test_fingerprint_deviations_and_combine_agree_on_what_is_neutral(override, neutral):
    from replicate.replication import overridden_setup
    from replicate.compare import CompareError, check_poolable
    from replicate.config import compose
    from replicate.identity import fingerprint
    from omegaconf import OmegaConf

    execution = {"device": "cpu", "threads": 1}
    base, changed = compose(["paper=mnist1d_logistic"]), compose(["paper=mnist1d_logistic", override])
    same_numbers = fingerprint(base, execution) == fingerprint(changed, execution)
    not_a_deviation = overridden_setup([override]) == []
    reports = [(ROOT / name / "report.json", {"claims": [], "config": OmegaConf.to_container(cfg, resolve=True)})
               for name, cfg in (("a", base), ("b", changed))]
    try:
        check_poolable(reports)
        poolable = True
    except CompareError:
        poolable = False
    assert same_numbers == not_a_deviation == poolable == neutral


def test_the_resolved_execution_is_in_the_fingerprint():
    from replicate.config import compose
    from replicate.identity import execution_identity, fingerprint

    auto, cpu = compose(["device=auto"]), compose(["device=cpu"])
    one = execution_identity(torch.device("cpu"), 1, auto, vectorize=True)
    assert one["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert fingerprint(auto, one) == fingerprint(cpu, execution_identity(torch.device("cpu"), 1, cpu, vectorize=True))
    for other in (execution_identity(torch.device("cpu"), 2, auto, vectorize=True),
                  execution_identity(torch.device("cpu"), 1, auto, vectorize=False),
                  {**one, "cpu_capability": "AVX2" if one["cpu_capability"] != "AVX2" else "AVX512"}):
        assert fingerprint(auto, other) != fingerprint(auto, one)


def test_a_seed_of_another_thread_count_is_refused_and_auto_then_cpu_is_reused(tmp_path):
    from replicate.config import ConfigError

    run_in_process([*TINY, "runtime.threads=1", "device=auto"], tmp_path)
    stamps = [path.stat().st_mtime_ns for path in sorted(tmp_path.glob("seeds/*.json"))]
    with pytest.raises(ConfigError, match="different configuration or machine setup"):
        run_in_process([*TINY, "runtime.threads=2"], tmp_path)
    report = run_in_process([*TINY, "runtime.threads=1", "device=cpu"], tmp_path)  # auto meant cpu: the same run
    assert [path.stat().st_mtime_ns for path in sorted(tmp_path.glob("seeds/*.json"))] == stamps
    assert report["execution"]["threads"] == 1


# --- two runs, one directory --------------------------------------------------------------------------------

def test_a_second_run_into_a_held_directory_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    holder = start([*TINY, "optimizer.lr=0.01"], tmp_path)
    wait_for(tmp_path / ".hydra" / "config.yaml", holder)  # written holding the lock, after the holder's record
    holder.send_signal(signal.SIGSTOP)  # hold the directory for as long as the second run needs to try
    try:
        second = run_command(["replicate", *TINY, "optimizer.lr=0.02", f"hydra.run.dir={tmp_path}"])
    finally:
        holder.kill()  # a crash: no chance to release anything
        holder.communicate()
    line = one_line(second.stderr)
    assert second.returncode == 2 and f"in use by another run (pid {holder.pid} on " in line, line
    assert "lr: 0.01" in (tmp_path / ".hydra" / "config.yaml").read_text()  # the holder's settings, untouched
    resumed = run_command(["replicate", *TINY, "optimizer.lr=0.01", f"hydra.run.dir={tmp_path}"])
    assert resumed.returncode == 0, resumed.stderr  # the OS released the crashed holder's lock
    assert json.loads((tmp_path / "report.json").read_text())["config"]["optimizer"]["lr"] == 0.01
    assert not (tmp_path / ".replicate.lock.holder").exists()


def test_leftover_temporaries_of_a_killed_write_are_removed(tmp_path):
    from replicate.checkpoint import run_lock

    leftovers = [tmp_path / "seeds" / ".seed-0.json.k3j2.tmp", tmp_path / ".report.json.x81.tmp",
                 tmp_path / ".hydra" / ".config.yaml.p0q1.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    with run_lock(tmp_path):
        assert not any(path.exists() for path in leftovers)


# --- stop signals -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signal_number, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_saves_a_checkpoint_says_one_line_and_the_rerun_resumes_bit_for_bit(tmp_path, signal_number,
                                                                                           code):
    process = start(STOPPABLE, tmp_path / "stopped")
    wait_for(tmp_path / "stopped" / "checkpoints" / "seeds-0-1.pt", process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    line = one_line(stderr)
    assert process.returncode == code
    assert f"interrupted by {signal.Signals(signal_number).name} at step " in line and "rerun the same command" in line
    step = int(line.split(" at step ")[1].split()[0])
    assert torch.load(tmp_path / "stopped" / "checkpoints" / "seeds-0-1.pt", weights_only=True)["step"] == step
    if signal_number != signal.SIGTERM:
        return  # the resume is the same code path; proven once
    resumed = run_command(["replicate", *STOPPABLE, f"hydra.run.dir={tmp_path / 'stopped'}"])
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = run_in_process(STOPPABLE, tmp_path / "whole")
    assert comparable(json.loads((tmp_path / "stopped" / "report.json").read_text())) == comparable(uninterrupted)


# --- full disk ----------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs; skipped where mounting is not permitted (not root, or in a container without it)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave_bytes):
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


# leave_kib: what the run writes before the named file; .hydra/hydra.yaml holds the --help text (one 4 KiB page)
@pytest.mark.parametrize("leave_kib, where", [(28, "curves.png"), (40, "checkpoints")])
def test_a_full_disk_is_one_line_naming_enospc_and_finished_seeds_are_kept(small_disk, leave_kib, where):
    run_dir = small_disk / "run"
    every = "checkpoint.every=0" if where == "curves.png" else "checkpoint.every=1"
    fill(small_disk, leave_kib * 1024)
    result = run_command(["replicate", *TINY, every, f"hydra.run.dir={run_dir}"])
    line = one_line(result.stderr)
    assert result.returncode == 1 and "No space left on device (ENOSPC)" in line and where in line, line
    assert not list(run_dir.rglob(".*.tmp"))
    if where == "curves.png":
        assert sorted(path.name for path in run_dir.glob("seeds/*.json")) == ["seed-0.json", "seed-1.json"]
    (small_disk / "filler").unlink()
    assert run_command(["replicate", *TINY, every, f"hydra.run.dir={run_dir}"]).returncode == 0


def test_a_write_refused_by_the_os_is_one_line_and_keeps_finished_seeds(tmp_path):
    """Where no filesystem can be mounted: the OS refuses writes past RLIMIT_FSIZE (EFBIG; Python ignores
    SIGXFSZ), so the seed files (about 3 KB) are written and curves.png (about 80 KB) is not."""
    import resource

    from replicate.config import compose
    from replicate.data import load_dataset

    load_dataset(compose(TINY).data, dtype=torch.float32, device="cpu")  # the data cache, written before the limit
    limit = 40 * 1024
    result = subprocess.run([sys.executable, "-m", "replicate", *TINY, f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    line = one_line(result.stderr)
    assert result.returncode == 1 and "(EFBIG)" in line and "curves.png" in line, line
    assert sorted(path.name for path in tmp_path.glob("seeds/*.json")) == ["seed-0.json", "seed-1.json"]
    assert not list(tmp_path.rglob(".*.tmp"))


# --- damaged seed files -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-seed run, copied by each test that damages it; with its report."""
    run_dir = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:  # module scope runs before conftest's per-test cache fixture
        patch.setenv("REPLICATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return run_dir, run_in_process(TINY, run_dir)


@pytest.mark.parametrize("damage", [
    lambda result: [], lambda result: None, lambda result: {k: v for k, v in result.items() if k != "metrics"},
    lambda result: {**result, "metrics": {**result["metrics"], "test_accuracy": "0.9"}},
    lambda result: {**result, "seed": 7}, lambda result: {**result, "diverged_at": "never"},
], ids=["list", "null", "no metrics", "string metric", "edited seed", "string diverged_at"])
def test_a_damaged_seed_file_is_trained_again_never_trusted(finished_run, tmp_path, capsys, damage):
    finished, first = finished_run
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "seeds" / "seed-1.json"
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    again = run_in_process(TINY, tmp_path)
    assert f"warning: {path} is damaged" in capsys.readouterr().err
    assert [seed["seed"] for seed in again["seeds"]] == [0, 1] and comparable(again) == comparable(first)


# --- permissions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_output_files_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run_in_process(TINY, tmp_path)
    finally:
        os.umask(previous)
    files = [tmp_path / "report.json", tmp_path / "report.md", tmp_path / "curves.png", *tmp_path.glob("seeds/*.json")]
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o666 & ~umask}


# --- bad claims and settings, one line each -----------------------------------------------------------------

HOSTILE_INPUTS = [
    (["model.hidden_size=0", "paper=mnist1d_mlp"], "model.hidden_size must be positive"),
    (["model.hidden_size=-5", "paper=mnist1d_mlp"], "model.hidden_size must be positive"),
    (["model.input_size=41"], "does not fit the data's examples of shape [40]"),
    (["model.output_size=3"], "model.output_size=3 but dataset mnist1d has 10 classes"),
    (["model.hidden_size=10000000", "paper=mnist1d_mlp"], "GiB for 5 seed(s)"),
    (["+train.stepz=5"], "unknown setting train.stepz; allowed under train: accum_steps, batch_size"),
    (["+stepz=5"], "unknown setting stepz; allowed under the top level:"),
    (["seed=4294967296"], "seed must be >= 0 and <= 4294967295"),
    (["optimizer.lr=inf"], "optimizer.lr must be a finite number"),
    (["optimizer.betas=[0.9]"], "optimizer.betas must be two numbers in [0, 1)"),
    (["optimizer.eps=0"], "optimizer.eps must be positive"),
    (["schedule.name=step", "schedule.step_size=0"], "schedule.step_size must be positive"),
    (["train.steps=abc"], "train.steps=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["seeds=2.5"], "seeds=2.5: Value '2.5' of type 'float' could not be converted to Integer"),
    (["train.stepz=5"], "unknown setting train.stepz; allowed under train: accum_steps, batch_size"),
    (["++runtime.thread=2"], "unknown setting runtime.thread; allowed under runtime: numerics, progress, reuse_memory, threads"),
]


@pytest.mark.parametrize("args, message", HOSTILE_INPUTS)
def test_hostile_settings_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    code, stderr = run_main(["logger=none", "train.steps=2", f"hydra.run.dir={tmp_path / 'run'}", *args],
                            monkeypatch, capsys)
    assert code == 2 and message in one_line(stderr), stderr


@pytest.mark.parametrize("text, message", [
    (logistic_config(**{'unit: "%"': 'unit: "percent"'}), "unknown unit in claim 'test accuracy' 'percent'"),
    (logistic_config(**{"value: 32": "value: .nan"}), "value must be a finite number, got nan"),
    (logistic_config(**{"tolerance: 0.5": "tolerance: .nan"}), "tolerance must be a finite number, got nan"),
    (logistic_config(**{"value: 32": "value: 32\n      value: 33"}), "duplicate key 'value'"),
    ("- paper: mine\n", "holds a YAML list, not a mapping of settings"),
], ids=["unknown unit", "nan value", "nan tolerance", "duplicate key", "a list"])
def test_bad_claims_in_a_users_paper_config_are_one_line(tmp_path, monkeypatch, capsys, text, message):
    code, stderr = run_main([*user_paper(tmp_path, "mine", text), "logger=none", "train.steps=2",
                             f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 2 and message in one_line(stderr), stderr


def test_a_key_appended_past_the_command_line_check_is_still_refused_by_check_config():
    from replicate.config import ConfigError, compose
    from replicate.config_checks import check_config

    with pytest.raises(ConfigError, match=r"unknown setting train\.stepz; allowed under train: accum_steps"):
        check_config(compose(["+train.stepz=5"]))
