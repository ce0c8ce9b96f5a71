"""What every command shares with Hydra: where the configs live (conf/ in a checkout, replicate/conf in
a wheel, plus any --config-dir), the paper ids found there, and the `${run_stamp:}` resolver that
conf/config.yaml uses for the run directory.

    available_papers(sys.argv[1:])   # ['mnist1d_cnn', ..., 'sklearn_iris_invscaling_momentum']
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def conf_dir() -> Path:
    """conf/ beside the package in a checkout, or replicate/conf inside an installed wheel."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if (checkout / "config.yaml").exists():
        return checkout
    return Path(str(resources.files("replicate") / "conf"))


def config_dirs(argv: list[str]) -> list[Path]:
    """conf/ and any user directories given with --config-dir / -cd (Hydra's own option)."""
    dirs = [conf_dir()]
    for index, argument in enumerate(argv):
        if argument in ("--config-dir", "-cd") and index + 1 < len(argv):
            dirs.append(Path(argv[index + 1]))
        elif argument.startswith("--config-dir="):
            dirs.append(Path(argument.split("=", 1)[1]))
    return dirs


def available_papers(argv: list[str] | None = None) -> list[str]:
    return sorted({path.stem for directory in config_dirs(argv or []) for path in (directory / "paper").glob("*.yaml")})


def run_stamp() -> str:
    """The run directory's time stamp, the same in every process that torchrun starts together."""
    from datetime import datetime

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if "LOCAL_RANK" in os.environ:  # torchrun: its agent is every local rank's parent
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        suffix = run_id[:8] if run_id not in ("", "none") else f"agent{os.getppid()}"
        stamp = f"{datetime.now():%Y-%m-%d}_torchrun-{suffix}"
    return stamp


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
