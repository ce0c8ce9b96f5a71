"""runtime.numerics pins every library's code path before it loads; reports record the numerics; and
`python -m replicate.check` reruns a record under them and classifies what it finds. "Another machine"
is emulated by a fresh process with other dispatch settings."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_command
from replicate.catalog import read_result
from replicate.check import classify_seed, classify_values, float_noise_tolerance
from replicate.numerics import SETTINGS, host_isa, portable_settings

NATIVE_CAPABILITY = {"AMX": "AVX512", "AVX512": "AVX512", "AVX2": "AVX2"}.get(host_isa())
needs_avx2 = pytest.mark.skipif(NATIVE_CAPABILITY is None, reason="portable numerics need a CPU with AVX2")
SHORT_RUN = ["paper=mnist1d_mlp", "seeds=2", "train.steps=120", "logger=none", "runtime.progress=false"]


def unpinned_environment(**settings) -> dict:
    """This process's environment without the pins conftest set, plus `settings`: a fresh host's shell."""
    import os

    environment = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    return {**environment, **settings}


def libraries_in_a_fresh_process(mode: str, **settings) -> dict:
    """Which paths torch, numpy and OpenBLAS choose in a process that applies `mode` before loading them."""
    script = (f"from replicate.numerics import apply_numerics; apply_numerics({mode!r})\n"
              "import json, numpy, scipy.linalg, torch\n"
              "from numpy._core._multiarray_umath import __cpu_features__ as numpy_features\n"
              "from threadpoolctl import threadpool_info\n"
              "print(json.dumps({'aten': torch.backends.cpu.get_cpu_capability(),\n"
              "  'numpy_avx512': numpy_features.get('X86_V4', numpy_features.get('AVX512F')),\n"
              "  'openblas': sorted({p['architecture'] for p in threadpool_info() if p['internal_api'] == 'openblas'})}))")
    finished = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=unpinned_environment(**settings),
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


@needs_avx2
def test_portable_pins_every_library_to_its_avx2_path_and_native_leaves_the_choice():
    portable = libraries_in_a_fresh_process("portable")
    assert portable == {"aten": "AVX2", "numpy_avx512": False, "openblas": ["Haswell"]}
    native = libraries_in_a_fresh_process("native")
    assert native["aten"] == NATIVE_CAPABILITY
    # a caller's own setting wins over the pin (the team's check runs the suite with ATen's default kernels)
    assert libraries_in_a_fresh_process("portable", ATEN_CPU_CAPABILITY="default")["aten"] == "DEFAULT"


def run_fresh(args, **settings):
    """`python -m <args>` on a fresh host: none of the pins conftest set, plus `settings`."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=unpinned_environment(**settings),
                          capture_output=True, text=True, timeout=600)


def short_run(tmp_path, name, *overrides, **settings) -> dict:
    finished = run_fresh(["replicate", *SHORT_RUN, *overrides, f"hydra.run.dir={tmp_path / name}"], **settings)
    assert finished.returncode == 0, finished.stderr
    return json.loads((tmp_path / name / "report.json").read_text())


@needs_avx2
def test_the_cli_pins_before_torch_loads_and_the_report_records_the_numerics(tmp_path):
    report = short_run(tmp_path, "portable")
    numerics = report["numerics"]
    assert numerics["mode"] == "portable" and numerics["pinned"] and numerics["cpu_capability"] == "AVX2"
    assert numerics["settings"] == {name: value or None for name, value in portable_settings().items()}
    assert numerics["threads"] == report["execution"]["threads"] and numerics["dtype"] == "float32"
    assert len(numerics["data_sha256"]) == 16 and numerics["mkl"] and numerics["onednn"]
    native = short_run(tmp_path, "native", "runtime.numerics=native")["numerics"]
    assert native["cpu_capability"] == NATIVE_CAPABILITY and not native["pinned"]
    assert native["data_sha256"] == numerics["data_sha256"]  # the data are cached once, then loaded alike


def test_a_wrong_numerics_value_is_one_line_before_anything_loads(tmp_path):
    for value, expected in (("fast", "unknown runtime.numerics 'fast'; allowed: portable, native"),
                            ("portable,native", "one value per process")):
        finished = run_command(["replicate", f"runtime.numerics={value}", f"hydra.run.dir={tmp_path}"])
        assert finished.returncode == 2 and expected in finished.stderr
        assert len(finished.stderr.strip().splitlines()) == 1 and "Traceback" not in finished.stderr


@needs_avx2
def test_check_says_identical_for_a_rerun_and_the_shortened_check_says_so(tmp_path):
    short_run(tmp_path, "recorded")
    finished = run_command(["replicate.check", str(tmp_path / "recorded"), "format=json"])
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)
    assert result["classification"] == "identical" and result["shortened"] is None
    assert result["environment_differences"] == [] and result["likely_cause"] is None
    # shortened: the first seed for 48 of 120 steps, against the recorded curve at step 48
    finished = run_command(["replicate.check", str(tmp_path / "recorded" / "report.json"), "seeds=1", "train.steps=48"])
    assert finished.returncode == 0, finished.stderr
    assert "SHORTENED to 1 of 2 seeds, 48 of 120 steps" in finished.stdout
    assert finished.stdout.strip().endswith("classification: identical")


@needs_avx2
@pytest.mark.skipif(NATIVE_CAPABILITY == "AVX2", reason="on an AVX2 host native numerics are the portable ones")
def test_check_of_a_native_run_on_another_machine_names_the_instruction_set(tmp_path):
    # "another machine": the record was made with ATen's AVX-512 kernels, the rerun host offers AVX2 only
    short_run(tmp_path, "recorded", "runtime.numerics=native", "train.steps=600")
    report_path = tmp_path / "recorded" / "report.json"
    finished = run_fresh(["replicate.check", str(report_path), "format=json"], ATEN_CPU_CAPABILITY="avx2")
    result = json.loads(finished.stdout)
    assert result["classification"] != "identical", result
    assert any(d["field"] == "cpu_capability" for d in result["environment_differences"])
    assert result["likely_cause"].startswith("PyTorch ran other vector kernels (AVX512 → AVX2)")


def test_check_refuses_what_it_cannot_check_in_one_line(tmp_path):
    for args, expected in (([str(tmp_path / "nothing")], "does not exist"),
                           (["papers/mnist1d_mlp.md", "train.steps=10"], "stores final values only"),
                           (["papers/mnist1d_mlp.md", "seed=1"], "unknown option 'seed'"),
                           (["papers/mnist1d_mlp.md", "seeds=0"], "seeds must be a positive integer")):
        finished = run_command(["replicate.check", *args])
        assert finished.returncode == 2 and expected in finished.stderr, finished.stderr
        assert len(finished.stderr.strip().splitlines()) == 1


def test_classes_follow_the_documented_rules():
    assert float_noise_tolerance("test_accuracy", "%", 66.8, 1000, "float32") == pytest.approx(0.1)
    assert float_noise_tolerance("test_loss", None, 2.0, 1000, "float32") == pytest.approx(2 * 1000 * 2 ** -24, rel=1e-3)
    assert classify_seed(66.8, 66.8, None, 0.1) == "identical"
    assert classify_seed(0.243802, 0.24380212, 6, 1e-9) == "identical"  # a record's values rounded to 6 decimals
    assert classify_seed(66.8, 66.9, None, 0.1 + 1e-12) == "float_noise"
    assert classify_seed(66.8, 65.3, None, 0.1) == "differs"
    # the two hosts: same distribution; a shifted one: different
    avx2, avx512 = [66.8, 64.0, 63.7, 61.8, 66.7], [65.3, 64.5, 65.2, 63.4, 66.4]
    assert classify_values(avx2, avx512, ["differs"] * 5)[0] == "same_distribution"
    assert classify_values(avx2, [value - 10 for value in avx2], ["differs"] * 5)[0] == "different"
    assert classify_values([1.0], [2.0], ["differs"])[0] == "different"


@needs_avx2  # shortened to 2 seeds (about 15 s), so it runs with the suite: the catalog's bit-for-bit promise
@pytest.mark.skipif(not read_result(ROOT / "papers" / "mnist1d_mlp.md").get("numerics"),
                    reason="the record predates runtime.numerics: re-make it under portable numerics")
def test_the_catalog_record_of_the_mlp_reproduces_bit_for_bit_under_portable_numerics():
    # made under portable numerics, the record's exact per-seed values come back on any x86-64 host
    finished = run_command(["replicate.check", "papers/mnist1d_mlp.md", "seeds=2", "format=json"])
    result = json.loads(finished.stdout)
    assert result["classification"] == "identical", result
