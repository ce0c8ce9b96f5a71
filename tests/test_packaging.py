"""`pip install .` (a wheel, not only -e .) carries the Hydra configs, so `python -m replicate` finds them."""
import os
import subprocess
import sys
import zipfile

from conftest import ROOT
from replicate.hydra_setup import available_papers


def test_the_wheel_carries_every_config(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("replicate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "replicate/conf/config.yaml" in names
    assert "replicate/conf/hydra/launcher/slurm.yaml" in names
    assert "replicate/conf/hydra/launcher/parallel.yaml" in names
    assert "hydra_plugins/replicate_parallel/parallel_launcher.py" in names  # where Hydra's plugin scan looks
    assert "replicate/conf/hydra/help/replicate.yaml" in names  # python -m replicate --help
    for paper in available_papers():
        assert f"replicate/conf/paper/{paper}.yaml" in names

    # installed (a wheel is a zip of the package): the Hydra help is found, and the catalog tools, which
    # edit a checkout's papers/ and README.md, say so in one line instead of a traceback
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    environment = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    shown = subprocess.run([sys.executable, "-m", "replicate", "--help"], cwd=tmp_path, env=environment,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "mnist1d_cnn, mnist1d_double_descent" in shown.stdout, shown.stderr[-2000:]
    catalog = subprocess.run([sys.executable, "-m", "replicate.catalog", "readme"], cwd=tmp_path, env=environment,
                             capture_output=True, text=True, timeout=300)
    assert catalog.returncode == 2 and catalog.stderr.count("\n") == 1, catalog.stderr
    assert f"{site / 'papers'} does not exist: replicate.catalog edits the records of a git checkout" in catalog.stderr
