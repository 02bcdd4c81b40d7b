"""One registry mechanism for everything a stored config names: models, dataset sources, losses, metrics, modules.

A config names such a thing by its registered name (``"lenet"``) or by an import path
(``"mypackage.models:MyNet"``, or ``"mypackage.models.MyNet"``). Import paths are what make a stored
config independent of registrations that ran in another process: any worker can import the path.

A registry knows its built-in names without importing them (``builtins``: name -> the module that registers
it), so that checking a config's names costs no torch import; the objects themselves are registered by their
modules (``@REGISTRY.register("name")``) and fetched with ``get(name)``, which imports a built-in's module on
first use and resolves import paths, with a ``ConfigError`` that lists what is registered.
"""
from __future__ import annotations

import difflib
import importlib
import os
import types
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from ..errors import ConfigError

_NOT_GIVEN = object()


def _dotted_names(text: str) -> bool:
    """``a.b.c`` where every part is a Python identifier (no relative ``..``, no slashes, no spaces)."""
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def split_import_path(path: str, what: str = "fn") -> tuple[str, str]:
    """``"package.module:Name"`` (or ``"package.module.Name"``) -> ``("package.module", "Name")``.

    Both parts must be dotted Python identifiers: a file path (``../../etc/passwd``) or a relative module is a
    ``ConfigError`` naming ``what``, never an error of the import machinery."""
    if not isinstance(path, str) or not ("." in path or ":" in path):
        raise ConfigError(f"{what} must be an import path like 'package.module:name', got {path!r}")
    if ":" in path:
        module_path, _, attribute = path.partition(":")
    else:
        module_path, _, attribute = path.rpartition(".")
    if not _dotted_names(module_path) or not _dotted_names(attribute):
        raise ConfigError(f"{what}={path!r} is not an import path like 'package.module:name' (dotted Python names; "
                          "not a file path)")
    return module_path, attribute


def resolve_import_path(path: str, what: str = "fn") -> Any:
    """Import ``package.module:Name`` (or ``package.module.Name``) and return the (callable) object.

    With ``NNTRANSFER_TRUSTED_MODULES`` set, the module named and the module that defines the object must both
    be trusted, and the attribute path may not pass through another module (``pkg.mod:os.system`` is refused:
    name the module you mean). The ``ConfigError`` names the part that failed.
    """
    module_path, attribute = split_import_path(path, what)
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
        if isinstance(obj, types.ModuleType):
            raise ConfigError(f"{what}={path!r}: {part!r} is a module; an import path names an object of the module "
                              f"before ':' (write '{obj.__name__}:<name>')")
    check_trusted(defining_module(obj), what, path)
    if not callable(obj):
        raise ConfigError(f"{what}={path!r} is not callable")
    return obj


def defining_module(obj: Any) -> str:
    """The module that defines ``obj``: a class's or function's own ``__module__``, else its type's."""
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return getattr(obj, "__module__", None) or ""
    return type(obj).__module__ or ""


def trusted_modules() -> list[str] | None:
    """Module prefixes from ``NNTRANSFER_TRUSTED_MODULES`` (comma-separated), or None when unset (all trusted)."""
    text = os.environ.get("NNTRANSFER_TRUSTED_MODULES", "").strip()
    if not text:
        return None
    return ["nntransfer", *(p.strip() for p in text.split(",") if p.strip())]


def check_trusted(module_path: str, what: str = "fn", path: str | None = None) -> None:
    """Refuse code outside the allowlist: rows of a shared schema name code that workers run."""
    allowed = trusted_modules()
    if allowed is None or any(module_path == p or module_path.startswith(p + ".") for p in allowed):
        return
    raise ConfigError(f"{what}={path or module_path!r}: module {module_path!r} is not in NNTRANSFER_TRUSTED_MODULES "
                      f"({', '.join(allowed)}); add its package there if you trust it")


def is_import_path(name: str) -> bool:
    return ":" in name or "." in name


class Registry(Mapping):
    """Named objects of one kind, plus families (``prefix<name>``), a fallback and import paths.

    ``kind`` is what the objects are ("model", "loss"); ``option`` is the config field that names them (used in
    error messages); ``builtins`` maps each built-in name to the module that registers it and ``families`` each
    built-in family prefix to its module: both known without importing anything. The implementation modules
    attach what needs them: ``set_check(fn)`` (an error text for an object that does not fit) and
    ``set_fallback(fn, names)`` (objects found elsewhere, e.g. ``torch.nn`` losses); ``open_fallback_text``
    says in messages what the fallback accepts, and that names outside the registry may be valid.
    """

    def __init__(self, kind: str, option: str, *, builtins: Mapping[str, str] | None = None,
                 families: Mapping[str, str] | None = None, open_fallback_text: str = "", how: str = ""):
        self.kind, self.option = kind, option
        self.builtins = dict(builtins or {})
        self.builtin_families = dict(families or {})
        self._entries: dict[str, Any] = {}
        self._families: dict[str, tuple[Callable, Callable | None]] = {}
        self._check: Callable[[Any], str | None] | None = None
        self._fallback: Callable[[str], Any] | None = None
        self._fallback_names: Callable[[], list[str]] | None = None
        self._fallback_text, self._how = open_fallback_text, how

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

    def set_check(self, check: Callable[[Any], str | None]) -> None:
        """Attach the check of registered objects (an error text, or None when the object fits)."""
        self._check = check

    def set_fallback(self, fallback: Callable[[str], Any], names: Callable[[], list[str]]) -> None:
        """Attach a lookup for names found outside the registry (None: not found) and the list of those names."""
        self._fallback, self._fallback_names = fallback, names

    # -- knowing names (no imports) ----------------------------------------------------------------
    def knows(self, name: str) -> bool | None:
        """Whether ``name`` can name an object here, without importing implementations: True for registered and
        built-in names, built-in family prefixes and import paths (resolved later); None when only the open
        fallback could tell; False otherwise."""
        if not isinstance(name, str) or not name:
            return False
        if name in self._entries or name in self.builtins:
            return True
        if is_import_path(name) and not self._family_of(name):
            try:
                split_import_path(name, what=self.option)
            except ConfigError:
                return False
            return True
        if self._family_of(name):
            return True
        return None if self._fallback_text else False

    def check_name(self, name: str) -> None:
        """The ``ConfigError`` of an unknown name, as far as it can be told without importing implementations."""
        if not isinstance(name, str):
            raise ConfigError(f"{self.option} must name a {self.kind} (a string), got {name!r}")
        if self.knows(name) is False:
            if is_import_path(name) and not self._family_of(name):
                split_import_path(name, what=self.option)  # a malformed import path: say so
            raise ConfigError(self._unknown(name))

    def _family_of(self, name: str) -> str | None:
        for prefix in [*self._families, *self.builtin_families]:
            if name.startswith(prefix):
                return prefix
        return None

    # -- looking up -----------------------------------------------------------------------------
    def get(self, name: str, default: Any = _NOT_GIVEN) -> Any:
        """The object registered as ``name``, a family member, a fallback object, or the object at an import path.
        An unknown name raises ``ConfigError``, or returns ``default`` when one is given."""
        try:
            return self._get(name)
        except ConfigError:
            if default is _NOT_GIVEN:
                raise
            return default

    def _get(self, name: str) -> Any:
        if not isinstance(name, str):
            raise ConfigError(f"{self.option} must name a {self.kind} (a string), got {name!r}")
        if name not in self._entries and name in self.builtins:
            importlib.import_module(self.builtins[name])  # registers it
        if name in self._entries:
            return self._entries[name]
        prefix = self._family_of(name)
        if prefix is not None:
            return self._family_member(prefix, name)
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

    def _family_member(self, prefix: str, name: str) -> Callable:
        if prefix not in self._families:
            importlib.import_module(self.builtin_families[prefix])  # registers it
        family, members = self._families[prefix]
        member = name[len(prefix):]
        if members is not None and member not in (known := members()):
            close = difflib.get_close_matches(member, known, n=1)
            hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r} in {self.option}: no {member!r} among the "
                              f"{len(known)} of {prefix}<name>.{hint}")
        return lambda *args, **kwargs: family(member, *args, **kwargs)

    def validate_name(self, name: str) -> None:
        """Raise the ``ConfigError`` that :meth:`get` would raise for an unknown name (imports implementations)."""
        self._get(name)

    def names(self) -> list[str]:
        """Registered and built-in names (and family patterns), sorted."""
        families = dict.fromkeys([*self.builtin_families, *self._families])
        return sorted(set(self._entries) | set(self.builtins)) + [f"{p}<name>" for p in families]

    def _unknown(self, name: str) -> str:
        known = [*self._entries, *self.builtins, *(self._fallback_names() if self._fallback_names else [])]
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

    # -- Mapping: the registered objects ----------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


__all__ = ["Registry", "check_trusted", "defining_module", "is_import_path", "resolve_import_path",
           "split_import_path", "trusted_modules"]
