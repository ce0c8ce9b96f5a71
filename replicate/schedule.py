"""Learning-rate schedules as the original code computed them: the factor on the base learning rate
at each optimizer step. This module owns the schedule names a config may use (`SCHEDULES`).

    group["lr"] = base_lr * lr_multiplier(cfg.schedule, step, steps, order)
"""
from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("constant", "step", "multistep", "inv", "invscaling", "piecewise_linear", "cosine", "epoch_decay")


def lr_multiplier(schedule, step: int, steps: int, order) -> float:
    """Factor on the base learning rate at optimizer step `step` (0-based) of `steps`; order: the
    run's replicate.data.BatchOrder (epochs, for scikit-learn's invscaling)."""
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
    if name == "epoch_decay":  # the base lr for constant_epochs epochs, then × gamma at the start of each further epoch
        return schedule.gamma ** max(0, order.epoch_of(step) + 1 - schedule.constant_epochs)
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / steps))
    raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
