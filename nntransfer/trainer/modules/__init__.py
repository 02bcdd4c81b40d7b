"""Main-loop modules: the base class, the registry (built-ins by name, see ``nntransfer.configs.registries``;
each is imported when first named), and import paths for user modules."""
from __future__ import annotations

from .base import (MODULES, CancelBatch, CancelEpoch, CapturingModule, MainLoopModule, Option, PassTerms, module_class,
                   register_module)

__all__ = ["CancelBatch", "CancelEpoch", "CapturingModule", "MODULES", "MainLoopModule", "Option", "PassTerms",
           "module_class", "register_module"]
