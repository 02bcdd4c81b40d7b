"""The main-loop module base class and the exceptions modules use to steer the loop."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..trainer import Trainer


class CancelBatch(Exception):
    """Raised by a module: skip the rest of this batch (no loss, no optimizer step)."""


class CancelEpoch(Exception):
    """Raised by a module: end this epoch (or evaluation pass) now."""


class MainLoopModule:
    """Hooks called by the trainer; override any of them. The defaults change nothing.

    Order per epoch: ``pre_epoch`` → per batch: ``pre_forward`` → model forward → ``post_forward`` →
    loss → backward → ``post_backward`` → optimizer step → ``post_optimizer`` → … → ``post_epoch``.
    Validation and test run the same hooks without backward and optimizer step. ``mode`` is
    "Training", "Validation" or "Test". ``shared_memory`` is a dict shared by all modules for the
    current batch (it holds ``extra``: the batch's transfer data, if any).

    Options come from ``TrainerConfig.module_options[<name in main_loop_modules>]`` as ``self.options``.
    """

    name = "MainLoopModule"

    def __init__(self, trainer: "Trainer", name: str | None = None):
        self.name = name or self.name
        self.trainer = trainer
        self.config = trainer.config
        self.device = trainer.device
        self.seed = trainer.seed
        self.tracker = trainer.tracker
        self.options: dict[str, Any] = dict(trainer.config.module_options.get(self.name, {}))
        self.mode = "Training"
        self.epoch = 0

    def option(self, key: str, default: Any) -> Any:
        return self.options.get(key, default)

    def pre_epoch(self, model, mode, **options):
        self.mode = mode
        self.epoch = options.get("epoch", self.epoch)

    def pre_forward(self, model, inputs, task_key, shared_memory):
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        return outputs, loss, targets

    def post_backward(self, model):
        pass

    def post_optimizer(self, model):
        pass

    def post_epoch(self, model):
        pass

    def log(self, task: str, objective: str, value: float) -> None:
        """Record a module objective for the current mode (averaged per epoch by the caller)."""
        self.tracker.add(self.mode, task, objective, value)
