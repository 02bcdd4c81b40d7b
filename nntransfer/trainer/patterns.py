"""``TrainerConfig.freeze`` and ``reset``: which parameters and modules of a model their patterns name.

A pattern is a glob over the dotted names PyTorch gives (``"core.*"``, ``"readout.7"``) or, after ``re:``, a
regular expression (``"re:core\\.[0-2]\\..*"``); both must match the whole name. A pattern that names nothing is a
ConfigError that lists the names there are: the trainer checks when a job starts, and filling the tables checks
before anything trains wherever the model can be built without its data (``nntransfer.models.skeleton``).
"""
from __future__ import annotations

import fnmatch
import re

from torch import nn

from ..errors import ConfigError

#: names listed in full up to this many (a ResNet-152 has 466 parameters)
LISTED = 40


def matches(name: str, pattern: str) -> bool:
    """Glob pattern (``"core.*"``), or a regular expression after ``re:`` (``"re:core\\.[0-2]\\..*"``), full match."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def listing(names: list[str]) -> str:
    """``names`` comma-separated; past :data:`LISTED` the first ones, a count of the rest ("…" only where names are
    left out) and the top-level names, which a glob such as ``"layer4.*"`` starts from."""
    if len(names) <= LISTED:
        return ", ".join(names)
    top = list(dict.fromkeys(name.split(".")[0] for name in names))
    return f"{', '.join(names[:LISTED])}, … ({len(names) - LISTED} more); at the top level: {', '.join(top)}"


def reset_modules(model: nn.Module, pattern: str, model_name: str = "the model") -> list[nn.Module]:
    """The modules ``pattern`` names (the model itself aside); ConfigError if none."""
    names = [name for name, _ in model.named_modules() if name]
    matched = [model.get_submodule(name) for name in names if matches(name, pattern)]
    if not matched:
        raise ConfigError(f"TrainerConfig.reset pattern {pattern!r} matches no module of {model_name}; its modules: "
                          f"{listing(names)}")
    return matched


def frozen_parameters(model: nn.Module, pattern: str, model_name: str = "the model") -> list[nn.Parameter]:
    """The parameters ``pattern`` names; ConfigError if none."""
    named = list(model.named_parameters())
    matched = [p for name, p in named if matches(name, pattern)]
    if not matched:
        raise ConfigError(f"TrainerConfig.freeze pattern {pattern!r} matches no parameter of {model_name}; its "
                          f"parameters: {listing([name for name, _ in named])}")
    return matched


def check_patterns(model: nn.Module, freeze: list[str], reset: list[str], model_name: str = "the model") -> None:
    """ConfigError unless every ``freeze`` pattern names a parameter and every ``reset`` pattern a module, and the
    ``freeze`` patterns leave a parameter to train."""
    for pattern in reset:
        reset_modules(model, pattern, model_name)
    frozen = {id(p) for pattern in freeze for p in frozen_parameters(model, pattern, model_name)}
    if freeze and all(id(p) in frozen for p in model.parameters()):
        raise ConfigError(f"TrainerConfig.freeze patterns {list(freeze)} leave no trainable parameter of {model_name}")


__all__ = ["LISTED", "check_patterns", "frozen_parameters", "listing", "matches", "reset_modules"]
