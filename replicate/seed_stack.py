"""Several seeds of one architecture trained as one computation, each exactly as if it were alone.

Every parameter gets a leading seed axis. Models built only from nn.Linear layers and elementwise
ops run with their Linear layers swapped for SeedLinear, whose batched matrix products are, seed by
seed, the very products nn.Linear computes (bit for bit, checked in tests); the GRU model's nn.GRU
becomes a SeedGRU, PyTorch's CPU GRU written out with the same products and elementwise steps. Any
other model runs under `torch.func.vmap`. The optimizer steps one buffer per parameter group, each
seed's numbers in a zero-padded row of their own laid out as when the seed trains alone, so its
kernels round each seed's numbers as they would alone (SeedStack.flatten). Models neither path can
batch (aten::gru has no vmap rule: an nn.GRU that SeedGRU does not cover) train one seed at a time
through the same SeedStack interface.

    stack = SeedStack(cfg.model, seeds=[0, 1, 2], dtype=torch.float32, device="cpu")
    logits = stack(x)  # x: (n_seeds, batch, ...) → (n_seeds, batch, classes)
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from replicate.errors import ConfigError
from replicate.models import build_model, initialize_like_sklearn
from replicate.seed_gru import SeedGRU, seed_gru_covers


# Elements per seed row of an optimizer buffer (SeedStack.flatten): a multiple of every SIMD vector width
# (up to 64 bytes) and cache line, in elements of any dtype down to one byte.
ROW_ALIGNMENT = 64

# A parameter that is a view of a seed-major buffer (SeedStack.flatten) has gaps between its seeds, and
# autograd warns once that adding a gradient into such a view in place breaks its layout preference;
# that in-place addition is the design, and it costs no more than the copy autograd would make instead.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class _SeedLinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b per seed, with the backward products F.linear uses (g W, gᵀ x, Σ g), batched."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        # gᵀx, not (xᵀg)ᵀ: the product nn.Linear's backward computes, in the parameter's own layout
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


class SeedLinear(nn.Module):
    """The nn.Linear layers of several seeds as one layer: weight (n_seeds, out, in), bias (n_seeds, out)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n_seeds, ..., in) → (n_seeds, ..., out)."""
        if x.dim() != 3:  # (n_seeds, batch, ..., in): one matrix per seed
            return self(x.reshape(x.shape[0], -1, x.shape[-1])).reshape(*x.shape[:-1], self.weight.shape[1])
        if torch.is_autocast_enabled(x.device.type):  # reduced precision: autograd's own backward runs the casts
            return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        return _SeedLinearFunction.apply(x, self.weight, self.bias)


def runs_on_seed_axis(model: nn.Module) -> bool:
    """Whether swapping its layers for seed-stacked twins makes `model` take a leading seed axis: its class
    says its forward is Linear layers and elementwise ops only (or, the GRU model, also GRU layers), and
    every parameter belongs to an nn.Linear or to an nn.GRU that SeedGRU covers."""
    covered = sum(2 for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None)
    covered += sum(len(list(m.parameters())) for m in model.modules() if isinstance(m, nn.GRU) and seed_gru_covers(m))
    marked = getattr(type(model), "linear_and_elementwise_only", False) or getattr(type(model), "gru_linear_and_elementwise_only", False)
    return marked and covered == len(list(model.parameters()))


def batching_method(model_cfg) -> str:
    """How StackedModel batches this architecture's seeds, in words for the report."""
    model = build_model(model_cfg)
    if not runs_on_seed_axis(model):
        return "torch.func.vmap over seeds"
    return "seed-stacked GRU and linear layers" if any(isinstance(m, nn.GRU) for m in model.modules()) else "seed-stacked linear layers"


class StackedModel(nn.Module):
    """Several seeds as one module (a real nn.Module, so DistributedDataParallel can wrap it)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.names = [name for name, _ in models[0].named_parameters()]
        if runs_on_seed_axis(models[0]):
            self.body = copy.deepcopy(models[0])
            for name, layer in list(self.body.named_modules()):
                if isinstance(layer, (nn.Linear, nn.GRU)):
                    parent, _, attribute = name.rpartition(".")
                    layers = [m.get_submodule(name) for m in models]
                    stacked = SeedLinear(layers) if isinstance(layer, nn.Linear) else SeedGRU(layers)
                    setattr(self.body.get_submodule(parent) if parent else self.body, attribute, stacked)
            self.stacked = [self.body.get_parameter(name) for name in self.names]
        else:
            self.body = None
            self.stacked = nn.ParameterList(
                nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in models])) for name in self.names)
            self._base = [copy.deepcopy(models[0]).to("meta")]  # a list, not a submodule: its meta tensors are no parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.body is not None:
            return self.body(x)
        parameters = dict(zip(self.names, self.stacked))
        return vmap(lambda params, inputs: functional_call(self._base[0], params, (inputs,)))(parameters, x)


class SeedStack:
    """One architecture, several seeds. Batched: a StackedModel. Sequential: one seed's own module, its
    parameters viewed with a seed axis of 1. Either may be wrapped in DDP."""

    def __init__(self, model_cfg, seeds, *, dtype, device, numpy_streams=None, vectorize=True, channels_last=False):
        if not vectorize and len(seeds) != 1:
            raise ValueError("the sequential path trains one seed at a time")
        models = []
        for index, seed in enumerate(seeds):
            torch.manual_seed(seed)  # each seed's PyTorch-default init, as training it alone would draw it
            model = build_model(model_cfg)
            if model_cfg.init == "sklearn_glorot":
                initialize_like_sklearn(model.double(), numpy_streams[index])
            models.append(model.to(dtype=dtype, device=device))
        # dropout masks and BatchNorm statistics belong to one seed's module (replicate.paper_models)
        self.trains_seeds_alone = getattr(type(models[0]), "trains_seeds_alone", False)
        if self.trains_seeds_alone and vectorize:
            raise ConfigError(f"model {model_cfg.name} trains its seeds one at a time (dropout or BatchNorm state per "
                              "seed); set train.batched=auto or train.batched=false")
        # NHWC weights: convolutions then run in channels_last order (PyTorch follows the weight's memory format)
        self.channels_last = channels_last
        self.vectorize, self.n_seeds = vectorize, len(seeds)
        self.module = StackedModel(models) if vectorize else models[0]
        self.leaves = dict(zip(self.module.names, self.module.stacked)) if vectorize else dict(self.module.named_parameters())
        self.net = self.module

    def distribute(self, device: torch.device) -> None:
        """Wrap in DistributedDataParallel: gradients are averaged over ranks after each backward."""
        from torch.nn.parallel import DistributedDataParallel

        self.net = DistributedDataParallel(self.module, device_ids=[device.index] if device.type == "cuda" else None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n_seeds, batch, ...) → logits (n_seeds, batch, classes)."""
        return self.net(x) if self.vectorize else self.net(x[0]).unsqueeze(0)

    def param(self, name: str) -> torch.Tensor:
        """A parameter with its leading seed axis (a view in the sequential path)."""
        leaf = self.leaves[name]
        return leaf if self.vectorize else leaf.unsqueeze(0)

    def grads(self) -> list[torch.Tensor]:
        """Gradients with their leading seed axis; in-place changes reach the optimizer."""
        return [leaf.grad if self.vectorize else leaf.grad.unsqueeze(0) for leaf in self.leaves.values()]

    def decayed(self, decay_biases: bool) -> list[str]:
        return [name for name in self.leaves if decay_biases or not name.rsplit(".", 1)[-1].startswith("bias")]

    def flatten(self, groups: list[list[str]]) -> list[list[torch.Tensor]]:
        """Move each group of parameters into one (n_seeds, row) buffer holding, per seed, that group's
        numbers back to back in a row of their own (and their gradients into a twin buffer); every
        parameter becomes a view of it. Returns, per group, [buffer] with its .grad, for the optimizer;
        `zero_grad` clears the gradients.

        Why: the optimizer's elementwise kernels run a tensor in SIMD chunks plus a scalar tail that may
        round differently (PyTorch's fused Adam computes its float32 tail in double; a compiler may fuse
        a scalar multiply-add). Rows are padded with zeros to a multiple of ROW_ALIGNMENT elements, a
        whole number of vectors and cache lines for every dtype, so no number of any seed ever falls in
        a tail, and each seed's update is bit for bit the same whether it trains alone or with others.
        The padding stays zero: its gradient is zero, and every rule maps (p, g) = (0, 0) to 0. One
        tensor per group instead of one per parameter (or seed) also makes the optimizer step cheap."""
        self._flat_grads, per_group = [], []
        for names in groups:
            # (n_seeds, ...) in the order the numbers sit in memory: NHWC for channels_last convolution weights
            stored = [self.param(name).detach() for name in names]
            stored = [leaf.permute(0, 1, 3, 4, 2) if self.channels_last and leaf.dim() == 5 else leaf for leaf in stored]
            total = sum(leaf[0].numel() for leaf in stored)
            flat = stored[0].new_zeros(self.n_seeds, -(-total // ROW_ALIGNMENT) * ROW_ALIGNMENT)
            flat[:, :total] = torch.cat([leaf.reshape(self.n_seeds, -1) for leaf in stored], dim=1)
            grad = torch.zeros_like(flat)
            offset = 0
            for name, leaf in zip(names, stored):
                size = leaf[0].numel()
                views = [buffer[:, offset:offset + size].view(leaf.shape) for buffer in (flat, grad)]
                if self.channels_last and leaf.dim() == 5:
                    views = [view.permute(0, 1, 4, 2, 3) for view in views]  # back to (n_seeds, O, I, H, W)
                if not self.vectorize:
                    views = [view[0] for view in views]
                self.leaves[name].data, self.leaves[name].grad = views  # backward adds into the grad view in place
                offset += size
            flat.grad = grad
            self._flat_grads.append(grad)
            per_group.append([flat])
        return per_group

    def gradient_norms(self) -> torch.Tensor:
        """Each seed's global gradient norm, (n_seeds,): reduced seed by seed from its own rows."""
        return torch.stack([torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grad[m]) for grad in self._flat_grads]))
                            for m in range(self.n_seeds)])

    def zero_grad(self) -> None:
        """Zero the gradient buffers in place (the views that parameters and optimizer hold stay valid)."""
        for grad in self._flat_grads:
            grad.zero_()


def can_vectorize(model_cfg, data, dtype) -> bool:
    """Whether the seeds of this model can train as one computation: tried once on two seeds and two examples."""
    if getattr(type(build_model(model_cfg)), "trains_seeds_alone", False):
        return False
    try:
        stack = SeedStack(model_cfg, [0, 1], dtype=dtype, device=data.x_train.device, vectorize=True,
                          numpy_streams=[np.random.RandomState(0), np.random.RandomState(1)])
        stack(data.x_train[:2].expand(2, *data.x_train[:2].shape)).sum().backward()
        return True
    except (RuntimeError, NotImplementedError):
        return False
