"""The GRU layers of several seeds as one layer, each seed bit for bit its own nn.GRU (replicate.seed_stack uses it).

PyTorch's CPU GRU (aten::gru; aten/src/ATen/native/RNN.cpp, FullLayer and GRUCell) projects the whole
sequence's input at once (mm, then + bias_ih), then steps the cell through time: an addmm for the hidden
projection, then elementwise ops. SeedGRU is that computation with a seed axis in front. Its products are
batched products that compute, seed by seed, the products aten::mm and aten::addmm compute (bmm runs
one addmm per seed, as for SeedLinear); its elementwise ops compute the same values: additions and
products round the same in any memory layout, and the sigmoid, the one op whose vectorized kernel rounds
differently from its scalar loop, runs on the same rows of `hidden` numbers as in aten. The backward is
written out (_SeedGRUSequence) with the operations autograd runs for aten's cell, adding each gradient's
contributions in the order autograd adds them. Checked: outputs, gradients and whole training runs equal
nn.GRU's bit for bit, float32 and float64, AVX-512 and AVX2 kernels (tests/test_batched.py). On a
GPU, nn.GRU runs cuDNN's fused kernels instead, so there the seeds agree with seeds alone to rounding only
(not yet measured: no GPU was available).

    layer = SeedGRU([model.gru for model in models])   # one nn.GRU per seed
    outputs, _ = layer(x)  # x: (n_seeds, batch, steps, features) → (n_seeds, batch, steps, directions·hidden)
"""
from __future__ import annotations

import torch
from torch import nn


def seed_gru_covers(layer: nn.GRU) -> bool:
    """SeedGRU transcribes one biased, batch-first layer without projection (one or two directions) that reads
    one feature per time step, as the MNIST-1D GRU does: each input gate is then a single product, which
    rounds the same whichever order the time steps are laid out in."""
    return (layer.num_layers == 1 and layer.bias and layer.batch_first and layer.proj_size == 0
            and layer.input_size == 1)


class _SeedGRUSequence(torch.autograd.Function):
    """Every step of the recurrences of several seeds' GRUs, both directions stepping together, forward and backward.

    Autograd over aten's cell would record about 15 nodes per step, each with its own bookkeeping, chunk
    copies and zero-filled gradients; for a 6-unit GRU those cost more than the arithmetic. Here each step is
    the cell's arithmetic only, and the intermediate values autograd would save are kept for the backward.
    Rows: directions × n_seeds, the forward direction's seeds first; the reverse rows take time steps
    backwards (step k reads and writes time steps − 1 − k)."""

    @staticmethod
    def forward(ctx, inputs, weight_ih, bias_ih, weight_hh, bias_hh, steps, directions):
        """inputs: (n_seeds, steps·batch, 1), time-major; weight_ih: (rows, 3·hidden, 1); bias_ih, bias_hh:
        (rows, 3·hidden); weight_hh: (rows, 3·hidden, hidden). → (n_seeds, steps, batch, directions·hidden)."""
        n_seeds, length, features = inputs.shape
        rows, batch, size = directions * n_seeds, length // steps, weight_hh.shape[2]
        ordered = inputs if directions == 1 else torch.cat(
            [inputs, inputs.view(n_seeds, steps, batch, features).flip(1).reshape(n_seeds, length, features)])
        # aten's input projection (mm, then + bias_ih), the reverse rows' steps already in the order taken
        input_gates = torch.bmm(ordered, weight_ih.transpose(1, 2)).view(rows, steps, batch, -1) + bias_ih[:, None, None, :]
        hidden = inputs.new_zeros(rows, batch, size)
        hiddens, gates, new_gates, differences = [hidden], [], [], []
        for step in range(steps):
            step_gates = input_gates[:, step]
            hidden_gates = torch.baddbmm(bias_hh.unsqueeze(1), hidden, weight_hh.transpose(1, 2))  # aten: addmm
            # in place on a chunk with stride 3·hidden, as aten: the sigmoid runs on rows of `hidden` numbers
            reset_gate = hidden_gates[..., :size].add_(step_gates[..., :size]).sigmoid_()
            input_gate = hidden_gates[..., size:2 * size].add_(step_gates[..., size:2 * size]).sigmoid_()
            new_gate = step_gates[..., 2 * size:].add(hidden_gates[..., 2 * size:] * reset_gate).tanh_()
            difference = hidden - new_gate
            hidden = (difference * input_gate).add_(new_gate)
            hiddens.append(hidden)
            gates.append(hidden_gates)  # reset gate, input gate, and the hidden projection's new-gate third
            new_gates.append(new_gate)
            differences.append(difference)
        ctx.save_for_backward(inputs, weight_hh)
        ctx.hiddens, ctx.gates, ctx.new_gates, ctx.differences = hiddens, gates, new_gates, differences
        outputs = torch.stack(hiddens[1:], 1)
        return outputs if directions == 1 else torch.cat([outputs[:n_seeds], outputs[n_seeds:].flip(1)], -1)

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, weight_hh = ctx.saved_tensors
        n_seeds, steps, batch, _ = grad_outputs.shape
        rows, size = weight_hh.shape[0], weight_hh.shape[2]
        if rows != n_seeds:  # both directions: rows in the order the steps were taken
            grad_outputs = torch.cat([grad_outputs[..., :size], grad_outputs[..., size:].flip(1)])
        grad_hidden_gates = grad_outputs.new_empty(rows, steps, batch, 3 * size)
        grad_new_gates = grad_outputs.new_empty(rows, steps, batch, size)
        grad_weight = grad_bias = grad_from_next = None
        for step in reversed(range(steps)):
            grad = grad_outputs[:, step]
            if grad_from_next is not None:  # autograd's order: the output's gradient, then h − n's, then addmm's
                grad = (grad + grad_from_next[0]) + grad_from_next[1]
            hidden_gates, new_gate = ctx.gates[step], ctx.new_gates[step]
            reset_gate, input_gate = hidden_gates[..., :size], hidden_gates[..., size:2 * size]
            grad_difference = grad * input_gate  # h' = (h − n)·z + n
            grad_input_gate = grad * ctx.differences[step]
            grad_new = torch.ops.aten.tanh_backward.grad_input(grad - grad_difference, new_gate,  # n's paths: + n, − n
                                                               grad_input=grad_new_gates[:, step])
            grad_gates = grad_hidden_gates[:, step]
            torch.ops.aten.sigmoid_backward.grad_input(grad_new * hidden_gates[..., 2 * size:], reset_gate,
                                                       grad_input=grad_gates[..., :size])
            torch.ops.aten.sigmoid_backward.grad_input(grad_input_gate, input_gate, grad_input=grad_gates[..., size:2 * size])
            torch.mul(grad_new, reset_gate, out=grad_gates[..., 2 * size:])
            # addmm's backward, as for SeedLinear: g W for the hidden state, gᵀh for the weight, Σ g for the bias
            weight_part = torch.bmm(grad_gates.transpose(1, 2), ctx.hiddens[step])
            bias_part = grad_gates.sum(1)
            grad_weight = weight_part if grad_weight is None else grad_weight + weight_part
            grad_bias = bias_part if grad_bias is None else grad_bias + bias_part
            grad_from_next = (grad_difference, torch.bmm(grad_gates, weight_hh))
        del ctx.hiddens, ctx.gates, ctx.new_gates, ctx.differences
        # the input gates' gradient: the hidden gates' for the reset and input gates, the new gate's own for the third
        grad_input_gates = grad_hidden_gates
        grad_input_gates[..., 2 * size:] = grad_new_gates
        if rows != n_seeds:  # back to time order: the input projection's gradient sums run over time as aten's
            grad_input_gates = torch.cat([grad_input_gates[:n_seeds], grad_input_gates[n_seeds:].flip(1)])
        grad_bias_ih = grad_input_gates.sum((1, 2))  # autograd's sum over the broadcast dimensions of + bias_ih
        # mm's gradient gᵀx, seed by seed: a sum over every step of every example (40 × 100 terms here), which
        # bmm's kernel adds in another order than mm's
        grad_input_gates = grad_input_gates.flatten(1, 2)
        grad_weight_ih = torch.stack([torch.mm(grad_input_gates[row].t(), inputs[row % n_seeds]) for row in range(rows)])
        return None, grad_weight_ih, grad_bias_ih, grad_weight, grad_bias, None, None


def _seed_gru_cell(input_gates, hidden, weight_hh, bias_hh):
    """One step under autocast: aten's GRUCell with a seed axis, autograd's own backward running the casts."""
    chunked_igates = input_gates.unsafe_chunk(3, -1)
    chunked_hgates = torch.baddbmm(bias_hh.unsqueeze(1), hidden, weight_hh.transpose(1, 2)).unsafe_chunk(3, -1)
    reset_gate = chunked_hgates[0].add_(chunked_igates[0]).sigmoid_()
    input_gate = chunked_hgates[1].add_(chunked_igates[1]).sigmoid_()
    new_gate = chunked_igates[2].add(chunked_hgates[2].mul_(reset_gate)).tanh_()
    return (hidden - new_gate).mul_(input_gate).add_(new_gate)


class SeedGRU(nn.Module):
    """The nn.GRU layers of several seeds (seed_gru_covers) as one layer: each parameter with a leading seed axis.

    The two directions are independent recurrences, so they step together, as 2 × n_seeds rows of one
    stack (the reverse one reading the sequence backwards): half the steps, whose cost on this small a GRU
    is mostly the call, not the arithmetic."""

    def __init__(self, layers: list[nn.GRU]):
        super().__init__()
        self.hidden_size, self.directions = layers[0].hidden_size, 2 if layers[0].bidirectional else 1
        self.names = [name for name, _ in layers[0].named_parameters()]  # weight_ih_l0, weight_hh_l0, bias_ih_l0, ...
        for name in self.names:
            self.register_parameter(name, nn.Parameter(torch.stack([layer.get_parameter(name).detach() for layer in layers])))

    def per_direction(self, kind: str) -> torch.Tensor:
        """A parameter of both directions, (directions · n_seeds, ...): the forward direction's seeds first."""
        parameters = [self.get_parameter(kind + suffix) for suffix in ("_l0", "_l0_reverse")[:self.directions]]
        return parameters[0] if self.directions == 1 else torch.cat(parameters)

    def forward(self, x: torch.Tensor):
        """x: (n_seeds, batch, steps, features) → (outputs (n_seeds, batch, steps, directions·hidden), None)."""
        n_seeds, batch, steps, features = x.shape
        rows, autocast = self.directions * n_seeds, torch.is_autocast_enabled(x.device.type)
        inputs = x.transpose(1, 2).reshape(n_seeds, steps * batch, features)  # time-major, as aten runs batch_first input
        weight_ih, bias_ih = self.per_direction("weight_ih"), self.per_direction("bias_ih")
        weight_hh, bias_hh = self.per_direction("weight_hh"), self.per_direction("bias_hh")
        if not autocast:
            outputs = _SeedGRUSequence.apply(inputs, weight_ih, bias_ih, weight_hh, bias_hh, steps, self.directions)
            return outputs.transpose(1, 2), None
        projected = torch.bmm(inputs.repeat(self.directions, 1, 1), weight_ih.transpose(1, 2))
        gates = projected.view(rows, steps, batch, -1) + bias_ih[:, None, None, :]
        hidden, per_step = x.new_zeros(rows, batch, self.hidden_size), []
        for step in range(steps):
            step_gates = gates[:, step] if self.directions == 1 else \
                torch.cat([gates[:n_seeds, step], gates[n_seeds:, steps - 1 - step]])
            hidden = _seed_gru_cell(step_gates, hidden, weight_hh, bias_hh)
            per_step.append(hidden)
        outputs = torch.stack(per_step, 1)
        if self.directions == 2:
            outputs = torch.cat([outputs[:n_seeds], outputs[n_seeds:].flip(1)], -1)
        return outputs.transpose(1, 2), None
