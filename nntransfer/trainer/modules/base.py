"""The main-loop module base class and the exceptions modules use to steer the loop."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...registry import Registry
from ..tracking import Tracker

if TYPE_CHECKING:
    from ..trainer import Trainer


class CancelBatch(Exception):
    """Raised by a module: skip the rest of this batch (no loss, no optimizer step)."""


class CancelEpoch(Exception):
    """Raised by a module: end this epoch (or evaluation pass) now."""


class MainLoopModule:
    """Hooks called by the trainer; override any of them. The defaults change nothing.

    Constructed as ``Module(model, config, device, seed)`` (the original nntransfer signature; a
    subclass that overrides ``__init__`` keeps it and calls ``super().__init__(model, config, device, seed)``).

    Order per epoch: ``pre_epoch`` → per batch: ``pre_forward`` → model forward → ``post_forward`` →
    loss → backward → ``post_backward`` → optimizer step → ``post_optimizer`` → … → ``post_epoch``.
    Validation and test run the same hooks without backward and optimizer step. ``mode`` is
    "Training", "Validation" or "Test". ``shared_memory`` is a dict shared by all modules for the
    current batch; it holds ``extra`` (the batch's transfer data: a dict of per-sample tensors, empty
    if none), ``batch_index``, ``epoch``, ``mode`` and ``task_key``.

    Attributes: ``model``, ``config`` (the TrainerConfig), ``device``, ``seed``, ``trainer`` (the running
    Trainer, or None when built by hand), ``tracker``, ``mode``, ``epoch``, and ``options``: the dict
    ``config.module_options[<entry in main_loop_modules>]`` (or under the class's registered ``name``).
    """

    name = "MainLoopModule"

    def __init__(self, model, config, device, seed):
        self.model, self.config, self.device, self.seed = model, config, device, seed
        # ``trainer`` and ``key`` are bound by ``create`` before __init__ runs, so that subclasses keep
        # the four-argument signature
        self.trainer: "Trainer | None" = self.__dict__.get("trainer")
        key = self.__dict__.get("key") or self.name
        self.name = key
        self.tracker = self.trainer.tracker if self.trainer is not None else Tracker()
        all_options = _get(config, "module_options", {}) or {}
        cls = type(self)
        # options under the main_loop_modules entry, else the registered name, import path or class name
        for candidate in (key, cls.name, f"{cls.__module__}.{cls.__qualname__}", cls.__name__):
            if candidate in all_options:
                options = all_options[candidate]
                break
        else:
            options = {}
        self.options: dict[str, Any] = dict(options)
        self.mode = "Training"
        self.epoch = 0

    @classmethod
    def create(cls, trainer: "Trainer", key: str) -> "MainLoopModule":
        """Build a module for ``trainer``; ``key`` is its entry in ``main_loop_modules``."""
        module = cls.__new__(cls)
        module.trainer, module.key = trainer, key
        module.__init__(trainer.model, trainer.config, trainer.device, trainer.seed)
        return module

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
        """Append ``value`` to ``tracker.log[mode][task][objective]`` (once per call: call it once per
        pass, e.g. from ``post_epoch``, to keep the history aligned with the epochs)."""
        self.tracker.add(self.mode, task, objective, value)


def _get(config, name, default):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def _check(obj) -> str | None:
    if isinstance(obj, type) and issubclass(obj, MainLoopModule):
        return None
    return f"{obj!r} is not a MainLoopModule subclass"


MODULES = Registry("main-loop module", "TrainerConfig.main_loop_modules", check=_check,
                   how="Register one with @register_module('Name') (see docs/trainer.md).")


def register_module(name: str):
    """Class decorator registering a module under ``name`` (use the name in ``main_loop_modules``)."""
    register = MODULES.register(name)

    def decorate(cls):
        register(cls)
        cls.name = name
        return cls

    return decorate


def module_class(name: str) -> type[MainLoopModule]:
    """A registered name, or an import path ``package.module:Class`` of a MainLoopModule subclass."""
    return MODULES.get(name)
