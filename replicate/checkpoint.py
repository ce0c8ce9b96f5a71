"""Nothing finished is lost: per-seed results and training checkpoints, written atomically.

A run directory holds `seeds/seed-<k>.json` for every finished seed and `checkpoints/<group>.pt` for a
group of seeds still training (the whole state: parameters, optimizer, schedule position, data order,
random streams, accumulators). Running the same command with the same `hydra.run.dir` skips finished
seeds and resumes the rest, so the final report equals an uninterrupted run's. Every file carries the
configuration's fingerprint (replicate.identity); files from another configuration are refused, never
mixed in, and a damaged seed file is trained again, never trusted.

    save_checkpoint(path, state); state = load_checkpoint(path, fingerprint)
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import socket
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from replicate.errors import ConfigError


def group_name(seeds) -> str:
    return "seeds-" + "-".join(str(seed) for seed in seeds)


class Interrupted(BaseException):
    """A stop signal (SIGINT, SIGTERM, SIGHUP). A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it. step/steps/seeds: where training stopped, when it was."""

    def __init__(self, signal_number: int, *, step: int | None = None, steps: int | None = None,
                 seeds=None, saved: bool = False):
        super().__init__(signal_number)
        self.signal_number, self.step, self.steps, self.seeds, self.saved = signal_number, step, steps, seeds, saved


class _Stops:
    """Signals received while a training loop defers them to its next step boundary. latched: in a worker
    of hydra/launcher=parallel, a stop is never raised at once and stays requested for the worker's later
    jobs (its launcher forwards a signal the terminal already sent, and stops at once on a second one)."""
    deferring = False
    pending: int | None = None
    latched = False


def stop_requested() -> int | None:
    """The stop signal a training loop should act on at this step boundary, if any."""
    return _Stops.pending


def request_stop(signal_number: int) -> None:
    """Called by the CLI's signal handler: defer the stop to the training loop, or stop now when no loop
    is running (or when a second signal arrives before the loop reached its step boundary). Latched
    (latch_stops): deferred always, the first signal kept."""
    if _Stops.latched or (_Stops.deferring and _Stops.pending is None):
        _Stops.pending = _Stops.pending or signal_number
        return
    raise Interrupted(signal_number)


def latch_stops() -> None:
    """From now on this process defers every stop signal to a step boundary and keeps it requested."""
    _Stops.latched = True


class deferred_stops:
    """Within this block a stop signal ends training at the next step boundary, after a checkpoint."""

    def __enter__(self):
        _Stops.deferring = True
        if not _Stops.latched:
            _Stops.pending = None
        return self

    def __exit__(self, *exc_info):
        pending, _Stops.deferring = _Stops.pending, False
        if not _Stops.latched:
            _Stops.pending = None
        if pending is not None and exc_info[0] is None:  # arrived during the last step: the group finished
            raise Interrupted(pending)
        return False


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")  # Ctrl-C; SLURM's notice before preemption or the time limit; a closed terminal


def install_stop_handlers() -> None:
    """A stop signal ends training at the next step boundary after saving a checkpoint (request_stop);
    outside training it stops at once. Either way: one line, exit 128 + signal (the CLI's)."""
    for name in STOP_SIGNALS:
        # a signal ignored at start stays ignored: nohup ignores SIGHUP, a shell's background job SIGINT
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) != signal.SIG_IGN:
            signal.signal(getattr(signal, name), lambda number, frame: request_stop(number))


def describe_interruption(stop: Interrupted, advice: str = "; rerun the same command to resume") -> str:
    """The one line a stop leaves: where training stopped and whether its checkpoint was saved, then advice."""
    name = signal.Signals(stop.signal_number).name
    if stop.step is not None:
        seeds = ", ".join(str(seed) for seed in stop.seeds)
        saved = "checkpoint saved" if stop.saved else "no checkpoint saved by this process"
        return f"interrupted by {name} at step {stop.step} of {stop.steps} of seed(s) {seeds} ({saved}){advice}"
    return f"interrupted by {name}; finished seeds are kept{advice}"


class WriteError(OSError):
    """A file of the run could not be written (ENOSPC, EDQUOT, EACCES, ...); filename is the file meant."""


TEMPORARY_SUFFIX = ".tmp"


def replace_atomically(path: Path, write) -> None:
    """Write a file through `write(binary_file)` into a temporary file beside it, then rename: a reader
    sees the old file or the whole new one, never half of one; a failed write leaves no temporary.
    The file gets the permissions any other tool would give it under the umask (mkstemp's are 0600).
    A failed write is a WriteError that names `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    except OSError as error:
        raise WriteError(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), 0o666 & ~current_umask())
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):  # e.g. ENOSPC: name the file the user asked for, not the temporary
            raise WriteError(error.errno, error.strerror, str(path)) from None
        raise


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporaries of writes that a killed process left behind (call it holding the run's lock)."""
    removed = []
    for directory in (Path(run_dir), *(Path(run_dir) / name for name in ("seeds", "checkpoints", ".hydra"))):
        for path in directory.glob(f".*{TEMPORARY_SUFFIX}") if directory.is_dir() else []:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def describe_write_error(error: OSError) -> str:
    """One line for a failed file operation: the errno's name, the path and what to do."""
    name = errno.errorcode.get(error.errno or 0, "error")
    where = f" {error.filename}" if error.filename else ""
    verb = "cannot write" if isinstance(error, WriteError) else "file operation failed on"
    advice = ("free some space there" if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
              else "check the path and its permissions")
    return (f"{verb}{where}: {error.strerror or error} ({name}); {advice} and rerun the same command: "
            "finished seeds and the last checkpoint are kept and resume")


# the layout of a training checkpoint; a file of another layout (an older replicate) is refused
CHECKPOINT_FORMAT = 4  # 3: one optimizer buffer per parameter group, a padded row per seed; 4: also module buffers
# (BatchNorm statistics), and where a run uses them the lookahead weights, early-stopping state and LSTM hidden state


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    state = {**state, "format": CHECKPOINT_FORMAT}
    buffer = io.BytesIO()  # serialized first, so a full disk is an OSError of the write, not torch's RuntimeError
    torch.save(state, buffer)
    replace_atomically(Path(path), lambda file: file.write(buffer.getbuffer()))


def load_checkpoint(path: Path, expected_fingerprint: str) -> dict:
    """Load with weights_only=True; a damaged file or one from another configuration is an error."""
    import torch

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # truncated, corrupted, or not a checkpoint at all
        raise ConfigError(f"checkpoint {path} cannot be read ({type(error).__name__}); delete it to restart "
                          "that group of seeds from step 0") from None
    if isinstance(state, dict) and state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint {path} was written by another version of replicate; delete it to restart "
                          "that group of seeds from step 0, or resume=false to start the run over")
    if not isinstance(state, dict) or state.get("fingerprint") != expected_fingerprint:
        raise ConfigError(f"checkpoint {path} belongs to a different configuration or machine setup (settings, "
                          "threads, device, dtype or CPU kernels); use another hydra.run.dir, or resume=false to "
                          "start this one over")
    return state


def save_seed_result(run_dir: Path, result: dict) -> None:
    path = Path(run_dir) / "seeds" / f"seed-{result['seed']}.json"
    text = json.dumps(result, indent=1, allow_nan=True).encode()
    replace_atomically(path, lambda file: file.write(text))


SEED_FIELDS = {"fingerprint", "seed", "metrics", "curve", "diverged_at", "wall_time_s", "path"}
OPTIONAL_SEED_FIELDS = {"early_stopping"}  # a run with train.early_stopping: the seed's best point and stop


def load_seed_result(run_dir: Path, seed: int, expected_fingerprint: str) -> dict | None:
    """A finished seed's result, or None when there is none. A damaged file (unreadable, not the layout
    save_seed_result writes, or holding another seed) counts as unfinished: the seed is trained again.
    A file of another configuration is refused."""
    path = Path(run_dir) / "seeds" / f"seed-{seed}.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        result = None  # written atomically, so this is damage from outside
    problem = seed_file_problem(result, seed)
    if problem is None and result["fingerprint"] != expected_fingerprint:
        raise ConfigError(f"{path} holds a result of a different configuration or machine setup (settings, threads, "
                          "device, dtype or CPU kernels); use another hydra.run.dir, or resume=false to start this "
                          "one over")
    if problem is not None:
        print(f"warning: {path} is damaged ({problem}); training seed {seed} again", file=sys.stderr)
        return None
    return result


def seed_file_problem(result, seed: int) -> str | None:
    """What is wrong with a parsed seed file, or None if it has the layout save_seed_result writes."""
    if not isinstance(result, dict):
        return "not a JSON object" if result is not None else "not valid JSON"
    if set(result) - OPTIONAL_SEED_FIELDS != SEED_FIELDS:
        return f"fields {', '.join(sorted((set(result) - OPTIONAL_SEED_FIELDS) ^ SEED_FIELDS))} missing or unexpected"
    if not isinstance(result.get("early_stopping", {}), dict):
        return "early_stopping is not a mapping"
    if not isinstance(result["fingerprint"], str):
        return "no fingerprint"
    if result["seed"] != seed or isinstance(result["seed"], bool):
        return f"it holds seed {result['seed']!r}, not {seed}"
    metrics = result["metrics"]
    if not isinstance(metrics, dict) or not metrics or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in metrics.values()):
        return "metrics is not a mapping of names to numbers"
    if not isinstance(result["curve"], list) or not all(isinstance(point, dict) for point in result["curve"]):
        return "curve is not a list of points"
    diverged = result["diverged_at"]
    if diverged is not None and (isinstance(diverged, bool) or not isinstance(diverged, int) or diverged < 0):
        return "diverged_at is not a step"
    if isinstance(result["wall_time_s"], bool) or not isinstance(result["wall_time_s"], (int, float)):
        return "wall_time_s is not a number"
    if not isinstance(result["path"], str):
        return "path is not a string"
    return None


# seconds a second run waits for the run directory before it is refused: long enough for a holder that
# is writing its last file, short enough that a user is not left wondering
LOCK_WAIT_S = 3.0


@contextlib.contextmanager
def run_lock(run_dir: Path, wait_s: float = LOCK_WAIT_S):
    """Hold the run directory for one process: another run into it waits wait_s seconds, then is refused
    in one line naming the holder. The lock is the OS's (flock through filelock): it dies with its
    process, so a crashed or killed holder never leaves it stuck. Holding it, this process removes the
    temporaries of writes that a killed run left behind."""
    import filelock

    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(run_dir / ".replicate.lock", timeout=wait_s)
        lock.acquire()
    except filelock.Timeout:
        raise ConfigError(f"{run_dir} is in use by another run ({describe_holder(run_dir)}); wait for it to "
                          "finish, or choose another hydra.run.dir=...") from None
    except OSError as error:
        raise WriteError(error.errno, error.strerror, str(run_dir)) from None
    holder = run_dir / ".replicate.lock.holder"
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": datetime.now().astimezone().isoformat(timespec="seconds")}))
        remove_leftovers(run_dir)
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def describe_holder(run_dir: Path) -> str:
    try:
        holder = json.loads((Path(run_dir) / ".replicate.lock.holder").read_text())
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not yet recorded"
