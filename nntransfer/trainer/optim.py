"""Optimizers by name, the learning-rate schedule, and early stopping."""
from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from ..errors import ConfigError


def make_optimizer(name: str, params, options: dict, device: torch.device | None = None) -> torch.optim.Optimizer:
    """``torch.optim.<name>(params, **options)``. On CUDA the fused implementation is used where torch has one
    and ``options`` choose none (``fused``/``foreach``): one kernel per step instead of several per tensor."""
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"unknown optimizer {name!r}: use a torch.optim class name such as SGD, Adam, AdamW")
    options = dict(options)
    params = list(params)
    if (device is not None and device.type == "cuda" and not {"fused", "foreach"} & set(options)
            and "fused" in inspect.signature(cls.__init__).parameters
            and all(p.is_cuda and p.is_floating_point() for p in params)):
        options["fused"] = True
    try:
        return cls(params, **options)
    except TypeError as err:
        raise ConfigError(f"optimizer {name} does not accept options {options}: {err}") from err


def scheduled_lr(base_lr: float, epoch: int, *, warmup_epochs: int, milestones: list[int], decay_factor: float,
                 plateau_decays: int, step: int = 1, warmup_steps: int = 0, milestone_steps: list[int] = ()) -> float:
    """LR for ``epoch`` (1-based) and optimizer ``step`` (1-based: the step about to be taken): linear
    warm-up (over epochs or steps), then milestone (epochs or steps) and plateau decays."""
    decays = sum(epoch > m for m in milestones) + sum(step > m for m in milestone_steps) + plateau_decays
    lr = base_lr * decay_factor ** decays
    if warmup_epochs and epoch <= warmup_epochs:
        lr *= epoch / warmup_epochs
    if warmup_steps and step <= warmup_steps:
        lr *= step / warmup_steps
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
        self.best_step = 0
        self.best_state: dict | None = None
        self.bad_evaluations = 0
        self.decays_done = 0

    def update(self, score: float, epoch: int, model: nn.Module, step: int = 0) -> str:
        """Returns "improved", "wait", "decay" (restore best + lower LR) or "stop"."""
        if score > self.best_score + self.threshold:
            self.best_score, self.best_epoch, self.best_step, self.bad_evaluations = score, epoch, step, 0
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

    def reset(self) -> None:
        """Forget the best evaluation, the patience used and the LR decays done: training starts over (e.g. a new
        round of lottery-ticket pruning), and restore_best picks among the evaluations from here on."""
        self.__init__(self.patience, self.threshold, self.decays)

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "best_step": self.best_step,
                "best_state": self.best_state, "bad_evaluations": self.bad_evaluations,
                "decays_done": self.decays_done}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(copy.copy(state))
