"""`pip install .` (a wheel, not only -e .) carries the Hydra configs, so `python -m replicate` finds them."""
import subprocess
import sys
import zipfile

from conftest import ROOT
from replicate.cli import available_papers


def test_the_wheel_carries_every_config(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("replicate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "replicate/conf/config.yaml" in names
    assert "replicate/conf/hydra/launcher/slurm.yaml" in names
    for paper in available_papers():
        assert f"replicate/conf/paper/{paper}.yaml" in names
