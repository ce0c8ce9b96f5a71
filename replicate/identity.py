"""What makes two runs the same computation: the one list of result-neutral settings, and the resolved
facts of execution that change float results.

A seed's numbers are determined by the configuration minus NEUTRAL_SETTINGS, plus execution_identity():
the device actually used (`auto` resolved), the intra-op thread count actually used, the dtype and
precision, the training path (batched or sequential) and the CPU kernels' instruction set. The
checkpoint fingerprint, the report's list of deviations and `compare combine=true` all read this list.

    stamp = fingerprint(cfg, execution_identity(device, threads, cfg, vectorize=True))
    is_neutral("runtime.progress")  # True: how a run is shown, not what it computes
"""
from __future__ import annotations

import hashlib
import json

# Settings that never change a seed's numbers: which paper's claims are judged (the claims pick no
# numbers; the model, data and optimizer do), which seeds run, logging, progress, output location,
# checkpoint cadence (resumes are bit for bit), where the data files live and whether absent ones may be
# downloaded (the data's content hash records what was read). `device`, `runtime.threads`
# and `train.batched` are neutral as settings because what they resolve to is in execution_identity().
NEUTRAL_SETTINGS = ("paper", "seeds", "seed", "logger", "wandb", "runtime", "device", "checkpoint", "resume",
                    "dry_run", "hydra", "data.root", "data.download", "train.batched")


def setting_key(override: str) -> str:
    """The dotted key of a command-line override or a flattened config key: '+train.stepz=5' → 'train.stepz'."""
    return override.split("=", 1)[0].lstrip("+~")


def is_neutral(key: str) -> bool:
    """True for a dotted key (or an override 'key=value') inside one of NEUTRAL_SETTINGS."""
    key = setting_key(key)
    return any(key == neutral or key.startswith(neutral + ".") for neutral in NEUTRAL_SETTINGS)


def result_settings(settings: dict, prefix: str = "") -> dict:
    """The nested config dict without its neutral settings: what determines the numbers."""
    kept = {}
    for key, value in settings.items():
        dotted = f"{prefix}{key}"
        if is_neutral(dotted):
            continue
        kept[key] = result_settings(value, dotted + ".") if isinstance(value, dict) else value
    return kept


def execution_identity(device, threads: int, cfg, *, vectorize: bool) -> dict:
    """The resolved facts of execution that change float results, as a plain dict (merged into the
    fingerprint; other sources of numerics, such as the BLAS, can be added as further keys)."""
    import torch

    identity = {"device": device.type, "threads": int(threads), "dtype": cfg.train.dtype,
                "precision": cfg.train.precision, "training_path": "batched" if vectorize else "sequential",
                "torch": torch.__version__,
                # the SIMD kernels ATen dispatches to (AVX2, AVX512, ...) round differently
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        identity["gpu"] = torch.cuda.get_device_name(device)
    return identity


def fingerprint(cfg, execution: dict) -> str:
    """A short hash of everything that determines the numbers a seed produces."""
    from omegaconf import OmegaConf

    settings = result_settings(OmegaConf.to_container(cfg, resolve=True))
    text = json.dumps({"settings": settings, "execution": execution}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
