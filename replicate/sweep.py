"""Runs that differ only in hyperparameter values, trained as one batched computation, each bit for bit
the run it would be alone.

An audit or a study trains the same model on the same data with the same seeds under several readings;
where two readings execute the same update with another learning rate or weight decay, their seeds can
share one SeedStack the way a run's seeds do: slot (r, m) is run r's seed m, with that seed's own
initialisation and batch order. Each run keeps its own optimizer over its own rows of the stack's
buffers (a contiguous block of seed rows, laid out as when the run trains alone: SeedStack.flatten),
its own learning-rate schedule and its own divergence, so nothing of one run reaches another.

    reason = why_not_together(cfgs, plans, data)     # None: they can share one computation
    results = train_plans_together(cfgs[0], data, plans, seeds)   # results[r]: run r's SeedResults
    groups = train_runs_together(cfgs, run_dirs)     # the audit: each run's seeds saved as finished in its run_dir
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from omegaconf import OmegaConf

from replicate.optim import build_optimizer, parameter_groups
from replicate.evaluation import Record, eval_every, final_metrics
from replicate.train import (
    Inputs, LearningRate, Objective, SeedResult, Shard, clip_gradients, seed_stack, total_steps, train_step,
)


def why_not_together(cfgs: list, plans: list, data) -> str | None:
    """None when the runs differ only in the optimizer's learning rate and weight decay (as executed) and
    would each train its seeds as seed-stacked layers, whose products are the seed's own whatever the
    number of seeds; otherwise why not, in words."""
    from replicate.identity import result_settings
    from replicate.replication import seeds_together
    from replicate.seed_stack import batching_method

    if len(plans) < 2:
        return "one run"
    rest = []
    for cfg in cfgs:
        settings = result_settings(OmegaConf.to_container(cfg, resolve=True))
        settings.pop("optimizer", None), settings.pop("conventions", None), settings["train"].pop("convention", None)
        rest.append(settings)
    if any(settings != rest[0] for settings in rest):
        return "they differ in more than the optimizer's hyperparameters and conventions"
    if any(_without_rates(plan.update) != _without_rates(plans[0].update) for plan in plans):
        return "their executed updates differ in more than the learning rate and the optimizer's weight decay"
    if any(plan.update.param_groups for plan in plans):
        return "their optimizers have parameter groups of their own (optimizer.param_groups): they train run by run"
    if len({plan.update.optimizer.weight_decay > 0 for plan in plans}) > 1:
        return "some decay their weights in the optimizer and some do not (another parameter grouping)"
    cfg = cfgs[0]
    if cfg.lookahead.every or cfg.train.freeze or cfg.train.tta != "none" or cfg.augment.flip_alternating:
        return "lookahead, frozen parameters, test-time augmentation and alternating flips train run by run"
    if cfg.train.early_stopping.enabled:
        return "early stopping (each run's own best validation point and stop) trains run by run"
    if cfg.train.precision != "fp32" or cfg.train.accum_steps != 1:
        return "reduced precision and micro-batches train run by run"
    if batching_method(cfg.model) == "torch.func.vmap over seeds":
        return f"model {cfg.model.name!r} batches under vmap, whose grouped products depend on the number of seeds"
    if not seeds_together(cfg, data, data.x_train.dtype, max(2, cfg.seeds)):
        return "their seeds would not train together"
    return None


def _without_rates(update):
    return dataclasses.replace(update, optimizer=dataclasses.replace(update.optimizer, lr=0.0, weight_decay=0.0))


def train_plans_together(cfg, data, plans: list, seeds: list[int], *, progress=None,
                         checkpoint_every: int = 0) -> list[list[SeedResult]]:
    """Train every plan's `seeds` as one computation (plans as why_not_together accepts them); returns,
    per plan, its SeedResults as train_seeds gives them for that plan alone. checkpoint_every: the cadence at
    which the runs alone save checkpoints (cfg.checkpoint.every under `python -m replicate`, 0 for none),
    where they also look for divergence: a run whose seeds have all diverged stops where it would alone."""
    started = time.perf_counter()
    slots = [seed for _ in plans for seed in seeds]  # slot r·S + m: plan r's seed m
    n_seeds, first = len(seeds), plans[0].update
    stack, order = seed_stack(cfg, data, slots, vectorize=True)
    steps = total_steps(cfg.train, order)
    decayed = stack.decayed(first.decay_biases)
    objective = Objective.of(first, decayed, cfg.train)  # the same for every plan: only the optimizer differs
    inputs = Inputs.of(cfg, data, slots, stack)
    optimizers = plan_optimizers(stack, decayed, plans, n_seeds)
    rates = [LearningRate(cfg.schedule, optimizer, steps, order) for optimizer in optimizers]
    record = Record(len(slots), steps, data.x_train.device, eval_every(cfg.train.eval_every, steps))
    curve_train_accuracy = any(claim.metric == "train_accuracy" for claim in OmegaConf.select(cfg, "paper.claims", default=[]) or [])
    shard, clipping = Shard(1, 0, 1), first.grad_clip is not None or first.grad_clip_value is not None
    stopped: list[int | None] = [None] * len(plans)  # the step at which a plan, alone, would have stopped
    kept: dict[int, dict] = {}  # a stopped plan's parameters as they were when it stopped

    step = -1
    for step in range(steps):
        batch = train_step(stack, inputs, order.indices(step), step, objective, shard, None, out=record.objectives[:, step])
        record.batch_sizes.append(batch)
        if clipping:
            clip_gradients(stack, first.grad_clip, first.grad_clip_value)
        for optimizer, rate in zip(optimizers, rates):
            rate.set(step)
            optimizer.step()
        stack.zero_grad()
        done = step + 1
        evaluating = record.due(done)
        if evaluating or (checkpoint_every > 0 and done % checkpoint_every == 0 and done < steps):
            diverged = record.diverged(done)
            for r in range(len(plans)):
                if stopped[r] is None and all(d is not None for d in diverged[r * n_seeds:(r + 1) * n_seeds]):
                    stopped[r] = done
                    kept[r] = {name: stack.param(name)[r * n_seeds:(r + 1) * n_seeds].detach().clone() for name in stack.leaves}
            if all(stop is not None for stop in stopped):
                break
        if evaluating:
            record.add_point(stack, data, done, cfg.train.loss_value, curve_train_accuracy)
        if progress is not None:
            progress.update(len(slots))

    final = final_metrics(stack, data, record, step + 1, order.steps_per_epoch, cfg.train.loss_value)
    elapsed = time.perf_counter() - started
    results = []
    for r in range(len(plans)):
        done = stopped[r] or step + 1
        diverged_at = record.diverged(done)
        # alone, the run would have stopped before this step's learning-curve point
        last_point = done - 1 if stopped[r] is not None else done
        run = []
        for m, seed in enumerate(seeds):
            slot = r * n_seeds + m
            metrics = {name: float("nan") if diverged_at[slot] is not None else float(values[slot])
                       for name, values in final.items()}
            curve = [point for point in record.curves[slot] if point["step"] <= last_point]
            run.append(SeedResult(seed, metrics, curve, diverged_at[slot], elapsed / len(slots),
                                  "batched" if n_seeds > 1 else "sequential",
                                  {name: kept[r][name][m] if r in kept else stack.param(name)[slot].detach().clone()
                                   for name in stack.leaves}))
        results.append(run)
    return results


def plan_optimizers(stack, decayed: list[str], plans: list, n_seeds: int) -> list:
    """One optimizer per plan over its block of seed rows in each of the stack's parameter-group buffers;
    a block of whole rows is contiguous, the same memory a plan's seeds occupy when it trains alone."""
    first = plans[0].update
    groups = parameter_groups(list(stack.leaves), decayed, first.optimizer.weight_decay, first.bias_lr_mult)
    buffers = stack.flatten([names for names, _, _ in groups])
    optimizers = []
    for r, plan in enumerate(plans):
        settings = plan.update.optimizer
        param_groups = []
        for (flat,), (_, decay, multiplier) in zip(buffers, groups):
            block = flat[r * n_seeds:(r + 1) * n_seeds]
            block.grad = flat.grad[r * n_seeds:(r + 1) * n_seeds]  # a view: backward fills it in place
            param_groups.append({"params": [block], "weight_decay": settings.weight_decay if decay else 0.0,
                                 **({"lr": settings.lr * multiplier} if multiplier != 1 else {})})
        optimizers.append(build_optimizer(param_groups, settings))
    return optimizers


def train_runs_together(cfgs: list, run_dirs: list[Path], *, log=print) -> list[list[int]]:
    """Before `replicate_paper` runs each of `cfgs` in its run directory, train those that can share one
    computation together and save each run's seeds there as finished, under the fingerprint the run itself
    will look for: replicate_paper then judges and reports them as if it had trained them (their cfg's
    resume is set to true, so that it reads them). Returns the groups of indices trained together. Runs
    whose seeds are all finished already (resume=true) are left alone. Each run directory is held
    (replicate.checkpoint.run_lock) while the runs train."""
    import contextlib

    from replicate.checkpoint import run_lock
    from replicate.replication import resolve_device

    if any(cfg.dry_run for cfg in cfgs) or any(resolve_device(cfg.device).type == "cuda" for cfg in cfgs):
        return []  # GPU runs train one by one, as before
    with contextlib.ExitStack() as held:
        for run_dir in run_dirs:
            held.enter_context(run_lock(run_dir))
        trained = _train_groups(cfgs, run_dirs, log)
    for index in (index for group in trained for index in group):
        cfgs[index].resume = True  # its seeds are in its run directory, fresh
    return trained


def _train_groups(cfgs: list, run_dirs: list[Path], log) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for index, cfg in enumerate(cfgs):  # runs with equal data, model and training apart from the optimizer's numbers
        settings = OmegaConf.to_container(cfg, resolve=True)
        key = {name: settings[name] for name in ("data", "model", "train", "schedule", "seeds", "seed", "runtime", "device")}
        groups.setdefault(repr(key), []).append(index)
    trained = []
    for members in groups.values():
        if len(members) > 1:
            together = _train_group([cfgs[i] for i in members], [run_dirs[i] for i in members], log)
            trained += [[members[i] for i in group] for group in together]
    return trained


def _train_group(cfgs: list, run_dirs: list[Path], log) -> list[list[int]]:
    import torch
    from tqdm import tqdm

    from replicate.checkpoint import group_name, load_seed_result
    from replicate.data import load_dataset
    from replicate.hyperparameters import make_plan
    from replicate.identity import fingerprint
    from replicate.replication import (
        planned_steps, resolve_device, run_execution, save_finished_seed, seed_list, seeds_together,
    )

    first = cfgs[0]
    device = resolve_device(first.device)
    data = load_dataset(first.data, dtype={"float32": torch.float32, "float64": torch.float64}[first.train.dtype],
                        device=device, paper_id=first.paper.id)
    seeds = seed_list(first)
    plans = [make_plan(cfg, n_train=len(data.y_train)) for cfg in cfgs]
    # the execution each run alone resolves to (one seed trains on the sequential path), for its fingerprint: the
    # same for every run of the group, which differ only in the optimizer; this also sets the threads it uses
    vectorize = seeds_together(first, data, data.x_train.dtype, len(seeds))
    execution = run_execution(first, data, device, vectorize=vectorize)[2]
    stamps = [fingerprint(cfg, execution) for cfg in cfgs]
    pending = [i for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs))
               if not (cfg.resume and all(load_seed_result(run_dir, seed, stamps[i]) for seed in seeds))]
    if len(pending) < 2:
        return []
    reason = why_not_together([cfgs[i] for i in pending], [plans[i] for i in pending], data)
    if reason is not None:
        log(f"readings trained one by one: {reason}")
        return []
    log(f"training {len(pending)} readings together as one computation ({len(pending)} × {len(seeds)} seeds)")
    steps = planned_steps(first, data)
    with tqdm(total=steps * len(pending) * len(seeds), desc=f"{first.paper.id} ({len(pending)} runs together)",
              unit="step", disable=not first.runtime.progress, leave=False, mininterval=0.5) as progress:
        together = train_plans_together(first, data, [plans[i] for i in pending], seeds, progress=progress,
                                        checkpoint_every=first.checkpoint.every)
    for i, results in zip(pending, together):
        for result in results:
            save_finished_seed(run_dirs[i], stamps[i], result)
        (Path(run_dirs[i]) / "checkpoints" / f"{group_name(seeds)}.pt").unlink(missing_ok=True)  # superseded
    return [pending]
