"""Keys: the one function that turns a config into its DataJoint key, and the attributes that name a result.

``config_key(config_name, fn, hashed)`` is ``{"<name>_fn": fn, "<name>_hash": make_hash(hash_form(hashed))}``
with nnfabrik's ``make_hash``. Every path that writes a config row uses it (through ``BaseConfig.get_key``), so
the same config has the same key whichever way it reaches the tables.
"""
from __future__ import annotations

import json
from typing import Any

from .compat import make_hash

#: the attributes of a TrainedModel / TransferredTrainedModel key, in table order
KEY_ATTRIBUTES = ("transfer_step", "model_fn", "model_hash", "dataset_fn", "dataset_hash", "trainer_fn",
                  "trainer_hash", "seed", "collapsed_history")


def config_key(config_name: str, fn: str, hashed: dict) -> dict[str, str]:
    """The key of a config row: its builder's import path and the hash of its hashed fields."""
    return {f"{config_name}_fn": fn, f"{config_name}_hash": make_hash(hash_form(hashed))}


def key_ident(key: dict) -> tuple:
    """A hashable identity of a result key (its key attributes, in order), whatever else the dict holds."""
    return tuple(key[name] for name in KEY_ATTRIBUTES if name in key)


def _looks_like(text: str) -> bool:
    """Whether ``str(x)`` of a number, bool or None could be this string (``make_hash`` hashes ``str(x)``)."""
    if text in ("True", "False", "None"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def hash_form(value: Any) -> Any:
    """What :func:`config_key` hands to ``make_hash``: the value with every string that reads as a number, a bool or
    None (``"1"``, ``"0.01"``, ``"None"``) — or starts with a double quote — written as a JSON string
    (``'"1"'``), keys included. ``make_hash`` hashes ``str(x)``, so ``"1"`` and ``1`` would otherwise share a
    key; the mapping is one-to-one and leaves every other value (so every other key) unchanged.
    """
    if isinstance(value, str):
        return json.dumps(value) if value.startswith('"') or _looks_like(value.strip()) else value
    if isinstance(value, dict):
        return {hash_form(k) if isinstance(k, str) else k: hash_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hash_form(v) for v in value]
    return value


__all__ = ["KEY_ATTRIBUTES", "config_key", "hash_form", "key_ident", "make_hash"]
