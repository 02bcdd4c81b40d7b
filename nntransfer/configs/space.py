"""Search spaces: dotted config paths (as ``--set`` takes them) mapped to distributions.

A space is a dict ``{path: distribution}``, written in Python with the constructors here::

    space = {"1.trainer.optimizer_options.lr": loguniform(1e-4, 1e-1),
             "1.trainer.optimizer_options.weight_decay": loguniform(1e-6, 1e-2),
             "1.trainer.freeze": choice([[], ["core.0.*"], ["core.*"]])}

or in YAML/JSON, one ``{kind: arguments}`` per path (:func:`parse_space` reads both)::

    1.trainer.optimizer_options.lr: {loguniform: [1.0e-4, 1.0e-1]}
    1.trainer.max_iter: {int: [5, 20]}                      # or {int: {low: 5, high: 20, step: 5}}
    1.trainer.freeze: {choice: [[], ["core.0.*"], ["core.*"]]}

Declarations only (no Optuna, no torch): the search (``nntransfer.orchestration.search``) turns them into Optuna
distributions. :func:`check_space` checks every path against an experiment (unknown paths, values a config
refuses, and paths that are no part of the key, whose trials would all be one result).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError

#: distribution kinds as the YAML/JSON form names them
KINDS = ("uniform", "loguniform", "int", "choice")
#: the samplers and pruners a search can name (Optuna's TPE, random, grid, CMA-ES; median, Hyperband, none)
SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "none")


class Distribution:
    """A distribution of one config path."""

    kind = ""

    def corners(self) -> list:
        """Values that span the distribution (its bounds, or every choice): what :func:`check_space` tries."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """The YAML/JSON form: ``{kind: arguments}`` (:func:`parse_space` reads it back)."""
        raise NotImplementedError

    def __str__(self) -> str:
        (kind, args), = self.to_dict().items()
        return f"{kind}({json.dumps(args)[1:-1] if isinstance(args, list) else json.dumps(args)})"


def _number(value: Any, what: str, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{what} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return value


def _range(kind: str, low, high, integer: bool = False) -> tuple:
    low = _number(low, f"{kind}: low", integer)
    high = _number(high, f"{kind}: high", integer)
    if low >= high:
        raise ConfigError(f"{kind}({low}, {high}): low must be below high")
    return low, high


@dataclass(frozen=True)
class Uniform(Distribution):
    """Floats between ``low`` and ``high`` (on a grid of ``step`` from ``low`` when given)."""

    low: float
    high: float
    step: float | None = None
    kind = "uniform"

    def __post_init__(self):
        low, high = _range(self.kind, self.low, self.high)
        object.__setattr__(self, "low", float(low))
        object.__setattr__(self, "high", float(high))
        if self.step is not None:
            step = _number(self.step, "uniform: step")
            if not 0 < step <= high - low:
                raise ConfigError(f"uniform: step must be in (0, high - low], got {step}")
            object.__setattr__(self, "step", float(step))

    def corners(self) -> list:
        return [self.low, self.high]

    def to_dict(self) -> dict:
        if self.step is None:
            return {self.kind: [self.low, self.high]}
        return {self.kind: {"low": self.low, "high": self.high, "step": self.step}}


@dataclass(frozen=True)
class LogUniform(Distribution):
    """Floats between ``low`` and ``high``, uniform in log space (learning rates, weight decays)."""

    low: float
    high: float
    kind = "loguniform"

    def __post_init__(self):
        low, high = _range(self.kind, self.low, self.high)
        if low <= 0:
            raise ConfigError(f"loguniform({low}, {high}): low must be positive (it is uniform in log space); use "
                              "uniform for ranges that include 0")
        object.__setattr__(self, "low", float(low))
        object.__setattr__(self, "high", float(high))

    def corners(self) -> list:
        return [self.low, self.high]

    def to_dict(self) -> dict:
        return {self.kind: [self.low, self.high]}


@dataclass(frozen=True)
class IntRange(Distribution):
    """Integers from ``low`` to ``high`` inclusive, every ``step``; ``log=True``: uniform in log space."""

    low: int
    high: int
    step: int = 1
    log: bool = False
    kind = "int"

    def __post_init__(self):
        low, high = _range(self.kind, self.low, self.high, integer=True)
        step = _number(self.step, "int: step", integer=True)
        if step < 1:
            raise ConfigError(f"int: step must be 1 or more, got {step}")
        if not isinstance(self.log, bool):
            raise ConfigError(f"int: log must be true or false, got {self.log!r}")
        if self.log and (low < 1 or step != 1):
            raise ConfigError(f"int({low}, {high}, log=true): log needs low >= 1 and step 1")

    def corners(self) -> list:
        return [self.low, self.high]

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def to_dict(self) -> dict:
        if self.step == 1 and not self.log:
            return {self.kind: [self.low, self.high]}
        return {self.kind: {"low": self.low, "high": self.high, "step": self.step, "log": self.log}}


@dataclass(frozen=True)
class Choice(Distribution):
    """One of ``values`` (any config values: numbers, strings, None, lists such as ``freeze`` patterns)."""

    values: tuple
    kind = "choice"

    def __post_init__(self):
        if isinstance(self.values, (str, bytes, Mapping)) or not isinstance(self.values, (list, tuple)):
            raise ConfigError(f"choice needs a list of values, got {self.values!r:.100}")
        if not self.values:
            raise ConfigError("choice needs at least one value")
        labels = [label(v) for v in self.values]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"choice lists a value twice: {[json.loads(x) for x in labels]}")
        object.__setattr__(self, "values", tuple(self.values))

    def corners(self) -> list:
        return list(self.values)

    def to_dict(self) -> dict:
        return {self.kind: list(self.values)}


def label(value: Any) -> str:
    """A choice's value as JSON text (how Optuna stores choices that are not plain numbers or strings)."""
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:
        raise ConfigError(f"choice values must be JSON values (numbers, strings, booleans, None, lists, dicts), "
                          f"got {value!r:.100}") from None


# -- constructors --------------------------------------------------------------------------------
def uniform(low: float, high: float, step: float | None = None) -> Uniform:
    """Floats between ``low`` and ``high`` (``step``: on a grid from ``low``)."""
    return Uniform(low, high, step)


def loguniform(low: float, high: float) -> LogUniform:
    """Floats between ``low`` > 0 and ``high``, uniform in log space."""
    return LogUniform(low, high)


def integer(low: int, high: int, step: int = 1, log: bool = False) -> IntRange:
    """Integers ``low`` .. ``high`` inclusive (``{int: [low, high]}`` in YAML)."""
    return IntRange(low, high, step, log)


def choice(values) -> Choice:
    """One of ``values``."""
    return Choice(tuple(values) if isinstance(values, list) else values)


_BUILDERS = {"uniform": (Uniform, ("low", "high", "step")), "loguniform": (LogUniform, ("low", "high")),
             "int": (IntRange, ("low", "high", "step", "log")), "integer": (IntRange, ("low", "high", "step", "log"))}


def parse_distribution(spec: Any, path: str = "") -> Distribution:
    """A distribution from its Python object or its YAML/JSON form ``{kind: [args] | {name: value}}``."""
    where = f"search space: {path}: " if path else "search space: "
    if isinstance(spec, Distribution):
        return spec
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(f"{where}expected one distribution such as {{loguniform: [1e-4, 0.1]}}, "
                          f"{{uniform: [0, 1]}}, {{int: [1, 5]}} or {{choice: [a, b]}}, got {spec!r:.100} (fixed "
                          "values belong in the recipe or --set)")
    (kind, args), = spec.items()
    if kind not in KINDS and kind != "integer":
        raise ConfigError(f"{where}unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    try:
        if kind == "choice":
            return Choice(args)
        cls, names = _BUILDERS[kind]
        if isinstance(args, Mapping):
            unknown = sorted(set(map(str, args)) - set(names))
            if unknown or not {"low", "high"} <= set(args):
                raise ConfigError(f"{kind} takes {', '.join(names)} (low and high required), got "
                                  f"{sorted(map(str, args))}")
            return cls(**args)
        if not isinstance(args, (list, tuple)) or not 2 <= len(args) <= len(names):
            raise ConfigError(f"{kind} takes [low, high], got {args!r:.100}")
        return cls(*args)
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None


def parse_space(space: Mapping) -> dict[str, Distribution]:
    """``{path: distribution}`` from Python objects or the YAML/JSON form; a ConfigError names a bad entry."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"a search space maps config paths to distributions, e.g. "
                          f"{{'trainer.optimizer_options.lr': loguniform(1e-4, 0.1)}}; got {space!r:.100}")
    out = {}
    for path, spec in space.items():
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            raise ConfigError(f"search space: paths are dotted strings like 'trainer.optimizer_options.lr' or "
                              f"'1.trainer.freeze', got {path!r}")
        out[path] = parse_distribution(spec, path)
    return out


def space_to_dict(space: Mapping[str, Distribution]) -> dict:
    """The YAML/JSON form of a parsed space."""
    return {path: dist.to_dict() for path, dist in space.items()}


def check_space(experiment, space: Mapping[str, Distribution], result_key) -> None:
    """Every path can take its distribution's corner values, and changes the result the search compares.

    ``experiment``: an Experiment or TransferExperiment; ``result_key(exp)``: the key of the result a trial is scored
    on (its last step's). A path the configs refuse (unknown field, a value out of range) is a ConfigError naming
    it; so is a path that is no part of that key (a run field such as ``trainer.verbose``): every trial would be
    the same result.
    """
    for path, dist in space.items():
        keys = []
        for value in dist.corners():
            try:
                keys.append(json.dumps(result_key(experiment.replace(**{path: value})), sort_keys=True, default=str))
            except ConfigError as err:
                raise ConfigError(f"search space: {path} = {value!r:.60}: {err}") from None
        if len(set(keys)) == 1 and len(keys) > 1:
            raise ConfigError(f"search space: {path} does not change the key of the result the search compares "
                              "(it is a run field, such as progress bars or checkpoint cadence): every trial would "
                              "be the same result; search fields that are part of the key")


__all__ = ["Choice", "Distribution", "IntRange", "KINDS", "LogUniform", "PRUNERS", "SAMPLERS", "Uniform", "check_space",
           "choice", "integer", "label", "loguniform", "parse_distribution", "parse_space", "space_to_dict", "uniform"]
