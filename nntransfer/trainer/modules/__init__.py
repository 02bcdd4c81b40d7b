"""Main-loop modules: a registry by name, plus import paths for user modules."""
from __future__ import annotations

from ...configs.base import resolve_import_path
from ...configs.errors import ConfigError
from .base import CancelBatch, CancelEpoch, MainLoopModule
from .model_wrapper import ModelWrapper
from .noise_augmentation import NoiseAugmentation
from .representation_matching import RepresentationMatching
from .representation_monitor import RepresentationMonitor

# One line per built-in module.
MODULES: dict[str, type[MainLoopModule]] = {
    "ModelWrapper": ModelWrapper,
    "NoiseAugmentation": NoiseAugmentation,
    "RepresentationMatching": RepresentationMatching,
    "RepresentationMonitor": RepresentationMonitor,
}


def register_module(name: str):
    """Class decorator registering a module under ``name`` (use the name in ``main_loop_modules``)."""

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, MainLoopModule)):
            raise TypeError(f"{cls!r} must subclass MainLoopModule")
        cls.name = name
        MODULES[name] = cls
        return cls

    return decorate


def module_class(name: str) -> type[MainLoopModule]:
    """A registered name, or an import path ``package.module.Class`` of a MainLoopModule subclass."""
    if name in MODULES:
        return MODULES[name]
    if "." not in name:
        raise ConfigError(f"unknown main-loop module {name!r}; built-ins: {', '.join(sorted(MODULES))}, "
                          "or give an import path such as 'mypackage.modules.MyModule'")
    cls = resolve_import_path(name, what="main_loop_modules entry")
    if not (isinstance(cls, type) and issubclass(cls, MainLoopModule)):
        raise ConfigError(f"main-loop module {name!r} is not a MainLoopModule subclass")
    return cls


__all__ = ["CancelBatch", "CancelEpoch", "MODULES", "MainLoopModule", "module_class", "register_module"]
