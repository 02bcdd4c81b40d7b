"""One registry mechanism for everything a stored config names: models, dataset sources, losses, modules.

A config names such a thing by its registered name (``"lenet"``) or by an import path
(``"mypackage.models:MyNet"``, or ``"mypackage.models.MyNet"``). Import paths are what make a stored
config independent of registrations that ran in another process: any worker can import the path.

Each registry is a read-only mapping ``name -> object``; ``register(...)`` is its decorator and
``get(name)`` resolves a name or an import path, with a ``ConfigError`` that lists what is registered.
"""
from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from ..errors import ConfigError


def resolve_import_path(path: str, what: str = "fn") -> Any:
    """Import ``package.module:Name`` (or ``package.module.Name``) and return the object.

    The ``ConfigError`` names the part that failed.
    """
    if not isinstance(path, str) or not ("." in path or ":" in path):
        raise ConfigError(f"{what} must be an import path like 'package.module:name', got {path!r}")
    if ":" in path:
        module_path, _, attribute = path.partition(":")
    else:
        module_path, _, attribute = path.rpartition(".")
    if not module_path or not attribute:
        raise ConfigError(f"{what}={path!r} is not an import path like 'package.module:name'")
    check_trusted(module_path, what, path)
    try:
        module = importlib.import_module(module_path)
    except ImportError as err:
        raise ConfigError(f"{what}={path!r}: cannot import module {module_path!r} ({err})") from err
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}={path!r}: module {module_path!r} has no attribute {attribute!r}") from None
    if not callable(obj):
        raise ConfigError(f"{what}={path!r} is not callable")
    return obj


def trusted_modules() -> list[str] | None:
    """Module prefixes from ``NNTRANSFER_TRUSTED_MODULES`` (comma-separated), or None when unset (all trusted)."""
    text = os.environ.get("NNTRANSFER_TRUSTED_MODULES", "").strip()
    if not text:
        return None
    return ["nntransfer", *(p.strip() for p in text.split(",") if p.strip())]


def check_trusted(module_path: str, what: str = "fn", path: str | None = None) -> None:
    """Refuse an import path outside the allowlist: rows of a shared schema name code that workers run."""
    allowed = trusted_modules()
    if allowed is None or any(module_path == p or module_path.startswith(p + ".") for p in allowed):
        return
    raise ConfigError(f"{what}={path or module_path!r}: module {module_path!r} is not in NNTRANSFER_TRUSTED_MODULES "
                      f"({', '.join(allowed)}); add its package there if you trust it")


def is_import_path(name: str) -> bool:
    return ":" in name or "." in name


class Registry(Mapping):
    """Named objects of one kind, plus families (``prefix<name>``) and import paths.

    ``kind`` is what the objects are ("model", "loss"); ``option`` is the config field that names them
    (used in error messages); ``check(obj)`` returns an error text for an object that does not fit;
    ``fallback(name)`` returns an object for names found elsewhere (e.g. ``torch.nn`` losses) or None, and
    ``fallback_names()`` lists those names for "did you mean" hints.
    """

    def __init__(self, kind: str, option: str, *, check: Callable[[Any], str | None] | None = None,
                 fallback: Callable[[str], Any] | None = None, fallback_names: Callable[[], list[str]] | None = None,
                 fallback_text: str = "", how: str = ""):
        self.kind, self.option = kind, option
        self._entries: dict[str, Any] = {}
        self._families: dict[str, Callable] = {}
        self._check, self._fallback, self._fallback_names = check, fallback, fallback_names
        self._fallback_text, self._how = fallback_text, how

    # -- registering ----------------------------------------------------------------------------
    def register(self, *names: str) -> Callable:
        """Decorator: ``@REGISTRY.register("name", "alias")``. Re-registering a name replaces it."""
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"register a {self.kind} under one or more non-empty names")

        def decorate(obj):
            self._validate(obj, names[0])
            for name in names:
                self._entries[name] = obj
            return obj

        return decorate

    def register_family(self, prefix: str, members: Callable[[], list[str]] | None = None) -> Callable:
        """Decorator for ``fn(name, *args)`` serving every name that starts with ``prefix``; ``members()``, if
        given, lists the valid names after the prefix (checked when a config is filled, not when training)."""

        def decorate(fn):
            self._families[prefix] = (fn, members)
            return fn

        return decorate

    # -- looking up -----------------------------------------------------------------------------
    def get(self, name: str, default: Any = None) -> Any:  # noqa: D401 - Mapping.get, but raising
        """The object registered as ``name``, a family member, or the object at an import path."""
        if not isinstance(name, str):
            raise ConfigError(f"{self.option} must name a {self.kind} (a string), got {name!r}")
        if name in self._entries:
            return self._entries[name]
        for prefix, (family, members) in self._families.items():
            if name.startswith(prefix):
                member = name[len(prefix):]
                if members is not None and member not in (known := members()):
                    close = difflib.get_close_matches(member, known, n=1)
                    hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
                    raise ConfigError(f"unknown {self.kind} {name!r} in {self.option}: no {member!r} among the "
                                      f"{len(known)} of {prefix}<name>.{hint}")
                return lambda *args, **kwargs: family(member, *args, **kwargs)
        if self._fallback is not None:
            found = self._fallback(name)
            if found is not None:
                return found
        if is_import_path(name):
            obj = resolve_import_path(name, what=self.option)
            problem = self._check(obj) if self._check else None
            if problem:
                raise ConfigError(f"{self.option}={name!r}: {problem}")
            return obj
        raise ConfigError(self._unknown(name))

    def validate_name(self, name: str) -> None:
        """Raise the ``ConfigError`` that :meth:`get` would raise for an unknown name (imports paths)."""
        self.get(name)

    def names(self) -> list[str]:
        """Registered names (and family patterns), sorted."""
        return sorted(self._entries) + [f"{p}<name>" for p in self._families]

    def _unknown(self, name: str) -> str:
        known = list(self._entries) + (self._fallback_names() if self._fallback_names else [])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        extra = f", {self._fallback_text}" if self._fallback_text else ""
        how = f" {self._how}" if self._how else ""
        return (f"unknown {self.kind} {name!r} in {self.option}.{hint} Registered: {', '.join(self.names())}"
                f"{extra}, or an import path 'package.module:Name'.{how}")

    def _validate(self, obj: Any, name: str) -> None:
        problem = self._check(obj) if self._check else None
        if problem:
            raise TypeError(f"cannot register {name!r} as a {self.kind}: {problem}")

    # -- Mapping --------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def registries() -> dict[str, Registry]:
    """Every registry by plural name (imports the packages that fill them)."""
    from ..dataset.sources import SOURCES
    from ..models.neural import CORES
    from ..models.registry import MODELS
    from ..trainer.losses import LOSSES
    from ..trainer.metrics import METRICS
    from ..trainer.modules import MODULES

    return {"models": MODELS, "sources": SOURCES, "losses": LOSSES, "metrics": METRICS, "modules": MODULES,
            "cores": CORES}


__all__ = ["Registry", "check_trusted", "is_import_path", "registries", "resolve_import_path", "trusted_modules"]
