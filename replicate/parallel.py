"""A multirun's jobs side by side on one machine: `hydra/launcher=parallel` (conf/hydra/launcher/parallel.yaml).

Hydra's joblib launcher runs each job in a worker process. Around it, replicate keeps its promises:
- numbers: the workers inherit the environment the CLI set before torch loaded (runtime.numerics's pins,
  OpenMP's passive wait), so a job's values are the ones it gets run alone; each job takes cores // n_jobs
  intra-op threads (replicate.cpu.available_cores);
- stops: the launcher's process forwards a stop signal to its workers; each running job saves a checkpoint at
  its next step boundary and ends, and a job not yet started does not start. A second signal stops at once;
- endings: a job that fails or stops prints its own line and returns its exit status instead of raising,
  so that joblib does not kill the other workers mid-step; once every job has returned, the command ends with
  one line and the first such status.

    with forwarded_stops() as stops:        # in the launcher's process, around the joblib launch
        returns = launch(...)
    jobs_outcome(returns, stops.signal_number, sweep_dir=...)   # raises JobsEnded if a job did not finish
    status = run_in_worker(name, job)       # in a worker: the job, its failure or stop as an exit status
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

LAUNCHER = "hydra_plugins.replicate_parallel.parallel_launcher.ParallelLauncher"  # conf/hydra/launcher/parallel.yaml
_LAUNCHING_PROCESS: dict[str, int | None] = {"pid": None}
JOB_LABEL = {"text": ""}  # in a worker: which job a line is about ("#1 mnist1d_mlp: "), read by replicate.cli.fail


class JobsEnded(BaseException):
    """Some jobs of a parallel multirun did not finish: `message` is the command's last line, `code` its
    exit status. A BaseException, like SystemExit, so that Hydra's error report does not print it as a crash."""

    def __init__(self, message: str, code: int):
        super().__init__(message, code)
        self.message, self.code = message, code


def register_launcher() -> None:
    """Make hydra/launcher=parallel's class known to Hydra. Hydra's plugin scan finds it in an installed
    wheel, but not in an editable install (`pip install -e`), whose hydra_plugins portion is a path hook."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.replicate_parallel.parallel_launcher import ParallelLauncher

    Plugins.instance().register(ParallelLauncher)


def mark_launching_process() -> None:
    """Called by the CLI's main(): jobs that run in this process are not workers."""
    _LAUNCHING_PROCESS["pid"] = os.getpid()


def launched_jobs() -> int:
    """How many jobs of this multirun run at once on this machine: hydra/launcher=parallel's n_jobs as joblib
    resolves it (-1: one per core), or 1 (one job after another, a single run, SLURM, not a Hydra job)."""
    if "hydra" not in sys.modules:
        return 1
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    launcher = HydraConfig.get().launcher
    if launcher.get("_target_") != LAUNCHER:
        return 1
    from joblib import effective_n_jobs

    return max(1, effective_n_jobs(launcher.n_jobs))


def in_worker() -> bool:
    """Whether this job runs in a worker process of hydra/launcher=parallel: launched by it, in another
    process than the one main() ran in (with n_jobs=1 joblib runs the jobs in that one)."""
    return _LAUNCHING_PROCESS["pid"] != os.getpid() and launched_jobs() > 1


def run_in_worker(name: str, job) -> int:
    """Run job() in a worker, its lines labelled `name` (Hydra's job number and the paper): stop signals
    deferred to its step boundaries and latched for the worker's later jobs; its failure (SystemExit from a
    one-line error) or stop (Interrupted) returned as an exit status."""
    from replicate.checkpoint import Interrupted, describe_interruption, install_stop_handlers, latch_stops, stop_requested

    JOB_LABEL["text"] = f"{name}: "
    latch_stops()
    install_stop_handlers()
    if stop_requested() is not None:
        print(f"{name}: not started ({signal.Signals(stop_requested()).name} received)", file=sys.stderr)
        return 128 + stop_requested()
    try:
        job()
    except Interrupted as stop:
        print(f"{name}: {describe_interruption(stop, advice='')}", file=sys.stderr)  # the launcher's line says how to resume
        return 128 + stop.signal_number
    except SystemExit as ended:  # replicate.cli.fail has printed the line
        return ended.code if isinstance(ended.code, int) else 1
    return 0


class forwarded_stops:
    """In the launcher's process, while the workers run: the first stop signal is passed on to every worker
    (a terminal's Ctrl-C reaches them already; `kill` or a scheduler may signal this process alone) and the
    launch goes on until each job has saved and returned; a second signal stops everything at once."""

    def __init__(self):
        self.signal_number: int | None = None
        self.previous = {}

    def __enter__(self):
        from replicate.checkpoint import STOP_SIGNALS

        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None and signal.getsignal(number) not in (signal.SIG_IGN, None):
                self.previous[number] = signal.signal(number, self.on_signal)
        return self

    def on_signal(self, number, frame) -> None:
        import multiprocessing

        from replicate.checkpoint import request_stop

        workers = multiprocessing.active_children()
        if self.signal_number is not None or not workers:
            # a second signal: at once (joblib ends its workers); no workers (n_jobs=1): the jobs run in this
            # process, which handles the signal as a single run does
            request_stop(number)
            return
        self.signal_number = number
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, number)

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return False


@contextlib.contextmanager
def stopped_at_once(sweep_dir: str):
    """A second stop signal ends the launch at once (joblib kills its workers): say so in one line, with
    where the sweep's files are, since a multirun's default directory is new for every command."""
    from replicate.checkpoint import Interrupted

    try:
        yield
    except Interrupted as stop:
        name = signal.Signals(stop.signal_number).name
        raise JobsEnded(f"stopped at once by a second {name}: running jobs keep their last periodic checkpoint, "
                        f"finished jobs and seeds are kept; rerun the same command with hydra.sweep.dir={sweep_dir} "
                        "to resume", 128 + stop.signal_number) from None


def jobs_outcome(returns, signal_number: int | None, *, sweep_dir: str) -> None:
    """Raise JobsEnded when a stop signal arrived or a job returned a nonzero status; else return. A job
    that raised (a crash, not a one-line error) is left to Hydra's sweeper, which reports it with its traceback."""
    from hydra.core.utils import JobStatus

    if any(job.status != JobStatus.COMPLETED for job in returns):
        return
    statuses = [job.return_value if isinstance(job.return_value, int) else 0 for job in returns]
    unfinished = [status for status in statuses if status != 0]
    if signal_number is None and not unfinished:
        return
    if not unfinished:  # as for a single run whose stop arrives in its last step: finished, and stopped
        raise JobsEnded(f"all {len(statuses)} jobs finished; {signal.Signals(signal_number).name} arrived as the "
                        "last ended", 128 + signal_number)
    stopped = sum(status > 128 for status in unfinished)
    parts = ([f"{stopped} stopped"] if stopped else []) + (
        [f"{len(unfinished) - stopped} failed"] if len(unfinished) > stopped else [])
    code = 128 + signal_number if signal_number is not None else unfinished[0]
    cause = f" by {signal.Signals(signal_number).name}" if signal_number is not None else ""
    raise JobsEnded(f"{len(unfinished)} of {len(statuses)} jobs did not finish{cause} ({', '.join(parts)}); "
                    f"finished jobs, seeds and checkpoints are kept; rerun the same command with "
                    f"hydra.sweep.dir={sweep_dir} to resume", code)
