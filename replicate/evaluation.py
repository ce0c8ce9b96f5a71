"""What a run measures: each step's objective per seed and the learning curves (`Record`), a whole split's
accuracy, error and loss (`evaluate`), and the final metrics a claim is judged on (`final_metrics`). This module
owns the metric names a claim may use (`METRICS`).

    final = final_metrics(stack, data, record, done, order.steps_per_epoch, loss_value="cross_entropy")
"""
from __future__ import annotations

import math

import torch

from replicate.data import Dataset
from replicate.language_model import evaluate_windows, is_language_model, language_model_metrics
from replicate.loss import reported_loss
from replicate.seed_stack import SeedStack
from replicate.tta import tta_logits

METRICS = ("test_accuracy", "train_accuracy", "test_loss", "train_loss", "train_epoch_loss", "test_error", "valid_error",
           "test_perplexity", "valid_perplexity", "train_perplexity")  # perplexity: exp of the mean per-word loss


def eval_every(requested: int, steps: int) -> int:
    """Steps between learning-curve points: the paper's cadence, unless a shortened run would get fewer
    than 10 points from it; else about 25 points per run."""
    return requested if requested and steps >= 10 * requested else max(1, steps // 25)


class Record:
    """What the seeds have measured: each step's objective per seed, written on the device and read (one
    sync) only at evaluations and checkpoints; the batch sizes; the learning curves."""

    def __init__(self, n_seeds: int, steps: int, device, every: int, tta: str = "none"):
        self.objectives = torch.full((n_seeds, steps), math.nan, dtype=torch.float64, device=device)  # a row per seed
        self.batch_sizes: list[int] = []
        self.curves: list[list[dict]] = [[] for _ in range(n_seeds)]
        self.last_point, self.every, self.steps = 0, every, steps
        self.tta = tta  # replicate.tta mode of the test split's evaluations

    def due(self, done: int) -> bool:
        return done % self.every == 0 or done == self.steps

    def diverged(self, end: int) -> list[int | None]:
        """First step whose objective was not finite, per seed (one device sync)."""
        bad = ~torch.isfinite(self.objectives[:, :end])
        first = torch.where(bad.any(1), bad.to(torch.uint8).argmax(1), -1).tolist()
        return [None if value < 0 else value for value in first]

    def all_diverged(self, end: int) -> bool:
        return all(d is not None for d in self.diverged(end))

    def add_point(self, stack: SeedStack, data: Dataset, done: int, loss_value: str, train_accuracy: bool) -> None:
        """A learning-curve point after `done` steps: the mean objective since the last point, the test split's
        accuracy and loss, and the training accuracy when a claim is on it."""
        point = {"step": done, "train_loss": self.objectives[:, self.last_point:done].mean(1).tolist()}
        if data.x_test is not None:
            test = evaluate(stack, data.x_test, data.y_test, loss_value, self.tta)
            point.update(test_accuracy=test["accuracy"].tolist(), test_loss=test["loss"].tolist())
        if train_accuracy:
            point["train_accuracy"] = evaluate(stack, data.x_train, data.y_train, loss_value)["accuracy"].tolist()
        for m, curve in enumerate(self.curves):
            curve.append({key: (value[m] if isinstance(value, list) else value) for key, value in point.items()})
        self.last_point = done

    def epoch_loss(self, done: int, steps_per_epoch: int) -> torch.Tensor:
        """The objective averaged over the examples of the last epoch (or the part of it that ran), per seed."""
        epoch_start = (done - 1) // steps_per_epoch * steps_per_epoch if done else 0
        weights = torch.tensor(self.batch_sizes[epoch_start:done], dtype=torch.float64, device=self.objectives.device)
        return (self.objectives[:, epoch_start:done] * weights).sum(1) / weights.sum().clamp(min=1)


@torch.no_grad()
def evaluate(stack: SeedStack, x, y, loss_value: str, tta: str = "none") -> dict:
    """Accuracy and zero-one error (fractions) and mean loss per seed on a whole split; tta: replicate.tta's mode
    (the loss is then that of the averaged logits)."""
    if is_language_model(stack.module):  # windows of word ids, the state carried: main.lua's evaluation
        result = evaluate_windows(stack.module, x, y)
        return {"accuracy": result["accuracy"].reshape(1), "loss": result["loss"].reshape(1),
                "error": 1 - result["accuracy"].reshape(1)}
    # examples per pass: few enough that several seeds' activations stay near the cache, and the same
    # for any number of seeds, because a matrix product's rounding may depend on its row count
    chunk = 512
    stack.module.eval()  # dropout off, BatchNorm on its running statistics
    def forward(images):
        return stack(images.expand(stack.n_seeds, *images.shape))

    logits = torch.cat([tta_logits(forward, x[i:i + chunk], tta) for i in range(0, len(y), chunk)], dim=1)
    stack.module.train()
    targets = y.expand(stack.n_seeds, *y.shape)
    correct = logits.argmax(-1) == targets
    return {"accuracy": correct.to(torch.float64).flatten(1).mean(1), "error": (~correct).to(torch.float64).flatten(1).mean(1),
            "loss": reported_loss(logits, targets, loss_value)}


def final_metrics(stack: SeedStack, data: Dataset, record: Record, done: int, steps_per_epoch: int,
                  loss_value: str) -> dict:
    """Each metric of METRICS per seed after `done` steps: accuracies as fractions, losses in nats."""
    if is_language_model(stack.module):
        return language_model_metrics(stack.module, data, record.epoch_loss(done, steps_per_epoch))
    final = {}
    train_eval = evaluate(stack, data.x_train, data.y_train, loss_value)
    final["train_accuracy"], final["train_loss"] = train_eval["accuracy"], train_eval["loss"]
    if data.x_test is not None:
        test_eval = evaluate(stack, data.x_test, data.y_test, loss_value, record.tta)
        final["test_accuracy"], final["test_loss"], final["test_error"] = test_eval["accuracy"], test_eval["loss"], test_eval["error"]
    if data.x_valid is not None and data.x_valid.dtype.is_floating_point:  # a held-out image split (not PTB's tokens)
        final["valid_error"] = evaluate(stack, data.x_valid, data.y_valid, loss_value)["error"]
    final["train_epoch_loss"] = record.epoch_loss(done, steps_per_epoch)
    return final
