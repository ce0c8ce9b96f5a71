"""Parameters that train for a number of epochs and then stay fixed (`train.freeze`).

airbench trains its whitening layer's bias for 3 epochs only (KellerJordan/cifar10-airbench legacy/airbench94.py at
f1c599c, line 410: `requires_grad = (epoch < whiten_bias_epochs)`): from then on the parameter has no gradient and
torch.optim.SGD skips it, momentum and weight decay included. Here the optimizer keeps stepping it and the value it
had before each step is written back after it. That is exactly the same for the whole network: a parameter's
momentum buffer and weight decay act on that parameter alone, and it never changes again.

    frozen = Freezing(cfg.train.freeze, steps_per_epoch, stack.leaves)
    with frozen.holding(stack, step):
        optimizer.step()
"""
from __future__ import annotations

import contextlib

import torch

from replicate.errors import ConfigError


class Freezing:
    def __init__(self, freeze, steps_per_epoch: int, names):
        for rule in freeze:
            if rule.parameter not in names:
                raise ConfigError(f"train.freeze names {rule.parameter!r}, which is not a trained parameter of this model; "
                                  f"allowed: {', '.join(names)}")
        # name → the first step at which the parameter no longer trains
        self.first_frozen_step = {rule.parameter: rule.after_epochs * steps_per_epoch for rule in freeze}

    @contextlib.contextmanager
    def holding(self, stack, step: int):
        """Around the optimizer's update of `step` (0-based): the frozen parameters come out as they went in. Only the
        optimizer is held back: lookahead still moves a frozen parameter, as airbench's LookaheadState does."""
        before = {name: stack.param(name).detach().clone()
                  for name, first in self.first_frozen_step.items() if step >= first}
        yield
        with torch.no_grad():
            for name, value in before.items():
                stack.param(name).copy_(value)
