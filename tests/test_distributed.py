"""Scaling out keeps the update: DDP over 2 gloo processes and gradient accumulation equal one process
on the same global batch, under every loss reduction; `torchrun -m replicate` writes one report."""
import json
import os
import shutil
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from conftest import ROOT, run_command
from replicate import conventions
from replicate.config import compose
from replicate.data import load_dataset
from replicate.hyperparameters import build_plan, make_plan
from replicate.train import train_seeds
from replicate.conversion_proof import verification_config

CASES = [("mean", None), ("sum", None), ("per_sequence_sum", 4), ("mean", 4)]


def train_parameters(reduction, seq_len, dtype, *, accum_steps=1, seeds=(0,), vectorize=False):
    """Final parameters of a short SGD+momentum run on the verification model (global batch 16)."""
    cfg = verification_config("sgd", {"lr": 0.05}, batch_size=16, steps=20, seq_len=seq_len)
    cfg.train.dtype, cfg.train.accum_steps = dtype, accum_steps
    convention = conventions.get_convention(reduction)
    for field in ("loss_reduction", "weight_decay_form", "momentum_form", "eps_placement", "lr_unit"):
        cfg.conventions[field] = getattr(convention, field)
    data = load_dataset(cfg.data, dtype=getattr(torch, dtype), device="cpu")
    hparams = {"lr": 0.05 if reduction == "mean" else 0.002, "momentum": 0.9, "weight_decay": 1e-3, "grad_clip": 1.0}
    plan = build_plan(convention, None, hparams, optimizer="sgd", batch_size=16, seq_len=seq_len)
    results = train_seeds(cfg, data, plan, list(seeds), vectorize=vectorize)
    return [result.parameters for result in results]


DDP_CASES = [(reduction, seq_len, dtype, False) for reduction, seq_len in CASES for dtype in ("float64", "float32")]
DDP_CASES.append(("sum", None, "float64", True))  # seeds batched under vmap inside DDP


def _worker(rank, world, port, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {case: train_parameters(case[0], case[1], case[2], seeds=(0, 1) if case[3] else (0,), vectorize=case[3])
                   for case in DDP_CASES}
        if rank == 0:
            torch.save({repr(case): value for case, value in results.items()}, out)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def largest_difference(a, b):
    return max(float((x[name] - y[name]).abs().max()) for x, y in zip(a, b) for name in x)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    """Every DDP case trained once by two gloo processes on loopback (one spawn for all cases)."""
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("case", DDP_CASES, ids=repr)
def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(two_process_results, case):
    reduction, seq_len, dtype, vectorize = case
    single = train_parameters(reduction, seq_len, dtype, seeds=(0, 1) if vectorize else (0,), vectorize=vectorize)
    tolerance = 1e-12 if dtype == "float64" else 1e-6
    assert largest_difference(two_process_results[repr(case)], single) <= tolerance


@pytest.mark.parametrize("reduction, seq_len", CASES)
@pytest.mark.parametrize("accum_steps", [2, 3])  # 16 = 8 + 8, and 16 = 6 + 5 + 5 (unequal micro-batches)
def test_gradient_accumulation_equals_the_full_batch(reduction, seq_len, accum_steps):
    full = train_parameters(reduction, seq_len, "float64")
    accumulated = train_parameters(reduction, seq_len, "float64", accum_steps=accum_steps)
    assert largest_difference(full, accumulated) <= 1e-12


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_torchrun_writes_one_report_equal_to_a_single_process_run(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    # device=cpu: gloo on the CPU even on a GPU machine (two ranks cannot share one GPU under NCCL)
    common = ["paper=mnist1d_logistic", "seeds=2", "train.steps=60", "train.dtype=float64", "logger=none",
              "runtime.progress=false", "device=cpu"]
    import subprocess

    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "replicate", *common,
                             f"hydra.run.dir={tmp_path / 'ddp'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("report:") == 1  # only rank 0 reports
    single = run_command(["replicate", *common, f"hydra.run.dir={tmp_path / 'single'}"])
    assert single.returncode == 0, single.stderr
    ddp = json.loads((tmp_path / "ddp" / "report.json").read_text())
    one = json.loads((tmp_path / "single" / "report.json").read_text())
    assert ddp["execution"]["world_size"] == 2 and ddp["execution"]["backend"] == "gloo"
    for a, b in zip(ddp["seeds"], one["seeds"]):
        for metric, value in b["metrics"].items():
            assert a["metrics"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_reduced_precision_and_determinism_switches_run_and_are_recorded(tmp_path):
    from conftest import run_in_process

    report = run_in_process(["paper=mnist1d_mlp", "seeds=2", "train.steps=30", "logger=none", "train.precision=bf16",
                             "train.deterministic=true"], tmp_path)
    assert report["execution"]["precision"] == "bf16" and report["execution"]["deterministic"] is True
    assert all(seed["diverged_at"] is None for seed in report["seeds"])
    assert "train.precision=bf16" in " ".join(report["deviations"])  # a change of the paper's recipe is a deviation
    torch.use_deterministic_algorithms(False)


def test_fp16_trains_with_loss_scaling_on_cpu(tmp_path):
    # float16 autocast needs GradScaler: the loss is scaled up for backward and the gradients unscaled
    # (in the optimizer buffers) before clipping and the step
    from conftest import run_in_process

    report = run_in_process(["paper=mnist1d_mlp", "seeds=2", "train.steps=40", "logger=none", "train.precision=fp16",
                             "optimizer.grad_clip=1.0"], tmp_path)
    assert report["execution"]["precision"] == "fp16"
    for seed in report["seeds"]:
        assert seed["diverged_at"] is None
        assert seed["curve"][-1]["train_loss"] < seed["curve"][0]["train_loss"]  # it learns


def test_channels_last_keeps_convolution_weights_nhwc_and_the_same_results(tmp_path):
    # the 8×8 digits through a 2-D CNN, 2 seeds one by one (under vmap NHWC seeds train one by one anyway:
    # tests/test_precision.py): NHWC weights change memory order, not math
    from conftest import run_in_process
    from replicate.seed_stack import SeedStack

    common = ["paper=sklearn_digits_constant", "model.name=cnn2d", "model.init=pytorch", "seeds=2", "train.steps=20",
              "logger=none", "train.batched=false"]
    nhwc = run_in_process([*common, "train.channels_last=true"], tmp_path / "nhwc")
    nchw = run_in_process([*common, "train.channels_last=false"], tmp_path / "nchw")
    assert nhwc["execution"]["channels_last"] is True and nhwc["training_path"] == nchw["training_path"] == "sequential"
    for a, b in zip(nhwc["seeds"], nchw["seeds"]):
        for metric, value in b["metrics"].items():
            assert a["metrics"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), metric
    cfg = compose([*common, "train.channels_last=true"])
    for seeds, vectorize in (([0, 1], True), ([0], False)):
        stack = SeedStack(cfg.model, seeds, dtype=torch.float64, device="cpu", vectorize=vectorize, channels_last=True)
        stack.flatten([list(stack.leaves)])  # parameters become views of the optimizer's buffers: still NHWC
        for name in ("conv1.weight", "conv2.weight"):
            assert stack.param(name)[0].is_contiguous(memory_format=torch.channels_last), name


def _resume_false_worker(rank, world, port, run_dir, out):
    """train_or_resume with resume=false in a run directory holding a finished run's seed files, rank 0
    arriving 2 s after rank 1: a rank that read the old files itself would skip training and leave the
    others waiting in their collectives (here: the 60 s gloo timeout)."""
    import time
    from datetime import timedelta
    from pathlib import Path

    import torch.distributed as dist
    from tqdm import tqdm

    from replicate.replication import train_or_resume

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        cfg, data, plan = _short_run(resume=False)
        if rank == 0:
            time.sleep(2)
        results = train_or_resume(cfg, data, plan, [0, 1], Path(run_dir), vectorize=False, steps=20,
                                  progress=tqdm(disable=True), execution=_EXECUTION, writer=rank == 0)
        torch.save({result.seed: result.metrics for result in results}, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _short_run(resume):
    cfg = compose(["paper=mnist1d_logistic", "seeds=2", "train.steps=20", "train.dtype=float64", "logger=none",
                   f"resume={str(resume).lower()}"])
    data = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
    return cfg, data, make_plan(cfg, n_train=len(data.y_train))


# the resolved execution both the earlier run and the ranks share (one thread, sequential, on the CPU)
_EXECUTION = {"device": "cpu", "threads": 1, "training_path": "sequential"}


def test_torchrun_with_resume_false_retrains_on_every_rank_whatever_each_rank_sees_first(tmp_path):
    from replicate.checkpoint import save_seed_result
    from replicate.identity import fingerprint

    cfg, _, _ = _short_run(resume=False)
    for seed in (0, 1):  # a finished earlier run of the same configuration, with a metric no run can give
        save_seed_result(tmp_path / "run", {"fingerprint": fingerprint(cfg, _EXECUTION), "seed": seed, "metrics": {"test_accuracy": -1.0},
                                            "curve": [], "diverged_at": None, "wall_time_s": 0.0, "path": "sequential"})
    mp.spawn(_resume_false_worker, args=(2, free_port(), str(tmp_path / "run"), str(tmp_path / "metrics")), nprocs=2,
             join=True)
    for rank in (0, 1):
        metrics = torch.load(tmp_path / f"metrics-{rank}.pt", weights_only=True)
        assert all(0 <= metrics[seed]["test_accuracy"] <= 1 for seed in (0, 1)), rank


def test_a_local_rank_without_its_own_gpu_is_a_one_line_error():
    from replicate.replication import rank_device
    from replicate.config import ConfigError

    assert rank_device(1, 2, 2) == torch.device("cuda", 1)
    for local_rank in (0, 1):  # both ranks fail: neither waits for the other to join
        with pytest.raises(ConfigError, match=r"started 2 processes on this machine but it has 1 CUDA device\(s\); "
                                              r"use --nproc_per_node=1 or fewer, or device=cpu"):
            rank_device(local_rank, 2, 1)
    with pytest.raises(ConfigError, match="started 2 processes"):  # LOCAL_WORLD_SIZE unset: the rank says enough
        rank_device(1, 1, 1)
