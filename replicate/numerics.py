"""Which floating-point code paths a run takes: pinned, so that any x86-64 host computes the same bits.

PyTorch (ATen), MKL, oneDNN, numpy and OpenBLAS each pick kernels for the CPU they find (AVX2, AVX-512,
AMX). Kernels for different instruction sets sum in different orders, so one run gives other last bits
on another host, and after thousands of Adam steps other accuracies. `runtime.numerics=portable` pins
each to a path that every x86-64 CPU with AVX2 runs alike (AVX2; MKL's COMPATIBLE branch), through the
environment, which each library reads once, when it loads; `native` lets each choose. This module sets the pins and describes the numerics a run used.

    problems = apply_numerics("portable")   # before torch or numpy are imported
    numerics = numerics_environment("portable", data=data, dtype="float32", precision="fp32")
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from importlib import metadata
from pathlib import Path

MODES = ("portable", "native")
DEFAULT_MODE = "portable"  # catalog records are made portable; cost measured in README "Bit for bit"

# What each library reads when it loads, and the value that selects its portable code path.
PORTABLE = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels (elementwise, reductions, optimizers)
    # MKL's conditional numerical reproducibility, for PyTorch's GEMMs: COMPATIBLE is the one branch MKL
    # honours on Intel and AMD alike (it runs other branches, AVX2 included, only on Intel CPUs, and
    # ignores them elsewhere); measured here, MKL_CBWR=AVX2 on an Intel host did not give an AMD host's bits
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN, which runs PyTorch's CPU convolutions: no AVX-512 or AMX kernels
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS: its AVX2 kernels
    "NPY_DISABLE_CPU_FEATURES": None,  # numpy's own loops (data generation): its targets above AVX2, by version
}
SETTINGS = tuple(PORTABLE)
# the fields of numerics_environment() that can change the bits a run computes (the rest describe):
# what the resume fingerprint must cover, so a run directory never mixes seeds of different numerics
FINGERPRINT_KEYS = ("settings", "cpu_capability", "blas", "mkl", "onednn", "openblas", "threads", "dtype",
                    "precision", "deterministic", "float32_matmul_precision", "data_sha256")


def fingerprint_fields(numerics: dict) -> dict:
    """The part of a numerics_environment() that belongs in checkpoint.fingerprint."""
    return {key: numerics.get(key) for key in FINGERPRINT_KEYS}


def numpy_targets_above_avx2() -> str:
    """numpy's dispatch targets above AVX2, by the names its version uses (it warns on a name it does
    not dispatch). numpy 2.4 grouped the x86 features into levels (X86_V3 = AVX2, X86_V4 = AVX-512)."""
    try:
        major, minor = (int(part) for part in re.findall(r"\d+", metadata.version("numpy"))[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return ""
    if (major, minor) >= (2, 4):
        return "X86_V4 AVX512_ICL AVX512_SPR"
    return "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


def portable_settings() -> dict:
    """The environment that pins every library to its portable path on this installation."""
    return {**PORTABLE, "NPY_DISABLE_CPU_FEATURES": numpy_targets_above_avx2()}


def requested_mode(argv: list[str]) -> str | None:
    """runtime.numerics=<mode> from a command line, or None when it is not given."""
    for argument in argv:
        if argument.lstrip("+").startswith("runtime.numerics="):
            return argument.split("=", 1)[1]
    return None


def check_mode(mode: str) -> str | None:
    """A one-line problem with a runtime.numerics value, or None."""
    if "," in mode:
        return (f"runtime.numerics={mode}: one value per process (each library reads it once, when it loads); "
                "run the modes as separate commands")
    if mode not in MODES:
        return f"unknown runtime.numerics {mode!r}; allowed: {', '.join(MODES)}"
    return None


def apply_numerics(mode: str) -> list[str]:
    """Set the pins of `mode` in the environment, where not set already (a caller's explicit setting wins
    and is recorded as applied). Returns what could not take effect: a library already loaded."""
    if mode != "portable":
        return []
    newly_set = [name for name, value in portable_settings().items() if value and name not in os.environ]
    for name in newly_set:
        os.environ[name] = portable_settings()[name]
    if not newly_set:  # the pins were in the environment already, before anything loaded in this process
        return []
    return [f"{module} was imported before the numerics pins were set; they may not apply to it"
            for module in ("torch", "numpy") if module in sys.modules]


def host_isa() -> str:
    """The widest x86 vector instruction set the CPU offers, from /proc/cpuinfo (what native would use)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return "below AVX2" if flags else "unknown"


def library_versions() -> dict:
    """MKL and oneDNN as PyTorch was built with them (its build report), and the kernels of any OpenBLAS loaded."""
    import torch

    build = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([^\n]+?) for", build)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", build)
    blas = re.search(r"BLAS_INFO=(\w+)", build)
    versions = {"blas": blas.group(1) if blas else None, "mkl": mkl.group(1) if mkl else None,
                "onednn": onednn.group(1) if onednn else None, "openblas": None}
    try:
        from threadpoolctl import threadpool_info

        # the kernel family only: which OpenBLAS copies are loaded (numpy's, scipy's) depends on what ran
        # before, and their versions follow numpy's and scipy's, which the report records
        openblas = sorted({str(pool.get("architecture")) for pool in threadpool_info()
                           if pool.get("internal_api") == "openblas"})
        versions["openblas"] = ", ".join(openblas) or None
    except ImportError:
        pass
    return versions


def data_sha256(data) -> str | None:
    """A content hash of the training and test tensors as loaded (dtype, shape and bytes)."""
    import torch

    if data is None:
        return None
    digest = hashlib.sha256()
    for tensor in (data.x_train, data.y_train, data.x_test, data.y_test):
        if tensor is None:
            digest.update(b"none")
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def numerics_environment(mode: str, *, data=None, dtype: str = "float32", precision: str = "fp32") -> dict:
    """What decided this process's floating-point results: the pins as applied (the environment as the
    libraries read it), the paths they chose, library versions, threads, precision and determinism
    settings, and the data's content hash. `pinned` says whether the portable pins are all in force."""
    import torch

    settings = {name: os.environ.get(name) for name in SETTINGS}
    wanted = portable_settings()
    capability = torch.backends.cpu.get_cpu_capability()
    pinned = all(settings[name] == value for name, value in wanted.items() if value) and capability == "AVX2"
    return {
        "mode": mode,
        "pinned": pinned if mode == "portable" else False,
        "settings": settings,
        "cpu_capability": capability,
        "host_isa": host_isa(),
        **library_versions(),
        "threads": torch.get_num_threads(),
        "dtype": dtype,
        "precision": precision,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "data_sha256": data_sha256(data),
    }
