"""Dataclass-style configs that hash into DataJoint keys.

A config class declares typed fields with defaults::

    class MyTrainer(TrainerConfig):
        fn = "mypackage.training:train"
        lr: float = 0.01
        milestones: list[int] = [30, 60]        # mutable defaults are copied per instance
        warmup: int = field(default=0, since="0.2")   # added later: keeps old keys
        log_every: int = field(default=10, key=False)  # a run field: stored, never hashed

Construction takes keyword overrides only. Values are validated and normalised against the
declared types (``int`` -> ``float`` for float fields, lists <-> tuples as declared, ``-0.0`` -> ``0.0``,
NaN/inf rejected) *before* hashing, because nnfabrik's ``make_hash`` hashes leaves as ``str(x)`` and would
otherwise let ``1`` and ``"1"`` or ``(1, 2)`` and ``[1, 2]`` share a key. Untyped values (``dict`` fields
such as ``optimizer_options``, ``Any``) are normalised by :func:`_untyped` (integral floats become ints;
``''`` and ``[]`` are rejected), and strings that read as numbers are hashed quoted (:func:`hash_form`).

Key rule (documented in docs/configs.md): ``get_key()`` is :func:`nntransfer.core.keys.config_key`,
``{"<name>_fn": fn, "<name>_hash": make_hash(hash_form(cfg.hashed_dict()))}``, where ``hashed_dict()`` is
``to_dict()`` without the run fields (``comment`` and every field declared with ``key=False``: settings
that cannot change a result, such as progress bars, checkpoint cadence or file locations), without every
field declared with ``since=...`` whose value equals its default, and with tuples written as lists.

A config is a value: its lists and dicts cannot be changed in place (``cfg.freeze.append(...)`` raises), and
assigning a field (``cfg.max_iter = 3``) validates the whole config again, so nothing changes a key or slips
past validation unseen. ``cfg.replace(...)`` makes a changed copy.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import types
import typing
from typing import Any, ClassVar, Literal, Union

from ..errors import ConfigError
from . import display, persistence
from .keys import config_key
from .registry import check_trusted, resolve_import_path, split_import_path

_MISSING = dataclasses.MISSING


def field(default: Any = _MISSING, *, default_factory: Any = _MISSING, since: str | None = None, key: bool = True,
          help: str = ""):
    """Declare a config field with options.

    ``since`` marks a field added after configs were already stored: while it equals its default it
    is left out of the hash, so existing keys stay valid. ``key=False`` declares a run field: a setting
    that cannot change a result (progress bars, checkpoint cadence, loader workers, file locations); it is
    stored and shown but never hashed. ``help`` is shown by ``describe()``.
    """
    if default is not _MISSING and isinstance(default, (list, dict, set)):
        default_factory, default = (lambda v=default: copy.deepcopy(v)), _MISSING
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"since": since, "key": key, "help": help}
    )


_REGISTRY: dict[str, type["BaseConfig"]] = {}


def config_class(qualname: str) -> type["BaseConfig"]:
    """Look up a config class by ``module.QualName`` among the classes defined so far."""
    try:
        return _REGISTRY[qualname]
    except KeyError:
        raise ConfigError(
            f"unknown config class {qualname!r}: import the module that defines it first"
        ) from None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class BaseConfig:
    """Base of all configs. Subclasses are turned into keyword-only dataclasses automatically."""

    config_name: ClassVar[str] = ""
    fn: ClassVar[str] = ""
    comment: str = field(default="", key=False, help="free text, stored with the entry")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__annotations__", {})
        for name in own:
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, (list, dict, set)):
                setattr(cls, name, field(default=value))
        dataclasses.dataclass(cls, init=False, repr=False, eq=False, kw_only=True)
        cls._hints = typing.get_type_hints(cls)
        _REGISTRY[_qualname(cls)] = cls

    # -- construction -------------------------------------------------------------------------
    def __init__(self, **overrides: Any):
        fields = self.fields()
        unknown = [k for k in overrides if k not in fields and k != "fn"]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{type(self).__name__} has no field {name!r}{hint} "
                f"(fields: {', '.join(sorted(fields))})"
            )
        if "fn" in overrides:
            fn = overrides.pop("fn")
            split_import_path(fn, what="fn")
            object.__setattr__(self, "fn", fn)
        for name, f in fields.items():
            if name in overrides:
                value = overrides[name]
            elif f.default is not _MISSING:
                value = copy.deepcopy(f.default)
            elif f.default_factory is not _MISSING:
                value = f.default_factory()
            else:
                raise ConfigError(f"{type(self).__name__} needs a value for {name!r}")
            object.__setattr__(self, name, _frozen(_coerce(value, self._hints.get(name, Any), name, type(self))))
        self.__post_init__()

    def __post_init__(self) -> None:
        """Hook for cross-field checks; raise ConfigError on inconsistent values."""

    def __setattr__(self, name: str, value: Any) -> None:
        """``cfg.field = value`` validates the whole config again (types and cross-field checks)."""
        fields = self.fields()
        if name not in fields and name != "fn":
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{type(self).__name__} has no field {name!r}{hint}")
        checked = self.replace(**{name: value})
        object.__setattr__(self, name, getattr(checked, name))
        self.__dict__.pop("_key", None)

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    # -- dict / JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All field values (plain, mutable copies), including ``comment``."""
        return {name: _thawed(getattr(self, name)) for name in self.fields()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaseConfig":
        """Build a config from ``to_dict()`` output (or a JSON-decoded one; types are restored)."""
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ConfigError(f"{cls.__name__}.from_dict needs a dict of field names to values, got {data!r:.200}")
        data = dict(data)
        qual = data.pop("__class__", None)
        if qual is not None and not isinstance(qual, str):
            raise ConfigError(f"__class__ must name a config class ('module.QualName'), got {qual!r}")
        target = config_class(qual) if qual else cls
        if target is BaseConfig:  # the abstract base: no fields of its own, no key, no JSON that loads again
            raise ConfigError("the payload names no config class: give it '__class__' ('module.QualName', as "
                              "to_json writes) or load it with the class itself, e.g. TrainerConfig.from_json(text)")
        if not issubclass(target, cls):
            raise ConfigError(f"{qual} is not a {cls.__name__}")
        return target(**data)

    def to_json(self) -> str:
        payload = {"__class__": _qualname(type(self)), "fn": self.fn, **self.to_dict()}
        return json.dumps(to_jsonable(payload), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BaseConfig":
        return cls.from_dict(from_jsonable(parse_json(text)))

    def replace(self, **changes: Any) -> "BaseConfig":
        """A copy with some fields changed (validated like construction)."""
        data = self.to_dict()
        data.update(changes)
        data.setdefault("fn", self.fn)
        return type(self)(**data)

    # -- hashing --------------------------------------------------------------------------------
    def hashed_dict(self) -> dict[str, Any]:
        """The dict that ``get_key()`` hashes (see the module docstring for the rule)."""
        out = {}
        for name, f in self.fields().items():
            if not is_key_field(f):
                continue
            value = getattr(self, name)
            # compared with the default as construction normalises it (a tuple default of a list field is a list)
            if f.metadata.get("since") and value == self._normalised_default(name):
                continue
            out[name] = _plain(value)
        return out

    @classmethod
    def _normalised_default(cls, name: str) -> Any:
        return _coerce(_default_of(cls.fields()[name]), cls._hints.get(name, Any), name, cls)

    def get_key(self) -> dict[str, str]:
        """The DataJoint key of this config (see the module docstring)."""
        if not self.config_name:
            raise ConfigError(f"{type(self).__name__} has no config_name; subclass DatasetConfig, ModelConfig or TrainerConfig")
        if not self.fn:
            raise ConfigError(f"{type(self).__name__} has no fn: set the class attribute fn to the builder's import path")
        # a config cannot change in place (assignment goes through __setattr__, which drops this), so its key is
        # hashed once: planning a recipe asks for the same configs' keys many times
        key = self.__dict__.get("_key")
        if key is None:
            key = config_key(self.config_name, self.fn, self.hashed_dict())
            object.__setattr__(self, "_key", key)
        return dict(key)

    def resolve_fn(self):
        """Import and return the builder function, with a clear error when the path is wrong."""
        return resolve_import_path(self.fn, what=f"{type(self).__name__}.fn")

    def check_names(self) -> None:
        """The checks that need no import: ``fn`` is a (trusted) import path and every name a field gives is known
        to its registry (ConfigError otherwise). The full check, which imports the builder and the implementations
        (torch), is :func:`nntransfer.runner.check_config`; filling the tables runs it."""
        module_path, _ = split_import_path(self.fn, what=f"{type(self).__name__}.fn")
        check_trusted(module_path, f"{type(self).__name__}.fn", self.fn)
        self._check_names()

    def _check_names(self) -> None:
        """Subclasses: check the names their fields give against the registries, without importing anything."""

    def add_to_table(self) -> dict[str, str]:
        """Insert fn, config and comment into this config's table if missing (checked first); returns the key."""
        return persistence.add_to_table(self)

    # -- display --------------------------------------------------------------------------------
    def field_rows(self) -> list[dict[str, Any]]:
        """One row per field: ``name``, ``kind`` ("key" or "run"), ``type``, ``value``, ``changed`` (differs from the
        default), ``help`` (``describe()``, ``repr`` and the notebook table show these)."""
        return [{"name": name, "kind": "key" if is_key_field(f) else "run", "type": _type_name(self._hints.get(name, Any)),
                 "value": getattr(self, name), "changed": getattr(self, name) != _default_of(f),
                 "help": f.metadata.get("help", "")} for name, f in self.fields().items()]

    def __repr__(self) -> str:
        changed = [f"{row['name']}={row['value']!r}" for row in self.field_rows() if row["changed"]]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.fn == other.fn and self.to_dict() == other.to_dict()

    def run_fields(self) -> dict[str, Any]:
        """The values of the run fields (settings that cannot change a result), ``comment`` aside: whoever trains the
        config now gives them (progress bars, TensorBoard, loader workers, checkpoint cadence, file locations)."""
        return {name: _thawed(getattr(self, name)) for name, f in self.fields().items()
                if not is_key_field(f) and name != "comment"}

    @classmethod
    def key_fields(cls) -> list[str]:
        """Names of the fields that are part of the key (all but the run fields)."""
        return [name for name, f in cls.fields().items() if is_key_field(f)]

    def _repr_html_(self) -> str:  # a table in notebooks
        return display.config_html(self)

    def describe(self) -> str:
        """One line per field: key or run field, name, type, value, help."""
        lines = [f"{type(self).__name__} (fn={self.fn}); 'key' fields make the hash, 'run' fields do not"]
        lines += [f"  [{r['kind']}] {r['name']}: {r['type']} = {r['value']!r}  {r['help']}".rstrip()
                  for r in self.field_rows()]
        return "\n".join(lines)


# BaseConfig itself is a dataclass so that ``comment`` is inherited as a field.
dataclasses.dataclass(BaseConfig, init=False, repr=False, eq=False, kw_only=True)
BaseConfig._hints = typing.get_type_hints(BaseConfig)


def is_key_field(f: dataclasses.Field) -> bool:
    """Whether a field is hashed into the key (run fields, declared with ``key=False``, are not)."""
    return f.metadata.get("key", True)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


# -- type validation ----------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:  # Optional[int], list[str], ... (their __name__ drops the arguments)
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(value: Any, tp: Any, path: str, owner: type) -> Any:
    """Check ``value`` against ``tp`` and return it normalised; ConfigError otherwise."""

    def fail() -> typing.NoReturn:
        raise ConfigError(
            f"{owner.__name__}.{path} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )

    if tp is Any or tp is object:
        return _untyped(value, path, owner)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path, owner)
            except ConfigError as err:
                errors.append(err)
        fail()
    if origin is Literal:
        if value in args and any(type(value) is type(a) for a in args if a == value):
            return value
        raise ConfigError(f"{owner.__name__}.{path} must be one of {list(args)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        fail()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if _is_numpy_scalar(value) and value.dtype.kind == "b":
            return bool(value)
        fail()
    if tp is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int):
            return int(value)
        if _is_numpy_scalar(value) and value.dtype.kind in "iu":
            return int(value)
        fail()
    if tp is float:
        if isinstance(value, bool):
            fail()
        if isinstance(value, (int, float)) or (_is_numpy_scalar(value) and value.dtype.kind in "iuf"):
            return _finite(value, path, owner) + 0.0  # + 0.0: -0.0 becomes 0.0 (one value, one key)
        fail()
    if tp is str:
        if isinstance(value, str):
            return value
        fail()
    if tp in (list, tuple, dict):
        origin, args = tp, ()
    if origin is list:
        if not isinstance(value, (list, tuple)):
            fail()
        item = args[0] if args else Any
        return [_coerce(v, item, f"{path}[{i}]", owner) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        if not args:
            return tuple(_untyped(v, f"{path}[{i}]", owner) for i, v in enumerate(value))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]", owner) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{owner.__name__}.{path} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(v, a, f"{path}[{i}]", owner) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        key_tp, val_tp = args if args else (Any, Any)
        key = _untyped_key if key_tp is Any else lambda k, p, o: _coerce(k, key_tp, p, o)
        return {key(k, f"{path}.<key>", owner): _coerce(v, val_tp, f"{path}[{k!r}]", owner) for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        fail()
    return value


def _is_numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and getattr(value, "shape", None) == ()


def _finite(value, path: str, owner: type) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{owner.__name__}.{path} is {value!r}: NaN and infinite values cannot be part of a key "
                          "(NaN != NaN); use a finite number")
    return number


def _untyped(value: Any, path: str, owner: type) -> Any:
    """Normalise a value of an untyped field or dict (``optimizer_options``, ``module_options``, ``Any``).

    nnfabrik's ``make_hash`` hashes ``str(x)``, so values that print alike would share a key. Here:
    numpy scalars become Python numbers; integral floats become ints (``1.0`` and ``1`` are one value, one
    key; ``-0.0`` is ``0``); tuples become lists; NaN/inf, the empty string and the empty list (``''``,
    ``[]`` and ``{}`` hash alike; ``{}`` is kept), and anything that is not JSON-like are a ConfigError.
    Strings that read as numbers (``"1"``, a layer name) stay strings: :func:`hash_form` keeps them apart.
    """
    where = f"{owner.__name__}.{path}"
    if _is_numpy_scalar(value):
        value = value.item()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        number = _finite(value, path, owner)
        return int(number) if number.is_integer() else number
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{where} is the empty string, which hashes like [] and {{}}; leave the entry out")
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where} is an empty list, which hashes like '' and {{}}; leave the entry out")
        return [_untyped(v, f"{path}[{i}]", owner) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {_untyped_key(k, f"{path}.<key>", owner): _untyped(v, f"{path}[{k!r}]", owner)
                for k, v in value.items()}
    raise ConfigError(
        f"{where}: config values must be numbers, strings, booleans, None, lists or dicts; "
        f"got {type(value).__name__}"
    )


def _untyped_key(key: Any, path: str, owner: type) -> Any:
    """A key of an untyped dict: a string, or a number (``{0.5: 0.3, 1.0: 0.7}``; normalised like values, so
    ``1.0`` and ``1`` are one key)."""
    if isinstance(key, str):
        return key
    if _is_numpy_scalar(key) or isinstance(key, (bool, int, float)):
        return _untyped(key, path, owner)
    raise ConfigError(f"{owner.__name__}.{path}: keys of untyped dicts are strings or numbers, got "
                      f"{type(key).__name__} {key!r}")


def _plain(value: Any) -> Any:
    """Plain lists and dicts (tuples written as lists), as hashed."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- frozen values --------------------------------------------------------------------------------
def _refuse(self, *args, **kwargs):
    raise ConfigError("config values cannot be changed in place (the key is computed from them): make a changed copy "
                      "with cfg.replace(field=new_value), or assign the whole field (cfg.field = new_value)")


class FrozenList(list):
    """A list field's value: reads like a list, refuses changes in place."""

    append = extend = insert = pop = remove = clear = sort = reverse = __setitem__ = __delitem__ = _refuse
    __iadd__ = __imul__ = _refuse

    def __reduce__(self):
        return FrozenList, (list(self),)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self  # immutable all the way down


class FrozenDict(dict):
    """A dict field's value: reads like a dict, refuses changes in place."""

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return FrozenDict, (dict(self),)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return FrozenList(_frozen(v) for v in value)
    if isinstance(value, dict):
        return FrozenDict({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, list):
        return [_thawed(v) for v in value]
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_thawed(v) for v in value)
    return value


# -- JSON with tuples and non-string keys -------------------------------------------------------
def to_jsonable(value: Any) -> Any:
    """Encode tuples as ``{"__tuple__": [...]}`` and dicts with non-string keys as ``{"__items__": [...]}``."""
    if isinstance(value, tuple):
        return {"__tuple__": [to_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and set(value) not in ({"__tuple__"}, {"__items__"}):
            return {k: to_jsonable(v) for k, v in value.items()}
        return {"__items__": [[to_jsonable(k), to_jsonable(v)] for k, v in value.items()]}
    return value


def parse_json(text: str) -> Any:
    """``json.loads`` with a ConfigError (line and column) for malformed text."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        where = f" at line {err.lineno}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ConfigError(f"not valid JSON{where}: {getattr(err, 'msg', err)}") from None


def from_jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return tuple(from_jsonable(v) for v in value["__tuple__"])
        if set(value) == {"__items__"} and isinstance(value["__items__"], list) and all(
                isinstance(item, list) and len(item) == 2 for item in value["__items__"]):
            return {_hashable(from_jsonable(k)): from_jsonable(v) for k, v in value["__items__"]}
        return {k: from_jsonable(v) for k, v in value.items()}
    return value


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, tuple)):
        return tuple(_hashable(k) for k in key)
    if isinstance(key, dict):
        raise ConfigError(f"a dict cannot be a dict key, got {key!r:.100}")
    return key
