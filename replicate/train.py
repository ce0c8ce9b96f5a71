"""The training loop, written out: one seed, or several seeds trained together as one computation.

Seeds train together as a SeedStack (replicate/seed_stack.py: every parameter on a leading seed axis).
Each seed keeps its own initialisation and data order, and the loss is the sum over seeds of each
seed's own loss, so each seed's gradient is exactly its solo gradient. Models that cannot be batched
train one seed at a time through the same code. What a run measures (the learning curves, the final metrics
and their names) is replicate/evaluation.py.

    results = train_seeds(cfg, data, plan, seeds=[0, 1, 2], vectorize=True)

`train_seeds` is the outer loop; `train_step` computes one batch's gradients and `apply_update`
steps the optimizer. The pieces beside them each hold one concern: `Shard` (torchrun),
`LearningRate` (the schedule), `Checkpoints` (saving and resuming); `Record` (replicate/evaluation.py)
keeps the objective per step, the learning curves and divergence.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import OmegaConf

from replicate.checkpoint import Interrupted, load_checkpoint, save_checkpoint, stop_requested
from replicate.augment import DROPOUT_STREAM, alternating_flips, augment_seeds, flip_orientations, is_active, step_seed
from replicate.data import BatchOrder, Dataset
from replicate.early_stopping import EarlyStopping
from replicate.evaluation import Record, eval_every, evaluate, final_metrics
from replicate.errors import ConfigError
from replicate.freezing import Freezing
from replicate.hyperparameters import Plan, Update
from replicate.lookahead import Lookahead
from replicate.language_model import EpochStates, is_language_model
from replicate.loss import l2_penalty, per_example_loss, reduce_loss, reported_values
from replicate.optim import build_optimizer, parameter_groups
from replicate.precision import SeedGradScaler, autocast, seed_rows
from replicate.schedule import lr_multiplier
from replicate.seed_stack import SeedStack



@dataclass
class SeedResult:
    seed: int
    metrics: dict  # final metrics: accuracies as fractions, losses in nats
    curve: list = field(default_factory=list)  # learning-curve points: {"step", "train_loss", "test_accuracy", ...}
    diverged_at: int | None = None  # first step whose loss was not finite
    wall_time_s: float = 0.0
    path: str = "sequential"  # "batched" (vmap over seeds) or "sequential"
    parameters: dict = field(default_factory=dict, repr=False)  # final parameters by name (detached)
    early_stopping: dict | None = None  # train.early_stopping: best step, stop, validations (EarlyStopping.summary)


def total_steps(train_cfg, order: BatchOrder) -> int:
    return train_cfg.steps if train_cfg.steps is not None else train_cfg.epochs * order.steps_per_epoch


def train_seeds(cfg, data: Dataset, plan: Plan, seeds: list[int], *, vectorize: bool, progress=None,
                checkpoint: dict | None = None) -> list[SeedResult]:
    """Train `seeds` together (vectorize) or the single seed given. progress: anything with update(n),
    advanced by one per seed per step. checkpoint: {"path", "every" (steps, 0: none), "fingerprint"}: the state
    is saved every `every` steps and training resumes from the file if present. A stop signal
    (replicate.checkpoint.stop_requested) saves it at the next step boundary and raises Interrupted."""
    started = time.perf_counter()
    device, n_seeds = data.x_train.device, len(seeds)
    stack, order = seed_stack(cfg, data, seeds, vectorize)
    steps = total_steps(cfg.train, order)
    decayed = stack.decayed(plan.update.decay_biases)
    optimizer = make_optimizer(stack, decayed, plan.update, cfg.train.precision)
    objective = Objective.of(plan.update, decayed, cfg.train)
    inputs = Inputs.of(cfg, data, seeds, stack, order.steps_per_epoch)
    learning_rate = LearningRate(cfg.schedule, optimizer, steps, order)  # base lrs: before a checkpoint's are loaded
    scaler = SeedGradScaler(n_seeds, device) if cfg.train.precision == "fp16" else None  # fp16 gradients need loss scaling
    record = Record(n_seeds, steps, device, eval_every(cfg.train.eval_every, steps), cfg.train.tta)
    # each seed selects its best validation point and stops on its own (replicate.early_stopping)
    stopper = EarlyStopping(cfg.train.early_stopping, stack, steps) if cfg.train.early_stopping.enabled else None
    frozen = Freezing(cfg.train.freeze, order.steps_per_epoch, list(stack.leaves))
    lookahead = Lookahead.over(stack, cfg.lookahead, steps)  # after the optimizer: parameters are views of its buffers
    saver = Checkpoints(checkpoint, steps)
    # language models: the hidden state at each epoch's start, as main.lua leaves it (replicate.language_model)
    epochs = EpochStates(stack.module, data, order.steps_per_epoch, steps) if is_language_model(stack.module) else None
    start = saver.restore(stack, optimizer, order, record, scaler, stopper, lookahead)
    if progress is not None and start:
        progress.update(start * n_seeds)  # progress counts seed-steps
    shard = Shard.current(cfg.train.accum_steps)
    if shard.world > 1:
        stack.distribute(device)
    # a claim on the training accuracy gets its learning curve: one more pass over the training set per point
    curve_train_accuracy = any(claim.metric == "train_accuracy" for claim in OmegaConf.select(cfg, "paper.claims", default=[]) or [])

    step = start - 1
    for step in range(start, steps):
        # (n_seeds, global batch) indices: every rank draws the same order
        batch = train_step(stack, inputs, order.indices(step), step, objective, shard, scaler, out=record.objectives[:, step])
        record.batch_sizes.append(batch)
        with frozen.holding(stack, step):
            apply_update(stack, optimizer, scaler, plan.update, learning_rate, step)
        if lookahead is not None:
            lookahead.after_step(step + 1)
        if epochs:
            epochs.after_step(step + 1)
        if stopper is not None and stopper.after_step(stack, data, step, lambda *split: evaluate(*split, cfg.train.loss_value)):
            break  # every seed's patience has run out
        evaluating, stopping = record.due(step + 1), stop_requested() is not None and step + 1 < steps
        saving = saver.due(step + 1, stopping)
        if (evaluating or saving) and record.all_diverged(step + 1):
            break
        if evaluating:
            record.add_point(stack, data, step + 1, cfg.train.loss_value, curve_train_accuracy)
        if saving:
            saver.save(step + 1, stack, optimizer, order, record, scaler, stopper, lookahead)
        if stopping:
            raise Interrupted(stop_requested(), step=step + 1, steps=steps, seeds=seeds, saved=saving)
        if progress is not None:
            progress.update(n_seeds)

    done = step + 1  # steps taken (fewer than `steps` when every seed diverged or stopped early)
    ends = [done] * n_seeds if stopper is None else [stopped or done for stopped in stopper.stopped_at]  # per seed
    if stopper is not None:
        stopper.restore_best(stack)  # the final metrics are each seed's best validation point's
    final = final_metrics(stack, data, record, done, order.steps_per_epoch, cfg.train.loss_value)
    if stopper is not None:  # the epoch that led to each seed's best point
        final["train_epoch_loss"] = torch.stack([record.epoch_loss(best or done, order.steps_per_epoch)[m]
                                                 for m, best in enumerate(stopper.best_step)])
    diverged_at, elapsed = record.diverged(done), time.perf_counter() - started
    diverged_at = [first if first is not None and first < end else None for first, end in zip(diverged_at, ends)]
    results = []
    for m, seed in enumerate(seeds):
        metrics = {name: float("nan") if diverged_at[m] is not None else float(values[m]) for name, values in final.items()}
        results.append(SeedResult(seed, metrics, [point for point in record.curves[m] if point["step"] <= ends[m]],
                                  diverged_at[m], elapsed / n_seeds, "batched" if vectorize and n_seeds > 1 else "sequential",
                                  {name: stack.param(name)[m].detach().clone() for name in stack.leaves},
                                  None if stopper is None else stopper.summary(m)))
    return results


def seed_stack(cfg, data: Dataset, seeds: list[int], vectorize: bool) -> tuple[SeedStack, BatchOrder]:
    """The seeds' models and their batch orders; scikit-learn draws the init and every epoch's shuffle from
    one RandomState(random_state), so each seed's two share one numpy stream."""
    dtype, device = data.x_train.dtype, data.x_train.device
    if not dtype.is_floating_point:  # word ids: the model's own numbers in the run's dtype
        dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.train.dtype]
    streams = [np.random.RandomState(seed) for seed in seeds]
    stack = SeedStack(cfg.model, seeds, dtype=dtype, device=device, numpy_streams=streams, vectorize=vectorize,
                      channels_last=cfg.train.channels_last)
    order = BatchOrder(len(data.y_train), batch_size=cfg.train.batch_size, order=cfg.data.order, seeds=seeds,
                       drop_last=cfg.data.drop_last, numpy_streams=streams, device=device,
                       file_batch_size=cfg.data.file_batch_size)
    if not vectorize and hasattr(stack.module, "initialize_from_training_data"):
        stack.module.initialize_from_training_data(data.x_train)  # airbench's whitening layer: the same images for every seed
    return stack, order


def make_optimizer(stack: SeedStack, decayed: list[str], update: Update, precision: str):
    """The optimizer over the stack: one buffer per parameter group (replicate.optim.parameter_groups), a row
    per seed (SeedStack.flatten)."""
    try:
        groups = parameter_groups(list(stack.leaves), decayed, update.optimizer.weight_decay, update.bias_lr_mult,
                                  update.group_overrides())
    except ValueError as error:  # a param_groups pattern that matches no parameter of this model
        raise ConfigError(str(error)) from None
    buffers = stack.flatten([names for names, _, _ in groups])
    if precision == "fp16":  # a row per seed in the optimizer: each seed's update can be skipped alone
        buffers = [seed_rows(group) for group in buffers]
    return build_optimizer([{"params": params, "weight_decay": decay,
                             **({"lr": update.optimizer.lr * multiplier} if multiplier != 1 else {})}
                            for params, (_, decay, multiplier) in zip(buffers, groups)], update.optimizer)


@dataclass(frozen=True)
class Objective:
    """What a step minimises (the executed reduction, weight decay written into the loss) and what it
    reports (the source's loss values, the paper's own L2 term), per seed."""

    reduction: str
    l2: float
    l2_form: str | None
    reported_l2: float
    reported_l2_form: str | None
    decayed: tuple[str, ...]  # the parameters the L2 terms cover
    loss_value: str  # one of replicate.loss.LOSS_VALUES
    precision: str  # "fp32" | "bf16" | "fp16": the forward pass's autocast
    label_smoothing: float = 0.0  # in the loss minimised and in the objective reported per step

    @classmethod
    def of(cls, update: Update, decayed: list[str], train_cfg) -> Objective:
        return cls(update.loss_reduction, update.loss_l2, update.loss_l2_form, update.reported_l2,
                   update.reported_l2_form, tuple(decayed), train_cfg.loss_value, train_cfg.precision,
                   train_cfg.label_smoothing)


def train_step(stack: SeedStack, inputs: Inputs, indices: torch.Tensor, step: int, objective: Objective, shard: Shard,
               scaler: SeedGradScaler | None, *, out: torch.Tensor) -> int:
    """The gradients of one global batch (indices: (n_seeds, batch)) on this rank's share, accumulated in
    the stack; writes into `out` each seed's objective in the paper's own per-example units, the paper's
    L2 term included. Returns the global batch size."""
    data = inputs.data
    batch, device, decayed = indices.shape[1], data.x_train.device, list(objective.decayed)
    parts = inputs.micro_batches(indices, step, shard)
    for micro, (x, y) in enumerate(parts):
        last = micro == len(parts) - 1
        with (contextlib.nullcontext() if last or shard.world == 1 else stack.net.no_sync()), autocast(device, objective.precision):
            inputs.reseed(step, shard, micro)
            logits = stack(x)
            losses = per_example_loss(logits, y, objective.label_smoothing)
            loss = reduce_loss(losses, objective.reduction, batch)  # normalised by the global batch
            if shard.world > 1:
                loss = loss * shard.world  # DDP averages gradients over ranks
            if last and objective.l2_form is not None and objective.l2 > 0:  # once per rank; DDP's average keeps it once
                loss = loss + l2_penalty(stack, decayed, objective.l2_form, objective.l2, batch)
        # sum over seeds of per-seed losses: each seed keeps its own gradient scale (and loss scale)
        (scaler.scale(loss) if scaler else loss).sum().backward()
        with torch.no_grad():
            part_sum = reported_values(logits.detach(), y, losses.detach(), objective.loss_value).flatten(1).sum(1)
            value_sum = part_sum if micro == 0 else value_sum + part_sum
    with torch.no_grad():  # this batch's objective in the paper's own per-example units
        if shard.world > 1:
            torch.distributed.all_reduce(value_sum)
        tokens = data.y_train.shape[1] if data.y_train.dim() == 2 else 1
        torch.div(value_sum, batch * tokens, out=out)
        if objective.reported_l2 > 0:
            out += l2_penalty(stack, decayed, objective.reported_l2_form, objective.reported_l2, batch)
    return batch


@dataclass(frozen=True)
class Inputs:
    """How a step's examples reach the model: the training split, augmented on the device with each seed's
    (seed, step) draws where the recipe augments (replicate.augment), and the dropout masks drawn from
    (seed, step, rank, micro-batch) where the model has dropout, so a resumed run draws what it would have."""

    data: Dataset
    seeds: tuple[int, ...]
    augment: object | None  # the augment config, or None: the images as they are
    dropout: bool  # the model draws random masks (it trains its seeds alone: SeedStack.trains_seeds_alone)
    steps_per_epoch: int = 0  # for augment.flip_alternating, whose orientation changes each epoch
    first_orientations: torch.Tensor | None = None  # augment.flip_alternating: (n_seeds, n_train) bool, drawn once

    @classmethod
    def of(cls, cfg, data: Dataset, seeds: list[int], stack: SeedStack, steps_per_epoch: int = 0) -> Inputs:
        augment = OmegaConf.select(cfg, "augment")
        augment = augment if is_active(augment) else None
        first = None
        if augment is not None and augment.flip and augment.flip_alternating:
            first = flip_orientations(seeds, len(data.y_train), data.y_train.device)
        return cls(data, tuple(seeds), augment, stack.trains_seeds_alone, steps_per_epoch, first)

    def micro_batches(self, indices: torch.Tensor, step: int, shard: Shard) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) of this rank's micro-batches. The whole global batch is augmented, then shared out: the same
        images however many ranks and micro-batches compute it."""
        parts = shard.parts(indices)
        if self.augment is None:
            return [(self.data.x_train[part], self.data.y_train[part]) for part in parts]
        flips = None
        if self.first_orientations is not None:
            flips = alternating_flips(self.first_orientations, indices, step // self.steps_per_epoch)
        images = shard.parts(augment_seeds(self.data.x_train[indices], self.augment, list(self.seeds), step, flips))
        return [(x, self.data.y_train[part]) for x, part in zip(images, parts)]

    def reseed(self, step: int, shard: Shard, micro: int) -> None:
        if self.dropout:
            torch.manual_seed(step_seed(self.seeds[0], (step * shard.world + shard.rank) * shard.accum_steps + micro,
                                        DROPOUT_STREAM))


def apply_update(stack: SeedStack, optimizer, scaler: SeedGradScaler | None, update: Update,
                 learning_rate: LearningRate, step: int) -> None:
    """Clip the accumulated gradients, set this step's learning rate, step the optimizer, clear the gradients."""
    if scaler:
        scaler.unscale_(optimizer)  # clip the true gradients
    if update.grad_clip is not None or update.grad_clip_value is not None:
        clip_gradients(stack, update.grad_clip, update.grad_clip_value)
    learning_rate.set(step)
    if scaler:
        with scaler.skipping(optimizer):  # a seed whose scaled gradients overflowed skips this step
            optimizer.step()
        scaler.update()
    else:
        optimizer.step()
    stack.zero_grad()


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


@dataclass(frozen=True)
class Shard:
    """This process's share of each global batch under torchrun: its rank's slice, in accum_steps micro-batches."""

    world: int
    rank: int
    accum_steps: int

    @classmethod
    def current(cls, accum_steps: int) -> Shard:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_world_size(), dist.get_rank(), accum_steps)
        return cls(1, 0, accum_steps)

    def parts(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """Every rank draws the same (n_seeds, global batch) order and takes its slice of it."""
        if self.world * self.accum_steps == 1:
            return [indices]
        return indices.tensor_split(self.world, dim=1)[self.rank].tensor_split(self.accum_steps, dim=1)


class LearningRate:
    """The schedule: each group's lr is its base lr times the schedule's factor at the step."""

    def __init__(self, schedule_cfg, optimizer, steps: int, order: BatchOrder):
        # a plain object: no config lookups per step
        self.schedule = OmegaConf.to_object(schedule_cfg) if OmegaConf.is_config(schedule_cfg) else schedule_cfg
        self.optimizer, self.steps, self.order = optimizer, steps, order
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def set(self, step: int) -> None:
        if self.schedule.name == "constant":
            return
        multiplier = lr_multiplier(self.schedule, step, self.steps, self.order)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * multiplier


class Checkpoints:
    """checkpoint: {"path", "every" (steps, 0: none), "fingerprint", "save" (False: read only)} or None."""

    def __init__(self, checkpoint: dict | None, steps: int):
        self.checkpoint, self.steps = checkpoint, steps

    def due(self, done: int, stopping: bool) -> bool:
        """Saved every `every` steps and on a stop signal, never after the last step; every: 0 writes no
        periodic checkpoints, but a stop signal still saves one."""
        checkpoint = self.checkpoint
        return (checkpoint is not None and checkpoint.get("save", True) and done < self.steps
                and (stopping or (checkpoint["every"] > 0 and done % checkpoint["every"] == 0)))

    def save(self, done: int, stack: SeedStack, optimizer, order: BatchOrder, record: Record, scaler, stopper=None,
             lookahead=None) -> None:
        save_checkpoint(self.checkpoint["path"], {
            "fingerprint": self.checkpoint["fingerprint"], "step": done,
            "params": {name: leaf.detach() for name, leaf in stack.leaves.items()},
            "buffers": {name: buffer.detach() for name, buffer in stack.module.named_buffers()},  # BatchNorm statistics
            **({"lookahead": lookahead.state_dict()} if lookahead else {}),
            "optimizer": optimizer.state_dict(), "order": order.state_dict(),
            "objectives": record.objectives[:, :done], "batch_sizes": record.batch_sizes,
            "last_point": record.last_point, "curves": record.curves, **({"scaler": scaler.state_dict()} if scaler else {}),
            **({"early_stopping": stopper.state_dict()} if stopper else {}),
            **({"hidden_state": stack.module.state} if is_language_model(stack.module) else {})})

    def restore(self, stack: SeedStack, optimizer, order: BatchOrder, record: Record, scaler, stopper=None,
                lookahead=None) -> int:
        """Load a saved state into the given objects; returns the step to continue from (0: nothing saved)."""
        if self.checkpoint is None or not self.checkpoint["path"].exists():
            return 0
        saved = load_checkpoint(self.checkpoint["path"], self.checkpoint["fingerprint"])
        with torch.no_grad():
            for name, leaf in stack.leaves.items():
                leaf.copy_(saved["params"][name])
            for name, buffer in stack.module.named_buffers():
                buffer.copy_(saved["buffers"][name])
        if lookahead is not None:
            lookahead.load_state_dict(saved["lookahead"])
        optimizer.load_state_dict(saved["optimizer"])
        order.load_state_dict(saved["order"])
        record.last_point, record.curves = saved["last_point"], saved["curves"]
        record.objectives[:, :saved["step"]].copy_(saved["objectives"])
        record.batch_sizes = list(saved["batch_sizes"])
        if scaler is not None:
            scaler.load_state_dict(saved["scaler"])
        if stopper is not None:
            stopper.load_state_dict(saved["early_stopping"])
        if is_language_model(stack.module):  # the state the windows carry on from
            device = next(stack.module.parameters()).device
            stack.module.state = None if saved["hidden_state"] is None else [s.to(device) for s in saved["hidden_state"]]
        return saved["step"]
