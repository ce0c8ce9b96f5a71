"""Reduced precision: the autocast region, loss scaling with one scale per seed, and the TF32 switches.

Seeds trained together under fp16 each keep the loss scale, the overflow check and the skipped steps
that `torch.amp.GradScaler` would give the seed trained alone: an overflow in one seed skips that
seed's update only and backs off that seed's scale only. Each seed's numbers go through the very
kernels GradScaler calls (`torch._amp_foreach_non_finite_check_and_unscale_`, `torch._amp_update_scale_`),
on that seed's own rows of the optimizer's buffers.

    scaler = SeedGradScaler(n_seeds=3, device=device)
    scaler.scale(objectives).sum().backward()   # objectives: (n_seeds,)
    scaler.unscale_(optimizer); optimizer.step() inside scaler.skipping(optimizer); scaler.update()
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")  # train.precision: autocast's dtype for the forward pass ("fp32": none)
# torch.amp.GradScaler's defaults: the reference a seed trained alone follows
INIT_SCALE, GROWTH_FACTOR, BACKOFF_FACTOR, GROWTH_INTERVAL = 2.0**16, 2.0, 0.5, 2000


def autocast(device: torch.device, precision: str):
    """The forward pass's autocast region for train.precision ("fp32": none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def set_tf32(enabled: bool) -> dict:
    """TF32 for float32 matrix products (cuBLAS) and for convolutions and RNNs (cuDNN). PyTorch turns
    cuDNN's on by default, which makes "fp32" convolutions on an Ampere-or-newer GPU round their inputs
    to 10 mantissa bits; train.tf32=false turns both off. Returns the flags as set, for the report."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}


def seed_rows(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each (n_seeds, row) optimizer buffer as its seeds' rows, each row a parameter of its own (with
    its gradient row), so that the optimizer keeps each seed's state apart (Adam's step count
    included) and a seed's update can be skipped alone. Row m belongs to seed m."""
    rows = []
    for buffer in buffers:
        for seed_row, gradient_row in zip(buffer.unbind(0), buffer.grad.unbind(0)):
            seed_row.grad = gradient_row
            rows.append(seed_row)
    return rows


class SeedGradScaler:
    """torch.amp.GradScaler's dynamic loss scaling, one scale and one growth tracker per seed.

    The optimizer's groups must hold, in order, one row per seed (seed_rows)."""

    def __init__(self, n_seeds: int, device: torch.device, *, growth_interval: int = GROWTH_INTERVAL):
        self.n_seeds, self.growth_interval = n_seeds, growth_interval
        self.scales = torch.full((n_seeds,), INIT_SCALE, dtype=torch.float32, device=device)
        self.growth_trackers = torch.zeros(n_seeds, dtype=torch.int32, device=device)
        self.found_inf = torch.zeros(n_seeds, dtype=torch.float32, device=device)

    def scale(self, objectives: torch.Tensor) -> torch.Tensor:
        """Each seed's objective times its own scale: (n_seeds,)."""
        return objectives * self.scales

    def _rows(self, optimizer, seed: int) -> list[torch.Tensor]:
        return [group["params"][seed] for group in optimizer.param_groups]

    def unscale_(self, optimizer) -> None:
        """Divide each seed's gradients by its scale and note, per seed, whether any was inf or NaN."""
        inverse = self.scales.double().reciprocal().float()  # GradScaler.unscale_ rounds 1/scale so
        self.found_inf.zero_()
        for seed in range(self.n_seeds):
            gradients = [row.grad for row in self._rows(optimizer, seed) if row.grad is not None]
            torch._amp_foreach_non_finite_check_and_unscale_(gradients, self.found_inf[seed], inverse[seed])

    @contextlib.contextmanager
    def skipping(self, optimizer):
        """Inside: the seeds whose gradients overflowed have no gradient, so optimizer.step() leaves
        their parameters and state alone, as GradScaler.step skips optimizer.step() for a seed alone.
        One device-to-host copy per step, as GradScaler.step's .item()."""
        skipped = [seed for seed, found in enumerate(self.found_inf.tolist()) if found]
        held = {seed: [row.grad for row in self._rows(optimizer, seed)] for seed in skipped}
        for seed in skipped:
            for row in self._rows(optimizer, seed):
                row.grad = None
        try:
            yield
        finally:
            for seed, gradients in held.items():
                for row, gradient in zip(self._rows(optimizer, seed), gradients):
                    row.grad = gradient

    def update(self) -> None:
        """Each seed's scale: halved after an overflow, doubled after growth_interval clean steps in a row."""
        for seed in range(self.n_seeds):
            torch._amp_update_scale_(self.scales[seed], self.growth_trackers[seed], self.found_inf[seed],
                                     GROWTH_FACTOR, BACKOFF_FACTOR, self.growth_interval)

    def state_dict(self) -> dict:
        return {"scales": self.scales.clone(), "growth_trackers": self.growth_trackers.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.scales.copy_(state["scales"])
        self.growth_trackers.copy_(state["growth_trackers"])
