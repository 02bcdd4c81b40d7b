"""The hook runner: every call from the main loop to its modules goes through :class:`Hooks`.

One convention (the original nntransfer signatures, see :class:`~nntransfer.trainer.MainLoopModule`) and one
rule for the loop's state: before each call the runner sets ``mode``, ``train_mode``, ``epoch``, ``task_key``,
``batch_index`` and ``shared_memory`` on the module it calls. The trainer never writes module attributes.
Modules that do not override a hook are not called for it (the base class's hooks do nothing), which keeps a
batch's cost independent of the modules that only act once per pass.
"""
from __future__ import annotations

from typing import Any, Callable

from .modules.base import HOOKS, MainLoopModule, check_conventions, overrides

TRAIN, VALIDATION, TEST = "Training", "Validation", "Test"  # the modes of a pass


def loop_state(mode: str, epoch: int, task_key: str | None = None, batch_index: int | None = None,
               shared_memory: dict | None = None) -> dict[str, Any]:
    """The state the runner sets on a module before calling it (one dict per pass or batch, built once)."""
    return {"mode": mode, "train_mode": mode == TRAIN, "epoch": epoch, "task_key": task_key,
            "batch_index": batch_index, "shared_memory": shared_memory}


class Hooks:
    """Calls the hooks of ``modules`` in order. Each method takes the loop state (:func:`loop_state`) first."""

    def __init__(self, modules: list[MainLoopModule]):
        for module in modules:
            check_conventions(type(module))
        self.modules = list(modules)
        # per hook: (the module's attribute dict, its bound hook) of the modules that override it
        self._calls: dict[str, tuple[tuple[dict, Callable], ...]] = {
            hook: tuple((vars(module), getattr(module, hook)) for module in modules if overrides(type(module), hook))
            for hook in HOOKS}

    def overridden(self, hook: str) -> bool:
        """Whether any module overrides ``hook`` (the trainer skips work that only such a hook needs)."""
        return bool(self._calls[hook])

    def pre_epoch(self, state: dict, model) -> None:
        for attributes, hook in self._calls["pre_epoch"]:
            attributes.update(state)
            hook(model, state["mode"], epoch=state["epoch"])

    def pre_forward(self, state: dict, model, inputs):
        for attributes, hook in self._calls["pre_forward"]:
            attributes.update(state)
            model, inputs = hook(model, inputs, state["task_key"], state["shared_memory"])
        return model, inputs

    def post_forward(self, state: dict, outputs, loss, targets):
        for attributes, hook in self._calls["post_forward"]:
            attributes.update(state)
            outputs, loss, targets = hook(outputs, loss, targets, **state["shared_memory"])
        return outputs, loss, targets

    def post_backward(self, state: dict, model) -> None:
        self._call("post_backward", state, model)

    def pre_optimizer(self, state: dict, model) -> None:
        self._call("pre_optimizer", state, model)

    def post_optimizer(self, state: dict, model) -> None:
        self._call("post_optimizer", state, model)

    def post_epoch(self, state: dict, model) -> None:
        self._call("post_epoch", state, model)

    def after_cancel_batch(self, state: dict, model) -> None:
        self._call("after_cancel_batch", state, model)

    def after_cancel_epoch(self, state: dict, model) -> None:
        self._call("after_cancel_epoch", state, model)

    def _call(self, hook: str, state: dict, model) -> None:
        for attributes, method in self._calls[hook]:
            attributes.update(state)
            method(model)


__all__ = ["Hooks", "TEST", "TRAIN", "VALIDATION", "loop_state"]
