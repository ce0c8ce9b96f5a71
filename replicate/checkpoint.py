"""Nothing finished is lost: per-seed results and training checkpoints, written atomically.

A run directory holds `seeds/seed-<k>.json` for every finished seed and `checkpoints/<group>.pt` for a
group of seeds still training (the whole state: parameters, optimizer, schedule position, data order,
random streams, accumulators). Running the same command with the same `hydra.run.dir` skips finished
seeds and resumes the rest, so the final report equals an uninterrupted run's. Every file carries the
configuration's fingerprint; files from another configuration are refused, never mixed in.

    save_checkpoint(path, state); state = load_checkpoint(path, fingerprint)
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from replicate.config import ConfigError

# keys that do not change what is computed: logging, progress, output location, which seeds run
NEUTRAL_KEYS = ("logger", "wandb", "runtime", "seeds", "seed", "checkpoint", "resume", "dry_run")


def fingerprint(cfg) -> str:
    """A short hash of everything that determines the numbers a seed produces."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for key in NEUTRAL_KEYS:
        settings.pop(key, None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def group_name(seeds) -> str:
    return "seeds-" + "-".join(str(seed) for seed in seeds)


def replace_atomically(path: Path, write) -> None:
    """Write a file through `write(binary_file)` into a temporary file beside it, then rename: a reader
    sees the old file or the whole new one, never half of one; a failed write leaves no temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# the layout of a training checkpoint; a file of another layout (an older replicate) is refused
CHECKPOINT_FORMAT = 3  # 3: one optimizer buffer per parameter group, a padded row per seed


def save_checkpoint(path: Path, state: dict) -> None:
    state = {**state, "format": CHECKPOINT_FORMAT}
    replace_atomically(Path(path), lambda file: torch.save(state, file))


def load_checkpoint(path: Path, expected_fingerprint: str) -> dict:
    """Load with weights_only=True; a damaged file or one from another configuration is an error."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # truncated, corrupted, or not a checkpoint at all
        raise ConfigError(f"checkpoint {path} cannot be read ({type(error).__name__}); delete it to restart "
                          "that group of seeds from step 0") from None
    if not isinstance(state, dict) or state.get("fingerprint") != expected_fingerprint:
        raise ConfigError(f"checkpoint {path} belongs to a different configuration; use another hydra.run.dir, "
                          "or resume=false to start this one over")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint {path} was written by another version of replicate; delete it to restart "
                          "that group of seeds from step 0, or resume=false to start the run over")
    return state


def save_seed_result(run_dir: Path, result: dict) -> None:
    path = Path(run_dir) / "seeds" / f"seed-{result['seed']}.json"
    text = json.dumps(result, indent=1, allow_nan=True).encode()
    replace_atomically(path, lambda file: file.write(text))


def load_seed_result(run_dir: Path, seed: int, expected_fingerprint: str) -> dict | None:
    """A finished seed's result, or None when there is none. Unreadable files count as unfinished."""
    path = Path(run_dir) / "seeds" / f"seed-{seed}.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # written atomically, so this is damage from outside: recompute the seed
    if result.get("fingerprint") != expected_fingerprint:
        raise ConfigError(f"{path} holds a result of a different configuration; use another hydra.run.dir, "
                          "or resume=false to start this one over")
    return result
