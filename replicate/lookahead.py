"""airbench's lookahead: slow weights the network is pulled back to every few steps (`lookahead.every`).

KellerJordan/cifar10-airbench legacy/airbench94.py at f1c599c: LookaheadState (lines 263–271) keeps a copy of
every floating-point tensor of the network's state dict (parameters and BatchNorm running statistics); every 5
steps (line 430) it moves the copy towards the network, ema ← d·ema + (1 − d)·net, and sets the network to it;
d after t of T steps is alpha_schedule[t] = 0.95^5·(t/T)^3 (line 392), a float32 tensor; after the last step the
network takes the copy (decay 1.0, lines 433–435).

    lookahead = Lookahead.over(stack, cfg.lookahead, steps)   # None when lookahead.every is 0
    lookahead.after_step(done)   # after each optimizer step; done = steps taken
"""
from __future__ import annotations

import torch


class Lookahead:
    """tensors: name → the live tensor (a parameter, or a floating-point buffer), updated in place."""

    def __init__(self, tensors: dict[str, torch.Tensor], *, every: int, base: float, power: float, steps: int):
        self.tensors, self.every, self.base, self.power, self.steps = tensors, every, base, power, steps
        self.slow = {name: tensor.detach().clone() for name, tensor in tensors.items()}

    @classmethod
    def over(cls, stack, lookahead_cfg, steps: int) -> Lookahead | None:
        """Over a replicate.seed_stack.SeedStack's parameters and floating-point buffers (BatchNorm's running
        statistics), or None when lookahead.every is 0."""
        if not lookahead_cfg.every:
            return None
        buffers = {name: buffer for name, buffer in stack.module.named_buffers() if buffer.is_floating_point()}
        return cls({**stack.leaves, **buffers}, every=lookahead_cfg.every, base=lookahead_cfg.base,
                   power=lookahead_cfg.power, steps=steps)

    def decay(self, done: int) -> float:
        """d after `done` of the run's steps, rounded to float32 as airbench's alpha_schedule tensor holds it."""
        fraction = torch.tensor(done) / self.steps  # float32, as torch.arange(T + 1) / T
        return (self.base ** self.every * fraction ** self.power).item()

    @torch.no_grad()
    def after_step(self, done: int) -> None:
        if done % self.every == 0:
            self.pull(self.decay(done))
        if done == self.steps:
            self.pull(1.0)  # the network ends at the slow weights

    @torch.no_grad()
    def pull(self, decay: float) -> None:
        for name, tensor in self.tensors.items():
            slow = self.slow[name]
            slow.lerp_(tensor, 1 - decay)
            tensor.copy_(slow)

    def state_dict(self) -> dict:
        return {name: slow.clone() for name, slow in self.slow.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, slow in self.slow.items():
            slow.copy_(state[name])
