"""Numerical proof of a conversion: train one small model under both conventions and compare parameters.

Both sides start from the same initialisation, see the same batches in the same order, and run in
float64 through the real trainer (replicate.train), each executing its own convention natively. An
exact rule leaves the two parameter trajectories equal to rounding (≤ 1e-12 after 100 steps).

    verify_conversion("sum", "mean", {"lr": 0.01, "momentum": 0.9}, optimizer="sgd", batch_size=32)
"""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from replicate import conventions
from replicate.config import Config
from replicate.data import load_dataset
from replicate.hyperparameters import build_plan
from replicate.train import train_seeds

TOLERANCE = 1e-12  # largest parameter difference an exact rule may leave after the run (float64)


def verification_config(optimizer: str, hparams: dict, *, batch_size: int, steps: int, seq_len: int | None,
                        schedule: str = "constant"):
    """A run config for the proof: a 16-32-10 MLP on synthetic data of 8 full batches, reshuffled each epoch."""
    return OmegaConf.merge(OmegaConf.structured(Config), {
        "model": {"name": "mlp", "input_size": 16, "output_size": 10, "hidden_size": 32},
        "data": {"name": "synthetic", "size": 8 * batch_size, "features": 16, "classes": 10, "seq_len": seq_len,
                 "order": "shuffle", "seed": 0},
        "optimizer": {"name": optimizer, "lr": hparams["lr"]},
        # a schedule that changes the learning rate is where lr-inside and lr-outside momentum part ways
        "schedule": {"name": schedule, "milestones": [steps // 2], "gamma": 0.1},
        "train": {"batch_size": batch_size, "steps": steps, "dtype": "float64", "eval_every": steps},
    })


def verify_conversion(source, target, hparams: dict, *, optimizer: str, batch_size: int, steps: int = 100,
                      seq_len: int | None = None, schedule: str = "constant") -> dict:
    """Train under `source` with `hparams` and under `target` with the converted ones; compare."""
    source, target = (conventions.get_convention(c) if isinstance(c, str) else c for c in (source, target))
    cfg = verification_config(optimizer, hparams, batch_size=batch_size, steps=steps, seq_len=seq_len, schedule=schedule)
    cfg = OmegaConf.merge(cfg, {"conventions": {field: getattr(source, field) for field in cfg.conventions}})
    data = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
    shared = dict(optimizer=optimizer, batch_size=batch_size, seq_len=seq_len, constant_lr=schedule == "constant")
    as_stated = build_plan(source, None, hparams, **shared)
    converted = build_plan(source, target, hparams, **shared)
    before = train_seeds(cfg, data, as_stated, [0], vectorize=False)[0].parameters
    after = train_seeds(cfg, data, converted, [0], vectorize=False)[0].parameters
    difference = max(float((before[name] - after[name]).abs().max()) for name in before)
    scale = max(float(tensor.abs().max()) for tensor in before.values())
    return {"steps": steps, "dtype": "float64", "max_abs_diff": difference, "max_abs_param": scale,
            "tolerance": TOLERANCE, "passed": difference <= TOLERANCE,
            "model": "MLP 16-32-10", "data": data.description["source"], "schedule": schedule,
            "exact_claimed": converted.exact}


def verify_language_model_conversion(paper: str, source, target, hparams: dict, *, steps: int = 100) -> dict:
    """The conversion proven on a language-model entry's own model and loop: its LSTM (11 words, 16 units), windows
    with the hidden state carried, its clip and its schedule, on random word ids, trained from one start under the
    entry's convention and under `target` (float64). The 16-32-10 MLP of verify_conversion is no proof for a sequence
    entry's step size: at lr 1 summed over 20 steps (a per-token lr of 20) its training is chaotic, and rounding
    differences of 1e-15 between two exact updates grow to 0.1 in 100 steps."""
    import numpy as np

    from replicate.config import compose
    from replicate.data import Dataset
    from replicate.datasets import ptb

    words = 11
    cfg = compose([f"paper={paper}", f"model.input_size={words}", f"model.output_size={words}", "model.hidden_size=16",
                   f"train.steps={steps}", f"train.eval_every={steps}", "train.dtype=float64", "logger=none"])
    rows, stream = cfg.train.batch_size, np.random.RandomState(0)
    lengths = {"train": rows * (3 * cfg.data.seq_len + 1), "valid": rows * (cfg.data.seq_len + 1), "test": 4 * cfg.data.seq_len}
    read = {**{split: stream.randint(0, words, size=n) for split, n in lengths.items()},
            "vocabulary": {f"w{i}": i for i in range(words)}, "description": {"source": "random word ids"}}
    data = Dataset(**ptb.window_fields(ptb.dataset_fields(read, device="cpu"), rows=rows, seq_len=cfg.data.seq_len))
    shared = dict(optimizer=cfg.optimizer.name, batch_size=rows, seq_len=cfg.data.seq_len, constant_lr=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a seed trained alone, as the trainer runs it (replicate.cpu.intra_op_threads)
    try:
        before = train_seeds(cfg, data, build_plan(source, None, hparams, **shared), [0], vectorize=False)[0].parameters
        after = train_seeds(cfg, data, build_plan(source, target, hparams, **shared), [0], vectorize=False)[0].parameters
    finally:
        torch.set_num_threads(threads)
    difference = max(float((before[name] - after[name]).abs().max()) for name in before)
    return {"steps": steps, "dtype": "float64", "max_abs_diff": difference, "tolerance": TOLERANCE,
            "max_abs_param": max(float(tensor.abs().max()) for tensor in before.values()),
            "passed": difference <= TOLERANCE, "model": f"{cfg.model.name} {words}-16-{words} (the entry's own model)",
            "data": read["description"]["source"], "schedule": cfg.schedule.name}
