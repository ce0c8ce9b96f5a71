"""Seeds fanned out as separate jobs (Hydra multirun) and combined back into one verdict per claim.

No cluster is needed: the SLURM launcher config is composed and submitted to a stand-in `sbatch` that
keeps the script it was given; submitit's local executor runs the same pickled jobs as SLURM would.
"""
import importlib.util
import json
import os
import stat

import pytest

from conftest import run_command


def _submitit_launcher_installed() -> bool:
    try:  # hydra_plugins is a namespace package that exists only once some plugin is installed
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:
        return False


needs_submitit = pytest.mark.skipif(not _submitit_launcher_installed(),
                                    reason="hydra-submitit-launcher is not installed (pip install '.[slurm]')")
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


@needs_submitit
def test_the_slurm_launcher_config_composes_with_one_task_per_gpu():
    # Hydra 1.3 refuses --cfg together with -m ("Only one of --run, --multirun, --cfg ..."), so the launcher
    # config is shown for one point of the sweep; hydra/launcher is the same for every point. (Not --resolve:
    # the hydra node alone cannot resolve ${paper.id}; the sbatch test below sees the resolved values.)
    result = run_command(["replicate", "paper=mnist1d_mlp", "seed=0", "hydra/launcher=slurm", "--cfg", "hydra"],
                         timeout=120)
    assert result.returncode == 0, result.stderr
    assert "submitit" in result.stdout and f"_target_: {SLURM_LAUNCHER}" in result.stdout
    for line in ("tasks_per_node: 1", "gpus_per_node: 1", "nodes: 1", "partition: ${oc.env:SLURM_PARTITION,null}"):
        assert f"    {line}\n" in result.stdout, line


@needs_submitit
def test_a_seed_sweep_submits_one_slurm_array_task_per_seed(tmp_path):
    """The real launcher → submitit → sbatch path, up to the cluster: the sbatch script it would submit."""
    bin_dir, script = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    stand_ins = {"sbatch": f'cp "$1" "{script}"\necho "sbatch: error: no cluster in this test" >&2\nexit 1\n',
                 "srun": "exit 1\n"}  # submitit only checks that srun exists
    for name, body in stand_ins.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    result = run_command(["replicate", "-m", "paper=mnist1d_cnn", "seed=0,1,2", "logger=none",
                          "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                         env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_PARTITION": "gpu",
                              "SLURM_ACCOUNT": "proj42"},
                         timeout=120)
    assert result.returncode != 0 and "no cluster in this test" in result.stderr
    submitted = script.read_text()
    for flag in ("--array=0-2%3", "--ntasks-per-node=1", "--gpus-per-node=1", "--nodes=1", "--partition=gpu",
                 "--account=proj42", "--cpus-per-task=4", "--mem=16GB", "--time=60", "--job-name=replicate"):
        assert f"#SBATCH {flag}\n" in submitted, flag
    assert "-m submitit.core._submit" in submitted


@needs_submitit
def test_submitit_runs_each_seed_as_its_own_job_with_its_own_report(tmp_path):
    """submitit_local pickles the task and the config store exactly as the SLURM launcher does."""
    result = run_command(["replicate", "-m", "paper=mnist1d_logistic", "seed=0,1", "train.steps=20", "logger=none",
                          "runtime.progress=false", "hydra/launcher=submitit_local",
                          f"hydra.sweep.dir={tmp_path}"], timeout=300)
    assert result.returncode == 0, result.stderr
    reports = sorted(tmp_path.glob("*/report.json"))
    assert [path.parent.name for path in reports] == ["0_mnist1d_logistic", "1_mnist1d_logistic"]
    assert [json.loads(path.read_text())["seeds"][0]["seed"] for path in reports] == [0, 1]


def test_a_multirun_over_seeds_combines_into_one_verdict_per_claim(tmp_path):
    result = run_command(["replicate", "-m", "paper=mnist1d_logistic", "seed=0,1", "train.steps=20", "logger=none",
                          "runtime.progress=false", f"hydra.sweep.dir={tmp_path}"], timeout=300)
    assert result.returncode == 0, result.stderr
    reports = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*/report.json"))]
    assert len(reports) == 2 and [len(report["seeds"]) for report in reports] == [1, 1]
    measured = [report["claims"][0]["measured"][0] for report in reports]

    combined = run_command(["replicate.compare", str(tmp_path), "combine=true", "format=json"], timeout=120)
    assert combined.returncode == 0, combined.stderr
    rows = json.loads(combined.stdout)
    assert len(rows) == len(reports[0]["claims"]) == 1
    row = rows[0]
    assert row["n"] == 2 and row["seeds"] == [0, 1] and len(row["run_dirs"]) == 2
    assert row["values"] == pytest.approx(measured)
    assert row["mean"] == pytest.approx(sum(measured) / 2)
