"""Early stopping and validation-based model selection: every seed validates on the held-out split, keeps the
parameters of its best validation point, and stops when its patience runs out (config `train.early_stopping`).

The rule is the DeepLearningTutorials' (lisa-lab/DeepLearningTutorials code/logistic_sgd.py at 11c46510,
lines 358–432), counted in optimizer steps from 0 like its `iter`:

- after step `i`, when (i + 1) is a multiple of `every` (and after the run's last step), the validation error
  `v` is measured; if v < best: when also v < best × improvement_threshold, patience = max(patience,
  i × patience_increase); then best = v and the parameters are kept (its `best_model.pkl`, its test score);
- after every step `i`, the seed stops when patience <= i.

Each seed keeps its own patience, best point and stop, so seeds trained together select what each would
alone; a seed that has stopped is carried along by the batch but no longer validated, and its results come
from its best point.

    stopper = EarlyStopping(cfg.train.early_stopping, stack, steps)   # in replicate.train.train_seeds
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CRITERIA = ("error", "loss")  # train.early_stopping.criterion: the validation split's zero-one error or mean loss


@dataclass(frozen=True)
class PatienceRule:
    """The stopping rule's constants (train.early_stopping): `patience` and `every` in optimizer steps."""

    every: int
    patience: int
    patience_increase: float
    improvement_threshold: float

    def validate(self, patience: float, best: float, value: float, step: int) -> tuple[float, float, bool]:
        """(patience, best, improved) after validation value `value` at 0-based step `step` (logistic_sgd.py
        lines 400–406: a strict improvement is a new best; a relative one of 1 − threshold also extends patience)."""
        if not value < best:
            return patience, best, False
        if value < best * self.improvement_threshold:
            patience = max(patience, step * self.patience_increase)
        return patience, value, True

    @staticmethod
    def stops(patience: float, step: int) -> bool:
        """Whether training ends after 0-based step `step` (logistic_sgd.py line 430: `if patience <= iter`)."""
        return patience <= step


class EarlyStopping:
    """Per seed: patience, best validation value and step, the best point's parameters, the stop, the validations."""

    def __init__(self, early_stopping_cfg, stack, steps: int):
        self.rule = PatienceRule(early_stopping_cfg.every, early_stopping_cfg.patience,
                                 float(early_stopping_cfg.patience_increase),
                                 float(early_stopping_cfg.improvement_threshold))
        self.criterion, self.steps, n_seeds = early_stopping_cfg.criterion, steps, stack.n_seeds
        self.patience = [float(self.rule.patience)] * n_seeds
        self.best = [math.inf] * n_seeds
        self.best_step: list[int | None] = [None] * n_seeds  # steps taken at the best point
        self.stopped_at: list[int | None] = [None] * n_seeds  # steps taken when patience ran out
        self.validations: list[list[dict]] = [[] for _ in range(n_seeds)]  # {"step", "valid_<criterion>"} per seed
        # (n_seeds, ...) per parameter: each seed's row from its best validation point
        self.best_params = {name: stack.param(name).detach().clone() for name in stack.leaves}

    def due(self, done: int) -> bool:
        return done % self.rule.every == 0 or done == self.steps

    def after_step(self, stack, data, step: int, evaluate) -> bool:
        """Validate if due after 0-based step `step`, then apply the stop rule; True when every seed has stopped.
        evaluate: replicate.evaluation.evaluate (stack, x, y) → {"error", "loss"} per seed."""
        running = [m for m, stopped in enumerate(self.stopped_at) if stopped is None]
        if self.due(step + 1) and running:
            values = evaluate(stack, data.x_valid, data.y_valid)[self.criterion].tolist()
            improved = []
            for m in running:
                self.patience[m], self.best[m], better = self.rule.validate(self.patience[m], self.best[m], values[m], step)
                self.validations[m].append({"step": step + 1, f"valid_{self.criterion}": values[m]})
                if better:
                    self.best_step[m] = step + 1
                    improved.append(m)
            if improved:
                rows = torch.tensor(improved, device=next(iter(self.best_params.values())).device)
                for name in stack.leaves:
                    self.best_params[name][rows] = stack.param(name).detach()[rows]
        for m in running:
            if self.rule.stops(self.patience[m], step):
                self.stopped_at[m] = step + 1
        return all(stopped is not None for stopped in self.stopped_at)

    @torch.no_grad()
    def restore_best(self, stack) -> None:
        """Every seed's parameters back to its best validation point (a seed never validated keeps its own)."""
        rows = [m for m, step in enumerate(self.best_step) if step is not None]
        if rows:
            index = torch.tensor(rows, device=next(iter(self.best_params.values())).device)
            for name in stack.leaves:
                stack.param(name).detach()[index] = self.best_params[name][index]  # in place: the optimizer's views

    def summary(self, m: int) -> dict:
        """Seed m's record for its results and the report."""
        return {"criterion": self.criterion, "best_step": self.best_step[m], "stopped_at": self.stopped_at[m],
                f"best_valid_{self.criterion}": None if self.best_step[m] is None else self.best[m],
                "patience": self.patience[m], "validations": self.validations[m]}

    def state_dict(self) -> dict:
        return {"patience": list(self.patience), "best": list(self.best), "best_step": list(self.best_step),
                "stopped_at": list(self.stopped_at), "validations": self.validations,
                "best_params": {name: value.clone() for name, value in self.best_params.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.patience, self.best = list(state["patience"]), list(state["best"])
        self.best_step, self.stopped_at = list(state["best_step"]), list(state["stopped_at"])
        self.validations = [list(points) for points in state["validations"]]
        for name, value in self.best_params.items():
            value.copy_(state["best_params"][name])
