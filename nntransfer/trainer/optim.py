"""Optimizers by name, the learning-rate schedule, and early stopping."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..configs.errors import ConfigError


def make_optimizer(name: str, params, options: dict) -> torch.optim.Optimizer:
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"unknown optimizer {name!r}: use a torch.optim class name such as SGD, Adam, AdamW")
    try:
        return cls(params, **options)
    except TypeError as err:
        raise ConfigError(f"optimizer {name} does not accept options {options}: {err}") from err


def scheduled_lr(base_lr: float, epoch: int, *, warmup_epochs: int, milestones: list[int], decay_factor: float,
                 plateau_decays: int) -> float:
    """LR for ``epoch`` (1-based): linear warm-up, then milestone and plateau decays."""
    lr = base_lr * decay_factor ** (sum(epoch > m for m in milestones) + plateau_decays)
    if warmup_epochs and epoch <= warmup_epochs:
        lr *= epoch / warmup_epochs
    return lr


class EarlyStopping:
    """Track the best validation score; count non-improving evaluations; decide when to stop.

    With ``decays`` > 0 (plateau schedule), running out of patience first restores the best
    parameters and decays the LR, ``decays`` times, before stopping.
    """

    def __init__(self, patience: int, threshold: float, decays: int = 0):
        self.patience, self.threshold, self.decays = patience, threshold, decays
        self.best_score = -float("inf")
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.bad_evaluations = 0
        self.decays_done = 0

    def update(self, score: float, epoch: int, model: nn.Module) -> str:
        """Returns "improved", "wait", "decay" (restore best + lower LR) or "stop"."""
        if score > self.best_score + self.threshold:
            self.best_score, self.best_epoch, self.bad_evaluations = score, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return "improved"
        self.bad_evaluations += 1
        if self.bad_evaluations < self.patience:
            return "wait"
        self.bad_evaluations = 0
        if self.decays_done < self.decays:
            self.decays_done += 1
            return "decay"
        return "stop"

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "bad_evaluations": self.bad_evaluations, "decays_done": self.decays_done}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(copy.copy(state))
