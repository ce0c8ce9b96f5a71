"""The training loop, written out: one seed, or several seeds trained together as one computation.

Seeds train together as a SeedStack (replicate/seeds.py: every parameter on a leading seed axis).
Each seed keeps its own initialisation and data order, and the loss is the sum over seeds of each
seed's own loss, so each seed's gradient is exactly its solo gradient. Models that cannot be batched
train one seed at a time through the same code.

    results = train_seeds(cfg, data, plan, seeds=[0, 1, 2], vectorize=True)
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from replicate.checkpoint import Interrupted, load_checkpoint, save_checkpoint, stop_requested
from replicate.data import BatchOrder, Dataset
from replicate.optim import build_optimizer
from replicate.plan import Plan
from replicate.precision import SeedGradScaler, autocast, seed_rows
from replicate.seeds import SeedStack


@dataclass
class SeedResult:
    seed: int
    metrics: dict  # final metrics: accuracies as fractions, losses in nats
    curve: list = field(default_factory=list)  # learning-curve points: {"step", "train_loss", "test_accuracy", ...}
    diverged_at: int | None = None  # first step whose loss was not finite
    wall_time_s: float = 0.0
    path: str = "sequential"  # "batched" (vmap over seeds) or "sequential"
    parameters: dict = field(default_factory=dict, repr=False)  # final parameters by name (detached)


def total_steps(train_cfg, order: BatchOrder) -> int:
    return train_cfg.steps if train_cfg.steps is not None else train_cfg.epochs * order.steps_per_epoch


def lr_multiplier(schedule, step: int, steps: int, order: BatchOrder) -> float:
    """Factor on the base learning rate at optimizer step `step` (0-based)."""
    name = schedule.name
    if name == "constant":
        return 1.0
    if name == "step":
        return schedule.gamma ** (step // schedule.step_size)
    if name == "multistep":
        return schedule.gamma ** sum(step >= milestone for milestone in schedule.milestones)
    if name == "inv":  # Caffe lr_policy "inv": base_lr·(1 + gamma·iter)^(−power)
        return (1 + schedule.gamma * step) ** (-schedule.power)
    if name == "invscaling":  # scikit-learn: lr_init / (t + 1)^power_t, t = samples seen, updated after each epoch
        samples_seen = order.epoch_of(step) * order.n
        return 1.0 if samples_seen == 0 else 1.0 / (samples_seen + 1) ** schedule.power_t
    if name == "piecewise_linear":
        return float(np.interp(step / steps, schedule.knots, schedule.values))
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / steps))
    raise ValueError(f"unknown schedule {name!r}")


def per_example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each example, or of each token: (n_seeds, batch) or (n_seeds, batch, seq_len)."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none").view(targets.shape)


def reduce_loss(losses: torch.Tensor, reduction: str, examples: int) -> torch.Tensor:
    """Per-seed loss of (a part of) a batch under the executed convention's reduction, normalised by
    the count of the WHOLE global batch (`examples` examples): shards and micro-batches then add up
    to the full-batch loss exactly, whatever their sizes. losses: (n_seeds, part[, seq_len])."""
    if reduction == "mean":  # over examples, or over every token
        tokens = losses.shape[2] if losses.dim() == 3 else 1
        return losses.flatten(1).sum(1) / (examples * tokens)
    if reduction == "sum":  # over examples, or over every token
        return losses.flatten(1).sum(1)
    if reduction == "per_sequence_sum":  # Σ over time steps, mean over the batch (Zaremba et al. 2014)
        if losses.dim() != 3:
            raise ValueError("loss_reduction per_sequence_sum needs sequence data (data.seq_len)")
        return losses.sum(2).sum(1) / examples
    raise ValueError(f"unknown loss_reduction {reduction!r}")


def reported_values(logits, targets, losses, loss_value: str) -> torch.Tensor:
    """Per-example (or per-token) loss values as the source reports them, in float64. Reduced-precision
    logits (bf16/fp16 autocast) are widened first: the clipping and the log run in at least float32,
    never at bf16's epsilon (2^-7)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if loss_value == "clipped_log_loss":
        eps = torch.finfo(logits.dtype).eps
        probabilities = logits.softmax(-1).clamp(eps, 1 - eps)
        return -probabilities.gather(-1, targets.unsqueeze(-1)).squeeze(-1).log().to(torch.float64)
    return losses.to(torch.float64)


def world_and_rank() -> tuple[int, int]:
    """(number of processes, this one's rank) under torch.distributed; (1, 0) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def reported_loss(logits, targets, loss_value: str) -> torch.Tensor:
    """Mean reported loss per seed over a whole split."""
    losses = per_example_loss(logits, targets) if loss_value == "cross_entropy" else None
    return reported_values(logits, targets, losses, loss_value).flatten(1).mean(1)


def l2_penalty(stack: SeedStack, names, form: str, coefficient: float, batch: int) -> torch.Tensor:
    """Weight decay written into the loss, per seed: (n_seeds,)."""
    squares = sum(stack.param(name).flatten(1).pow(2).sum(1) for name in names)
    factor = {"l2_half": 0.5, "l2": 1.0, "per_batch_l2": 0.5 / batch}[form]  # per_batch_l2: sklearn alpha
    return factor * coefficient * squares


def clip_gradients(stack: SeedStack, max_norm: float | None, max_value: float | None) -> None:
    """Per-seed clipping of the gradients: elementwise to ±max_value, then the global norm to max_norm.

    The norm rule is the original one (Zaremba et al.'s main.lua: shrink by max_norm/norm when norm >
    max_norm); torch.nn.utils.clip_grad_norm_ adds 1e-6 to the norm, which would make a threshold
    conversion (c_mean = c_sum/B) inexact. Each seed's norm is reduced from its own gradient buffer
    alone, so it rounds the same whether the seed trains alone or with others.
    """
    grads = stack.grads()
    if max_value is not None:
        for grad in grads:
            grad.clamp_(-max_value, max_value)
    if max_norm is not None:
        norms = stack.gradient_norms()
        scale = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms))
        for grad in grads:
            grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))


@torch.no_grad()
def evaluate(stack: SeedStack, x, y, loss_value: str) -> dict:
    """Accuracy (fraction) and mean loss per seed on a whole split."""
    # examples per pass: few enough that several seeds' activations stay near the cache, and the same
    # for any number of seeds, because a matrix product's rounding may depend on its row count
    chunk = 512
    logits = torch.cat([stack(x[i:i + chunk].expand(stack.n_seeds, *x[i:i + chunk].shape))
                        for i in range(0, len(y), chunk)], dim=1)
    targets = y.expand(stack.n_seeds, *y.shape)
    accuracy = (logits.argmax(-1) == targets).to(torch.float64).flatten(1).mean(1)
    return {"accuracy": accuracy, "loss": reported_loss(logits, targets, loss_value)}


def train_seeds(cfg, data: Dataset, plan: Plan, seeds: list[int], *, vectorize: bool, progress=None,
                checkpoint: dict | None = None) -> list[SeedResult]:
    """Train `seeds` together (vectorize) or the single seed given. progress: anything with update(n),
    advanced by one per seed per step. checkpoint: {"path", "every" (steps, 0: none), "fingerprint"}: the state
    is saved every `every` steps and training resumes from the file if present. A stop signal
    (replicate.checkpoint.stop_requested) saves it at the next step boundary and raises Interrupted."""
    started = time.perf_counter()
    dtype, device = data.x_train.dtype, data.x_train.device
    update = plan.update
    # scikit-learn draws the init and every epoch's shuffle from one RandomState(random_state)
    streams = [np.random.RandomState(seed) for seed in seeds]
    stack = SeedStack(cfg.model, seeds, dtype=dtype, device=device, numpy_streams=streams, vectorize=vectorize,
                      channels_last=cfg.train.channels_last)
    order = BatchOrder(len(data.y_train), batch_size=cfg.train.batch_size, order=cfg.data.order, seeds=seeds,
                       drop_last=cfg.data.drop_last, numpy_streams=streams, device=device)
    steps = total_steps(cfg.train, order)
    decayed = stack.decayed(update.decay_biases)
    undecayed = [name for name in stack.leaves if name not in decayed]
    # the optimizer steps one buffer per parameter group, a row per seed (see SeedStack.flatten); without
    # weight decay, decayed and undecayed parameters are one group
    decay = update.optimizer.weight_decay
    groups, decays = ([decayed, undecayed], [decay, 0.0]) if decay and decayed and undecayed else ([decayed + undecayed], [decay])
    precision = cfg.train.precision
    buffers = stack.flatten(groups)
    if precision == "fp16":  # a row per seed in the optimizer: each seed's update can be skipped alone
        buffers = [seed_rows(group) for group in buffers]
    optimizer = build_optimizer([{"params": params, "weight_decay": coefficient}
                                 for params, coefficient in zip(buffers, decays)], update.optimizer)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    reduction, loss_form = update.loss_reduction, update.loss_l2_form
    native_form, native_l2 = update.reported_l2_form, update.reported_l2
    # the paper's evaluation cadence, unless a shortened run would get fewer than 10 points from it
    eval_every = cfg.train.eval_every if cfg.train.eval_every and steps >= 10 * cfg.train.eval_every else max(1, steps // 25)
    loss_value = cfg.train.loss_value
    # a claim on the training accuracy gets its learning curve: one more pass over the training set per point
    curve_train_accuracy = any(claim.metric == "train_accuracy" for claim in OmegaConf.select(cfg, "paper.claims", default=[]) or [])
    schedule = OmegaConf.to_object(cfg.schedule) if OmegaConf.is_config(cfg.schedule) else cfg.schedule  # plain object: no config lookups per step

    n_seeds = len(seeds)
    # each step's objective per seed, in the paper's own per-example units: written on the device, read
    # (one sync) only at evaluations and checkpoints, for the learning curve, the epoch loss and divergence
    objectives = torch.full((n_seeds, steps), math.nan, dtype=torch.float64, device=device)  # a row per seed
    batch_sizes: list[int] = []
    curves: list[list[dict]] = [[] for _ in seeds]
    start = last_point = 0
    scaler = SeedGradScaler(n_seeds, device) if precision == "fp16" else None  # fp16 gradients need loss scaling
    if checkpoint is not None and checkpoint["path"].exists():
        saved = load_checkpoint(checkpoint["path"], checkpoint["fingerprint"])
        with torch.no_grad():
            for name, leaf in stack.leaves.items():
                leaf.copy_(saved["params"][name])
        optimizer.load_state_dict(saved["optimizer"])
        order.load_state_dict(saved["order"])
        start, last_point, curves = saved["step"], saved["last_point"], saved["curves"]
        objectives[:, :start].copy_(saved["objectives"])
        batch_sizes = list(saved["batch_sizes"])
        if scaler is not None:
            scaler.load_state_dict(saved["scaler"])
        if progress is not None:
            progress.update(start * n_seeds)  # progress counts seed-steps
    world, rank = world_and_rank()
    if world > 1:
        stack.distribute(device)
    accum = cfg.train.accum_steps
    constant_lr = schedule.name == "constant"
    tokens = data.y_train.shape[1] if data.y_train.dim() == 2 else 1
    clipping = update.grad_clip is not None or update.grad_clip_value is not None

    def diverged_so_far(end: int) -> list[int | None]:
        """First step whose objective was not finite, per seed (one device sync)."""
        bad = ~torch.isfinite(objectives[:, :end])
        first = torch.where(bad.any(1), bad.to(torch.uint8).argmax(1), -1).tolist()
        return [None if value < 0 else value for value in first]

    step = start - 1
    for step in range(start, steps):
        indices = order.indices(step)  # (n_seeds, global batch): every rank draws the same order
        batch = indices.shape[1]
        # this rank's share of the global batch, in micro-batches
        parts = [indices] if world * accum == 1 else indices.tensor_split(world, dim=1)[rank].tensor_split(accum, dim=1)
        for micro, part in enumerate(parts):
            last = micro == len(parts) - 1
            with (contextlib.nullcontext() if last or world == 1 else stack.net.no_sync()), autocast(device, precision):
                x, y = data.x_train[part], data.y_train[part]
                logits = stack(x)
                losses = per_example_loss(logits, y)
                objective = reduce_loss(losses, reduction, batch)  # normalised by the global batch
                if world > 1:
                    objective = objective * world  # DDP averages gradients over ranks
                if last and loss_form is not None and update.loss_l2 > 0:  # once per rank; DDP's average keeps it once
                    objective = objective + l2_penalty(stack, decayed, loss_form, update.loss_l2, batch)
            # sum over seeds of per-seed losses: each seed keeps its own gradient scale (and loss scale)
            (scaler.scale(objective) if scaler else objective).sum().backward()
            with torch.no_grad():
                part_sum = reported_values(logits.detach(), y, losses.detach(), loss_value).flatten(1).sum(1)
                value_sum = part_sum if micro == 0 else value_sum + part_sum
        with torch.no_grad():  # this batch's objective in the paper's own per-example units
            if world > 1:
                torch.distributed.all_reduce(value_sum)
            torch.div(value_sum, batch * tokens, out=objectives[:, step])
            if native_l2 > 0:
                objectives[:, step] += l2_penalty(stack, decayed, native_form, native_l2, batch)
        batch_sizes.append(batch)
        if scaler:
            scaler.unscale_(optimizer)  # clip the true gradients
        if clipping:
            clip_gradients(stack, update.grad_clip, update.grad_clip_value)
        if not constant_lr:
            multiplier = lr_multiplier(schedule, step, steps, order)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * multiplier
        if scaler:
            with scaler.skipping(optimizer):  # a seed whose scaled gradients overflowed skips this step
                optimizer.step()
            scaler.update()
        else:
            optimizer.step()
        stack.zero_grad()
        evaluating = (step + 1) % eval_every == 0 or step + 1 == steps
        stopping = stop_requested() is not None and step + 1 < steps
        saving = (checkpoint is not None and checkpoint.get("save", True) and step + 1 < steps
                  and (stopping or (checkpoint["every"] > 0 and (step + 1) % checkpoint["every"] == 0)))
        if (evaluating or saving) and all(d is not None for d in diverged_so_far(step + 1)):
            break
        if evaluating:
            point = {"step": step + 1, "train_loss": objectives[:, last_point:step + 1].mean(1).tolist()}
            if data.x_test is not None:
                test = evaluate(stack, data.x_test, data.y_test, loss_value)
                point.update(test_accuracy=test["accuracy"].tolist(), test_loss=test["loss"].tolist())
            if curve_train_accuracy:
                point["train_accuracy"] = evaluate(stack, data.x_train, data.y_train, loss_value)["accuracy"].tolist()
            for m in range(n_seeds):
                curves[m].append({key: (value[m] if isinstance(value, list) else value) for key, value in point.items()})
            last_point = step + 1
        if saving:
            save_checkpoint(checkpoint["path"], {
                "fingerprint": checkpoint["fingerprint"], "step": step + 1,
                "params": {name: leaf.detach() for name, leaf in stack.leaves.items()},
                "optimizer": optimizer.state_dict(), "order": order.state_dict(),
                "objectives": objectives[:, :step + 1], "batch_sizes": batch_sizes, "last_point": last_point,
                "curves": curves, **({"scaler": scaler.state_dict()} if scaler else {})})
        if stopping:
            raise Interrupted(stop_requested(), step=step + 1, steps=steps, seeds=seeds, saved=saving)
        if progress is not None:
            progress.update(n_seeds)

    done = step + 1  # steps taken (fewer than `steps` when every seed diverged)
    diverged_at = diverged_so_far(done)
    final = {}
    train_eval = evaluate(stack, data.x_train, data.y_train, cfg.train.loss_value)
    final["train_accuracy"], final["train_loss"] = train_eval["accuracy"], train_eval["loss"]
    if data.x_test is not None:
        test_eval = evaluate(stack, data.x_test, data.y_test, cfg.train.loss_value)
        final["test_accuracy"], final["test_loss"] = test_eval["accuracy"], test_eval["loss"]
    # the objective averaged over the examples of the last epoch (or the part of it that ran)
    epoch_start = (done - 1) // order.steps_per_epoch * order.steps_per_epoch if done else 0
    weights = torch.tensor(batch_sizes[epoch_start:done], dtype=torch.float64, device=device)
    final["train_epoch_loss"] = (objectives[:, epoch_start:done] * weights).sum(1) / weights.sum().clamp(min=1)
    elapsed = time.perf_counter() - started
    results = []
    for m, seed in enumerate(seeds):
        metrics = {name: float(values[m]) for name, values in final.items()}
        if diverged_at[m] is not None:
            metrics = {name: float("nan") for name in metrics}
        results.append(SeedResult(seed, metrics, curves[m], diverged_at[m], elapsed / n_seeds,
                                  "batched" if vectorize and n_seeds > 1 else "sequential",
                                  {name: stack.param(name)[m].detach().clone() for name in stack.leaves}))
    return results
