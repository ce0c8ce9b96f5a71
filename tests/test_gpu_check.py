"""scripts/gpu_check.sh is ready for the first GPU: it parses, answers a wrong option in one line, and
the configurations its parts run compose and pass the config check (the whole script runs on the CPU
with --cpu-dry-run; docs/gpu.md)."""
import subprocess

import pytest

from conftest import ROOT
from replicate.config import compose
from replicate.config_checks import check_config

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_an_unknown_option_is_a_one_line_error(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown option --gpu; allowed: --out DIR, --wheels DIR, --cpu-dry-run"]


@pytest.mark.parametrize("overrides", [
    ["paper=mnist1d_cnn", "seeds=2", "train.steps=300", "train.precision=bf16"],
    ["paper=mnist1d_cnn", "seeds=2", "train.steps=300", "train.precision=fp16"],
    ["paper=mnist1d_cnn", "seeds=2", "train.steps=300", "train.deterministic=true"],
    ["paper=sklearn_digits_constant", "model.name=cnn2d", "model.init=pytorch", "seeds=2", "train.steps=300",
     "train.channels_last=true", "train.precision=bf16"],
    ["paper=mnist1d_logistic", "seeds=2", "train.steps=300"],
], ids=lambda overrides: " ".join(overrides[3:]) or overrides[0])
def test_the_runs_of_the_script_compose_and_pass_the_config_check(overrides):
    check_config(compose(["device=cuda", "logger=none", "runtime.progress=false", *overrides]))
