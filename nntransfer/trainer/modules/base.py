"""The main-loop module base class, its declared options, and the exceptions modules use to steer the loop."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import torch

from ...errors import ConfigError
from ...configs.registries import MODULES
from ...models.representations import capture
from ..handover import Handover
from ..tracking import Tracker


class CancelBatch(Exception):
    """Raised by a module: skip the rest of this batch. Nothing of it reaches the parameters: raised in
    ``post_backward`` its gradients are dropped, in ``pre_optimizer`` the step (and every gradient accumulated
    for it) is dropped. A cancelled batch is not tracked; every module's ``after_cancel_batch`` runs."""


class CancelEpoch(Exception):
    """Raised by a module: end this epoch (or evaluation pass) now; every module's ``after_cancel_epoch`` runs,
    then ``post_epoch``."""


_REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Option:
    """A declared module option: its default (none: required), accepted types, a help text and, for an option that
    names one of a few ways, the accepted ``choices``.

    ``int`` options accept integral floats (config dicts may store 2 as 2.0); ``float`` options accept ints.
    """

    default: Any = _REQUIRED
    types: type | tuple[type, ...] = object
    help: str = ""
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def check(self, owner: str, key: str, value: Any) -> Any:
        value = self._typed(owner, key, value)
        if self.choices and value not in self.choices:
            raise ConfigError(f"module_options[{owner!r}][{key!r}] must be "
                              f"{' or '.join(repr(c) for c in self.choices)}, got {value!r}")
        return value

    def _typed(self, owner: str, key: str, value: Any) -> Any:
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

    Constructed as ``Module(trainer)`` (the original nntransfer signature): a subclass that overrides
    ``__init__`` writes ``def __init__(self, trainer): super().__init__(trainer); ...``. The base class reads
    ``model``, ``config`` (the TrainerConfig), ``device``, ``seed``, ``tracker`` and ``train_loader`` from the
    trainer (any object with ``model``, ``config``, ``device`` and ``seed`` will do, e.g. in a unit test) and
    checks the module's ``options``.

    Hooks, called by the trainer's hook runner (:class:`nntransfer.trainer.hooks.Hooks`) with the original
    nntransfer signatures, in this order per pass: ``pre_epoch(model, mode, **options)`` (``options`` has
    ``epoch``) → per batch: ``pre_forward(model, inputs, task_key, shared_memory) -> (model, inputs)`` → model
    forward → ``post_forward(outputs, loss, targets, **shared_memory) -> (outputs, loss, targets)`` → loss →
    backward → ``post_backward(model)`` → (every ``accumulate_gradients`` batches: ``pre_optimizer(model)`` →
    optimizer step → ``post_optimizer(model)``) → … → ``post_epoch(model)``. Validation and test run the same
    hooks without backward and optimizer step. ``after_cancel_batch(model)`` / ``after_cancel_epoch(model)``
    tell every module that a batch or the pass was cancelled (:class:`CancelBatch`, :class:`CancelEpoch`).

    The loop's state: before each call the runner sets ``mode`` ("Training", "Validation" or "Test"),
    ``train_mode``, ``epoch``, ``task_key``, ``batch_index`` and ``shared_memory`` on the module (the last
    three are None in ``pre_epoch`` and ``post_epoch``). ``shared_memory`` is the batch's dict, the same object
    for every hook of every module in that batch: it starts as ``{"extra": <the batch's transfer data>}`` and a
    module writes to ``self.shared_memory`` (or to ``pre_forward``'s argument) to share with later hooks;
    ``post_forward`` gets its entries as keywords too (a copy). Modules are checked once, when built: a hook
    with another signature, e.g. ``post_backward(self, model, shared_memory=None)``, is a ``ConfigError`` that
    says what to write instead (:func:`check_conventions`).

    Options: a module declares them in ``options_declared`` (name -> :class:`Option`); ``self.options`` holds
    the given ones, ``self.option(name)`` a given value or the declared default. An option that is not
    declared is a ``ConfigError`` naming the declared ones.

    State: ``state_dict()`` / ``load_state_dict()`` (default: nothing) are saved in checkpoints, so that a
    module with state (a moving average, a counter, a pass's accumulators) resumes exactly. States hold
    tensors, numbers, strings and plain containers (they are loaded with ``weights_only=True``).

    Transfer: ``self.handover`` is what earlier steps of a transfer chain gave (:class:`~nntransfer.trainer.handover.
    Handover`: the parameters the step started from, which were transferred, transfer data, the previous step's
    model); a module that produces data for later steps returns it from :meth:`hand_over`.
    """

    name = "MainLoopModule"
    options_declared: dict[str, Option] = {}

    def __init__(self, trainer):
        self.trainer = trainer
        self.model, self.config, self.device, self.seed = trainer.model, trainer.config, trainer.device, trainer.seed
        tracker = getattr(trainer, "tracker", None)
        self.tracker = tracker if tracker is not None else Tracker()
        self.train_loader = (getattr(trainer, "loaders", None) or {}).get("train", {})  # {task: loader}
        handover = getattr(trainer, "handover", None)
        self.handover: Handover = handover if handover is not None else Handover()
        # ``key`` (the entry in main_loop_modules) is bound by ``create`` before __init__ runs
        key = self.__dict__.get("key") or self.name
        self.name = key
        self.options: dict[str, Any] = self.checked_options(options_for(type(self), key, self.config), key)
        # the loop's state, set by the hook runner before every hook call
        self.mode: str | None = None
        self.train_mode = False
        self.epoch = 0
        self.task_key: str | None = None
        self.batch_index: int | None = None
        self.shared_memory: dict | None = None

    @classmethod
    def create(cls, trainer, key: str) -> "MainLoopModule":
        """Build a module for ``trainer``; ``key`` is its entry in ``main_loop_modules``."""
        check_conventions(cls)
        module = cls.__new__(cls)
        module.key = key
        module.__init__(trainer)
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
        cls.check_options({name: checked.get(name, option.default) for name, option in declared.items()}, key)
        return checked

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        """Checks across options or of their values (ConfigError), before anything is built; ``options`` holds every
        declared option, given or default. Types and unknown names are checked already."""

    def option(self, key: str, default: Any = _REQUIRED) -> Any:
        """The given option, else ``default`` if passed, else the declared default."""
        if key in self.options:
            return self.options[key]
        if default is not _REQUIRED:
            return default
        return self.options_declared[key].default

    # -- hooks ------------------------------------------------------------------------------------
    def pre_epoch(self, model, mode, **options):
        """Before each pass (training, validation, test); ``options["epoch"]`` is ``self.epoch``."""

    def pre_forward(self, model, inputs, task_key, shared_memory):
        """Before the forward pass; may replace the model for this batch (e.g. a ``functools.partial``)."""
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        """After the forward pass; ``loss`` holds the modules' extra terms (it starts at 0.0), the task's loss is
        added after the last module."""
        return outputs, loss, targets

    def post_backward(self, model):
        """After ``loss.backward()`` of every training batch (gradients may be loss-scaled under fp16 and
        hold only part of an accumulated step; use ``pre_optimizer`` to see the step's gradients)."""

    def pre_optimizer(self, model):
        """Just before the optimizer step: gradients are unscaled, fully accumulated and clipped (max_grad_norm)."""

    def post_optimizer(self, model):
        """After the optimizer step (gradients are zeroed)."""

    def post_epoch(self, model):
        """After each pass (also one ended by ``CancelEpoch``)."""

    def after_cancel_batch(self, model):
        """A batch was cancelled (``CancelBatch`` from any module, or its step dropped in ``pre_optimizer``);
        ``batch_index`` and ``shared_memory`` are the cancelled batch's. Undo what this module began for it."""

    def after_cancel_epoch(self, model):
        """The pass was cancelled (``CancelEpoch``); ``post_epoch`` follows."""

    # -- transfer -----------------------------------------------------------------------------------
    def hand_over(self, model) -> dict | None:
        """Per-parameter data this module hands to later steps (None: nothing). Called once, after training and the
        final evaluation, on the returned parameters (whatever ``data_transfer`` says: producing it is what the module
        is for). The result (plain dicts of numpy arrays, numbers and strings) is stored with the step's transfer data
        as the section :meth:`handover_name` of ``transfer_data["parameters"]``, which later steps' modules read with
        ``self.handover.parameter_data(name)``. A producer accumulates: it includes what it received."""
        return None

    @classmethod
    def handover_name(cls) -> str:
        """The name of this module's section of handed-over per-parameter data: its registered name."""
        return cls.name if cls.name != MainLoopModule.name else cls.__qualname__

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a checkpoint keeps of this module (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (its tensors come back on the training device)."""

    def log(self, task: str, objective: str, value: float) -> None:
        """Append ``value`` to ``tracker.log[mode][task][objective]`` (once per call: call it once per
        pass, e.g. from ``post_epoch``, to keep the history aligned with the passes)."""
        if self.mode is None:
            raise RuntimeError(f"{type(self).__name__}.log() is for hooks: outside a pass there is no mode to log in")
        self.tracker.add(self.mode, task, objective, value)


class CapturingModule(MainLoopModule):
    """A main-loop module that reads layer outputs of the batch's forward pass (RDL, RepresentationMatching, ...).

    ``start_capture(layers)`` in ``pre_forward`` records those layers' outputs with forward hooks on ``self.model``;
    ``end_capture()`` in ``post_forward`` removes the hooks and returns the outputs by layer name, or None when this
    batch was not captured. A cancelled batch or epoch removes the hooks too: none is left on the model.
    """

    def __init__(self, trainer):
        super().__init__(trainer)
        self._capture = None
        self._captured: dict | None = None

    def start_capture(self, layers) -> None:
        self.end_capture()  # a batch whose post_forward never came (an exception elsewhere) leaves no hook behind
        self._capture = capture(self.model, list(layers))
        self._captured = self._capture.__enter__()

    def end_capture(self) -> dict | None:
        if self._capture is None:
            return None
        self._capture.__exit__(None, None, None)
        captured, self._capture, self._captured = self._captured, None, None
        return captured

    def after_cancel_batch(self, model):
        self.end_capture()

    def after_cancel_epoch(self, model):
        self.end_capture()


class PassTerms:
    """Per-task values of a module's loss term in the training pass in progress, kept as tensors (no per-batch
    synchronisation) and logged as their mean when the pass ends; part of the module's state (a mid-epoch resume
    logs the same mean)."""

    def __init__(self):
        self.terms: dict[str, list] = {}

    def add(self, task: str, value) -> None:
        self.terms.setdefault(task, []).append(value.detach().float().reshape(()))

    def log(self, module: "MainLoopModule", objective: str) -> None:
        """Log each task's mean as ``objective`` and start over."""
        for task, values in self.terms.items():
            module.log(task, objective, float(torch.stack(values).mean()))
        self.terms = {}

    def state_dict(self) -> dict:
        return {task: torch.stack(values) for task, values in self.terms.items()}

    def load_state_dict(self, state: dict) -> None:
        self.terms = {task: list(values.unbind()) for task, values in state.items()}


HOOKS = ("pre_epoch", "pre_forward", "post_forward", "post_backward", "pre_optimizer", "post_optimizer",
         "post_epoch", "after_cancel_batch", "after_cancel_epoch")

# each hook's signature, and the arguments the hook runner calls it with (``post_forward`` also gets the
# entries of shared_memory as keywords: parameters after the first three need defaults, or ``**shared_memory``)
CONVENTION = {
    "pre_epoch": ("pre_epoch(self, model, mode, **options)", ("model", "mode"), {"epoch": 1}),
    "pre_forward": ("pre_forward(self, model, inputs, task_key, shared_memory)",
                    ("model", "inputs", "task_key", "shared_memory"), {}),
    "post_forward": ("post_forward(self, outputs, loss, targets, **shared_memory)", ("outputs", "loss", "targets"), {}),
    **{hook: (f"{hook}(self, model)", ("model",), {}) for hook in HOOKS[3:]},
}


def overrides(cls: type, hook: str) -> bool:
    return getattr(cls, hook) is not getattr(MainLoopModule, hook)


@functools.lru_cache(maxsize=None)
def check_conventions(cls: type) -> None:
    """ConfigError unless ``cls`` is built as ``cls(trainer)`` and its hooks take the arguments the trainer gives.

    The rule, checked once per class: ``__init__`` takes the trainer as its one argument (the previous
    ``__init__(self, model, config, device, seed)`` is refused, with what to write instead); each overridden
    hook accepts the convention's arguments (:data:`CONVENTION`), and only ``pre_forward`` has a parameter
    ``shared_memory`` (``post_forward`` may collect the entries as ``**shared_memory``): the previous
    ``post_backward(self, model, shared_memory=None)`` would otherwise get None without a word.
    """
    name = cls.__qualname__
    init = inspect.signature(cls.__init__)
    first = next(iter(list(init.parameters.values())[1:]), None)
    if first is not None and first.name == "model" or not _binds(init, ("self", "trainer"), {}):
        raise ConfigError(f"{name}.__init__{_shown(init)} does not take the trainer: main-loop modules are built "
                          f"as {cls.__name__}(trainer). Write `def __init__(self, trainer): super().__init__(trainer)` "
                          "and read self.model, self.config, self.device and self.seed")
    for hook, (convention, args, kwargs) in CONVENTION.items():
        if not overrides(cls, hook):
            continue
        signature = inspect.signature(getattr(cls, hook))
        shared = signature.parameters.get("shared_memory")
        if shared is not None and shared.kind is not shared.VAR_KEYWORD and hook != "pre_forward":
            raise ConfigError(f"{name}.{hook}{_shown(signature)} takes shared_memory as a parameter, which the trainer "
                              f"does not pass: write {convention} and read the batch's dict as self.shared_memory")
        if not _binds(signature, ("self", *args), kwargs):
            raise ConfigError(f"{name}.{hook}{_shown(signature)} cannot be called as the trainer calls it: write "
                              f"{convention} (the loop's state is on self: mode, train_mode, epoch, task_key, "
                              "batch_index, shared_memory)")


def _binds(signature: inspect.Signature, args: tuple, kwargs: dict) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _shown(signature: inspect.Signature) -> str:
    return str(signature).split(" -> ")[0]


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
    """Resolve every module of ``config.main_loop_modules``, check that it follows the hook convention and
    validate its options (ConfigError), without building anything: for checks before a job is queued or trained."""
    for key in _get(config, "main_loop_modules", []):
        cls = module_class(key)
        check_conventions(cls)
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
