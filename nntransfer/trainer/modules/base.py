"""The main-loop module base class, its declared options, and the exceptions modules use to steer the loop."""
from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any, Callable

from ...errors import ConfigError
from ...configs.registries import MODULES
from ..tracking import Tracker

if TYPE_CHECKING:
    from ..trainer import Trainer


class CancelBatch(Exception):
    """Raised by a module: skip the rest of this batch. Nothing of it reaches the parameters: raised in
    ``post_backward`` its gradients are dropped, in ``pre_optimizer`` the step (and every gradient accumulated
    for it) is dropped. A cancelled batch is not tracked."""


class CancelEpoch(Exception):
    """Raised by a module: end this epoch (or evaluation pass) now."""


_REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Option:
    """A declared module option: its default (none: required), accepted types and a help text.

    ``int`` options accept integral floats (config dicts may store 2 as 2.0); ``float`` options accept ints.
    """

    default: Any = _REQUIRED
    types: type | tuple[type, ...] = object
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def check(self, owner: str, key: str, value: Any) -> Any:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        for tp in types:
            if tp is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if tp is int and isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool)):
                return value
        names = " or ".join(tp.__name__ for tp in types)
        raise ConfigError(f"module_options[{owner!r}][{key!r}] must be {names}, got {type(value).__name__} {value!r}")


class MainLoopModule:
    """Hooks called by the trainer; override any of them. The defaults change nothing.

    Constructed as ``Module(model, config, device, seed)`` (the original nntransfer signature; a
    subclass that overrides ``__init__`` keeps it and calls ``super().__init__(model, config, device, seed)``).

    Order per epoch: ``pre_epoch`` → per batch: ``pre_forward`` → model forward → ``post_forward`` →
    loss → backward → ``post_backward`` → (every ``accumulate_gradients`` batches: ``pre_optimizer`` →
    optimizer step → ``post_optimizer``) → … → ``post_epoch``. Validation and test run the same hooks
    without backward and optimizer step. ``mode`` is "Training", "Validation" or "Test".

    ``shared_memory`` is one dict per batch, shared by every hook of every module: it holds ``extra`` (the
    batch's transfer data: a dict of per-sample tensors, empty if none), ``batch_index``, ``epoch``,
    ``mode`` and ``task_key``, and whatever modules put there. ``pre_forward`` gets it as its fourth
    argument; ``post_forward``, ``post_backward``, ``pre_optimizer`` and ``post_optimizer`` get the dict
    itself when they declare a parameter named ``shared_memory``. A ``post_forward`` written the original
    nntransfer way, ``post_forward(self, outputs, loss, targets, **shared_memory)``, still works: it gets the
    entries as keywords (a copy: what it writes there is not shared).

    Options: a module declares them in ``options_declared`` (name -> :class:`Option`); ``self.options`` holds
    the given ones, ``self.option(name)`` a given value or the declared default. An option that is not
    declared is a ``ConfigError`` naming the declared ones.

    State: ``state_dict()`` / ``load_state_dict()`` (default: nothing) are saved in checkpoints, so that a
    module with state (a moving average, a counter, a pass's accumulators) resumes exactly. States hold
    tensors, numbers, strings and plain containers (they are loaded with ``weights_only=True``).

    Attributes: ``model``, ``config`` (the TrainerConfig), ``device``, ``seed``, ``trainer`` (the running
    Trainer, or None when built by hand), ``tracker``, ``mode``, ``epoch``, ``options``.
    """

    name = "MainLoopModule"
    options_declared: dict[str, Option] = {}

    def __init__(self, model, config, device, seed):
        self.model, self.config, self.device, self.seed = model, config, device, seed
        # ``trainer`` and ``key`` are bound by ``create`` before __init__ runs, so that subclasses keep
        # the four-argument signature
        self.trainer: "Trainer | None" = self.__dict__.get("trainer")
        key = self.__dict__.get("key") or self.name
        self.name = key
        self.tracker = self.trainer.tracker if self.trainer is not None else Tracker()
        self.options: dict[str, Any] = self.checked_options(options_for(type(self), key, config), key)
        self.mode = "Training"
        self.epoch = 0

    @classmethod
    def create(cls, trainer: "Trainer", key: str) -> "MainLoopModule":
        """Build a module for ``trainer``; ``key`` is its entry in ``main_loop_modules``."""
        module = cls.__new__(cls)
        module.trainer, module.key = trainer, key
        module.__init__(trainer.model, trainer.config, trainer.device, trainer.seed)
        return module

    @classmethod
    def checked_options(cls, options: dict, key: str) -> dict:
        """``options`` validated against ``options_declared`` (ConfigError naming the key and the known ones)."""
        declared = cls.options_declared
        checked = {}
        for name, value in options.items():
            if name not in declared:
                known = ", ".join(f"{n} (default {o.default!r})" if not o.required else f"{n} (required)"
                                  for n, o in declared.items()) or "none"
                raise ConfigError(f"module_options[{key!r}] has {name!r}, which {cls.__name__} does not declare; "
                                  f"its options: {known}")
            checked[name] = declared[name].check(key, name, value)
        missing = [name for name, option in declared.items() if option.required and name not in checked]
        if missing:
            raise ConfigError(f"{cls.__name__} needs module_options[{key!r}][{missing[0]!r}] "
                              f"({declared[missing[0]].help or 'required'})")
        return checked

    def option(self, key: str, default: Any = _REQUIRED) -> Any:
        """The given option, else ``default`` if passed, else the declared default."""
        if key in self.options:
            return self.options[key]
        if default is not _REQUIRED:
            return default
        return self.options_declared[key].default

    # -- hooks ------------------------------------------------------------------------------------
    def pre_epoch(self, model, mode, **options):
        self.mode = mode
        self.epoch = options.get("epoch", self.epoch)

    def pre_forward(self, model, inputs, task_key, shared_memory):
        return model, inputs

    def post_forward(self, outputs, loss, targets, shared_memory=None, **_entries):
        return outputs, loss, targets

    def post_backward(self, model, shared_memory=None):
        """After ``loss.backward()`` of every training batch (gradients may be loss-scaled under fp16 and
        hold only part of an accumulated step; use ``pre_optimizer`` to see the step's gradients)."""

    def pre_optimizer(self, model, shared_memory=None):
        """Just before the optimizer step: gradients are unscaled, fully accumulated and clipped (max_grad_norm)."""

    def post_optimizer(self, model, shared_memory=None):
        pass

    def post_epoch(self, model):
        pass

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a checkpoint keeps of this module (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (its tensors come back on the training device)."""

    def log(self, task: str, objective: str, value: float) -> None:
        """Append ``value`` to ``tracker.log[mode][task][objective]`` (once per call: call it once per
        pass, e.g. from ``post_epoch``, to keep the history aligned with the passes)."""
        self.tracker.add(self.mode, task, objective, value)


HOOKS = ("pre_forward", "post_forward", "post_backward", "pre_optimizer", "post_optimizer")


def bound_hooks(modules: list[MainLoopModule]) -> dict[str, list[Callable]]:
    """Per-batch hooks of the modules that override them (the base class's are no-ops), as callables.

    ``pre_forward(model, inputs, task_key, shared_memory)``, ``post_forward(outputs, loss, targets,
    shared_memory)`` and ``<gradient hook>(model, shared_memory)``: each module's method is wrapped once
    here according to its signature, so the loop calls every hook the same way.
    """
    hooks: dict[str, list[Callable]] = {hook: [] for hook in HOOKS}
    for module in modules:
        for hook in HOOKS:
            if getattr(type(module), hook) is getattr(MainLoopModule, hook):
                continue
            method = getattr(module, hook)
            if hook == "pre_forward":
                hooks[hook].append(method)
            elif hook == "post_forward":
                hooks[hook].append(_post_forward_call(method))
            else:
                hooks[hook].append(_gradient_hook_call(method))
    return hooks


def _takes_shared_memory(method) -> bool:
    parameter = inspect.signature(method).parameters.get("shared_memory")
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


def _post_forward_call(method) -> Callable:
    if _takes_shared_memory(method):
        return lambda outputs, loss, targets, shared_memory: method(outputs, loss, targets, shared_memory=shared_memory)
    return lambda outputs, loss, targets, shared_memory: method(outputs, loss, targets, **shared_memory)


def _gradient_hook_call(method) -> Callable:
    if _takes_shared_memory(method):
        return lambda model, shared_memory: method(model, shared_memory=shared_memory)
    return lambda model, shared_memory: method(model)


def options_for(cls: type, key: str, config) -> dict:
    """The options of the module entry ``key``: ``module_options[key]``, or, for an import-path entry,
    ``module_options[<class name>]``."""
    all_options = _get(config, "module_options", {}) or {}
    for candidate in (key, key.replace(":", ".").rsplit(".", 1)[-1], cls.name, f"{cls.__module__}.{cls.__qualname__}",
                      cls.__name__):
        if candidate in all_options:
            return dict(all_options[candidate])
    return {}


def check_module_options(config) -> None:
    """Resolve every module of ``config.main_loop_modules`` and validate its options (ConfigError), without
    building anything: for checks before a job is queued or trained."""
    for key in _get(config, "main_loop_modules", []):
        cls = module_class(key)
        cls.checked_options(options_for(cls, key, config), key)


def _get(config, name, default):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def _check(obj) -> str | None:
    if isinstance(obj, type) and issubclass(obj, MainLoopModule):
        return None
    return f"{obj!r} is not a MainLoopModule subclass"


MODULES.set_check(_check)


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
