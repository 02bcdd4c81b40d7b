"""Intermediate representations by layer name, without changing the model's normal output."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


def layer_names(model: nn.Module) -> list[str]:
    """Names accepted by :func:`capture` (``model.named_modules()`` names, root excluded)."""
    return [name for name, _ in model.named_modules() if name]


@contextlib.contextmanager
def capture(model: nn.Module, layers: list[str] | tuple[str, ...]) -> Iterator[dict]:
    """Record the outputs of the named submodules during forward passes inside the block.

    >>> with capture(model, ["features.3", "fc1"]) as reps:
    ...     logits = model(x)
    >>> reps["fc1"].shape
    """
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules or not name]
    if missing:
        raise KeyError(
            f"model has no layer(s) {missing}; available: {', '.join(layer_names(model)[:30])}"
        )
    outputs: dict = {}
    handles = []
    for name in layers:
        def hook(_module, _inputs, output, name=name):
            outputs[name] = output

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
