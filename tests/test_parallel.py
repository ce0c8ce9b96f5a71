"""hydra/launcher=parallel: a multirun's jobs side by side in worker processes (replicate.parallel).

The numbers are the jobs' own, each job takes its share of the cores, a stop signal leaves every running
job with a checkpoint and starts no new one, and one job's error ends neither the others nor the command
without a line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hydra.core.utils import JobReturn, JobStatus

from conftest import ROOT, run_command
from replicate.checkpoint import Interrupted
from replicate.parallel import JobsEnded, jobs_outcome, stopped_at_once

SHORT = ["paper=mnist1d_mlp", "seeds=2", "train.steps=40", "logger=none", "runtime.progress=false"]
PARALLEL = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]


def per_seed(report):
    return [(seed["seed"], seed["metrics"], seed["curve"]) for seed in report["seeds"]]


def reports(sweep_dir):
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/report.json"))}


def test_a_parallel_job_equals_the_job_alone_and_one_jobs_error_ends_neither_the_others_nor_silently(tmp_path):
    alone = run_command(["replicate", *SHORT, "train.batch_size=50", f"hydra.run.dir={tmp_path / 'alone'}"])
    assert alone.returncode == 0, alone.stderr
    together = run_command(["replicate", "-m", "train.batch_size=50,0", *SHORT, *PARALLEL,
                            f"hydra.sweep.dir={tmp_path / 'together'}"])
    # the second job's one-line error: the first job still finishes, and the command fails after it
    assert together.returncode == 2, together.stderr
    assert "Traceback" not in together.stderr
    assert any(line.startswith("#1 mnist1d_mlp: error: ") and "batch_size" in line
               for line in together.stderr.splitlines()), together.stderr
    assert together.stderr.splitlines()[-1].startswith("1 of 2 jobs did not finish (1 failed); ")
    assert list(reports(tmp_path / "together")) == ["0_mnist1d_mlp"]
    alone, job = json.loads((tmp_path / "alone" / "report.json").read_text()), reports(tmp_path / "together")["0_mnist1d_mlp"]
    assert per_seed(job) == per_seed(alone)  # bit for bit: the worker runs under the numerics pinned before torch loaded
    assert job["numerics"]["pinned"] == alone["numerics"]["pinned"]
    assert job["numerics"]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)  # its share of the cores


def test_a_stop_signal_saves_every_running_job_and_starts_no_other(tmp_path):
    """SIGTERM to the launching process alone: it passes the signal on; the two running jobs save a
    checkpoint at their next step boundary, the third never starts, and the command ends with one line."""
    long_jobs = ["paper=mnist1d_mlp", "seeds=1", "train.steps=100000", "logger=none", "runtime.progress=false"]
    command = [sys.executable, "-m", "replicate", "-m", "seed=0,1,2", *long_jobs, *PARALLEL,
               f"hydra.sweep.dir={tmp_path}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    holders = [tmp_path / f"{job}_mnist1d_mlp" / ".replicate.lock.holder" for job in (0, 1)]
    deadline = time.time() + 120
    while not all(holder.exists() for holder in holders) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into training
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    lines = [line for line in stderr.splitlines() if "[HYDRA]" not in line and line.strip()]
    assert any(line.startswith("#0 mnist1d_mlp: interrupted by SIGTERM at step") and "(checkpoint saved)" in line
               for line in lines), stderr
    assert any(line.startswith("#1 mnist1d_mlp: interrupted by SIGTERM at step") for line in lines), stderr
    assert "#2 mnist1d_mlp: not started (SIGTERM received)" in lines, stderr
    assert lines[-1] == ("3 of 3 jobs did not finish by SIGTERM (3 stopped); finished jobs, seeds and checkpoints "
                         f"are kept; rerun the same command with hydra.sweep.dir={tmp_path} to resume")
    assert "Traceback" not in stderr
    assert (tmp_path / "0_mnist1d_mlp" / "checkpoints" / "seeds-0.pt").exists()
    assert (tmp_path / "1_mnist1d_mlp" / "checkpoints" / "seeds-1.pt").exists()
    assert not list(tmp_path.glob("2_mnist1d_mlp/checkpoints/*.pt"))


def test_a_stopped_multirun_one_job_after_another_names_its_sweep_directory_to_resume(tmp_path):
    """Without the parallel launcher too: a multirun's default sweep directory holds the time, so "rerun the same
    command" alone would start afresh in a new one."""
    command = [sys.executable, "-m", "replicate", "-m", "seed=0,1", "paper=mnist1d_mlp", "seeds=1", "train.steps=100000",
               "logger=none", "runtime.progress=false", f"hydra.sweep.dir={tmp_path}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    holder, deadline = tmp_path / "0_mnist1d_mlp" / ".replicate.lock.holder", time.time() + 120
    while not holder.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM") and last.endswith(
        f"; rerun the same command with hydra.sweep.dir={tmp_path} to resume"), stderr
    assert not (tmp_path / "1_mnist1d_mlp").exists()  # the second job never started


def test_the_bare_joblib_launcher_and_jobs_in_threads_are_refused_in_one_line():
    result = run_command(["replicate", "-m", "seed=0,1", "hydra/launcher=joblib", "logger=none"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hydra/launcher=joblib would let a stop signal or one job's error kill the other jobs mid-step; "
        "use hydra/launcher=parallel (the same launcher and keys, with replicate's stop handling)"]
    result = run_command(["replicate", "-m", "seed=0,1", *PARALLEL, "hydra.launcher.prefer=threads", "logger=none"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hydra.launcher.prefer=threads: hydra/launcher=parallel runs each job in its own process (backend=loky), "
        "as a job's threads, signals and numerics are per process; leave hydra.launcher.backend, prefer and require "
        "as they are"]


def ended(statuses, signal_number=None):
    """What jobs_outcome makes of Hydra's job returns with these statuses: None, or (message, exit status)."""
    returns = [JobReturn(status=JobStatus.COMPLETED, _return_value=status) for status in statuses]
    try:
        jobs_outcome(returns, signal_number, sweep_dir="multirun/x")
    except JobsEnded as end:
        return end.message, end.code
    return None


def test_the_commands_last_line_and_status_from_its_jobs_endings():
    assert ended([0, None, 0]) is None  # None: the job ran in the launching process (n_jobs=1)
    assert ended([0, 2, 1]) == ("2 of 3 jobs did not finish (2 failed); finished jobs, seeds and checkpoints are "
                                "kept; rerun the same command with hydra.sweep.dir=multirun/x to resume", 2)
    assert ended([143, 2, 143], signal.SIGTERM) == (
        "3 of 3 jobs did not finish by SIGTERM (2 stopped, 1 failed); finished jobs, seeds and checkpoints are kept; "
        "rerun the same command with hydra.sweep.dir=multirun/x to resume", 143)
    assert ended([0, 0], signal.SIGINT) == ("all 2 jobs finished; SIGINT arrived as the last ended", 130)
    crashed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("a bug"))
    jobs_outcome([crashed], signal.SIGTERM, sweep_dir="x")  # left to Hydra's sweeper, which shows the traceback
    # a second signal stops the launch at once (replicate.checkpoint.request_stop raises in the launching process)
    with pytest.raises(JobsEnded) as end, stopped_at_once("multirun/x"):
        raise Interrupted(signal.SIGINT)
    assert (end.value.message, end.value.code) == (
        "stopped at once by a second SIGINT: running jobs keep their last periodic checkpoint, finished jobs "
        "and seeds are kept; rerun the same command with hydra.sweep.dir=multirun/x to resume", 130)
