"""Shared test helpers: run a replication in-process or as the user's command, in a temporary directory."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicate.numerics import DEFAULT_MODE, apply_numerics

# the suite computes under the CLI's default numerics (pins set before torch loads; a caller's own
# setting, such as ATEN_CPU_CAPABILITY=default, wins), so its float comparisons mean the same on every host
for problem in apply_numerics(DEFAULT_MODE):
    print(f"warning: {problem}", file=sys.stderr)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Generated datasets are cached once per test session, never in the user's home."""
    monkeypatch.setenv("REPLICATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def one_thread():
    """One intra-op thread unless a test sets more (the CLI's default for a seed trained alone)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_in_process(overrides, run_dir):
    """Compose like `python -m replicate <overrides>` and run the replication; returns the report dict."""
    from replicate.replication import replicate_paper
    from replicate.config import compose

    cfg = compose(["runtime.progress=false", *overrides])
    return replicate_paper(cfg, Path(run_dir), list(overrides))


def run_command(args, cwd=None, env=None, timeout=600):
    """Run `python -m <args>` as a user would; returns the CompletedProcess."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)
