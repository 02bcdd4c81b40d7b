"""Main-loop modules: a registry by name, plus import paths for user modules."""
from __future__ import annotations

from .base import MODULES, CancelBatch, CancelEpoch, MainLoopModule, Option, module_class, register_module

# The registry: one import line per built-in module (each registers itself with @register_module).
from . import model_wrapper  # noqa: E402,F401
from . import noise_augmentation  # noqa: E402,F401
from . import representation_matching  # noqa: E402,F401
from . import representation_monitor  # noqa: E402,F401

__all__ = ["CancelBatch", "CancelEpoch", "MODULES", "MainLoopModule", "Option", "module_class", "register_module"]
