"""nnfabrik's table layout (Fabrikant, Seed, Dataset, Model, Trainer) declared on DataJoint 2.

``nnfabrik.main`` does not import on DataJoint 2, so the same tables (same names, keys and
attributes) are declared here. The configs are stored as DataJoint blobs (plain dicts, no pickle).
"""
from __future__ import annotations

import datajoint as dj

from ..errors import ConfigError
from .schema import schema


@schema
class Fabrikant(dj.Manual):
    definition = """
    fabrikant_name: varchar(32)       # name of the contributor that added this entry
    ---
    full_name="": varchar(128)        # full name of the person
    email="": varchar(64)             # e-mail address
    affiliation="": varchar(32)       # contributor's affiliation
    dj_username: varchar(64)          # DataJoint username
    """

    def add_entry(self, name: str, email: str = "", affiliation: str = "", full_name: str = "", dj_username: str | None = None):
        self.insert1(
            dict(fabrikant_name=name, email=email, affiliation=affiliation, full_name=full_name,
                 dj_username=dj_username or name),
            skip_duplicates=True,
        )
        return {"fabrikant_name": name}

    @classmethod
    def get_current_user(cls) -> str:
        """The current user's fabrikant name, registered automatically when missing."""
        from .db import user_name

        name = user_name()[:32]
        cls().add_entry(name)
        return name


@schema
class Seed(dj.Manual):
    definition = """
    seed: int32     # random seed passed to the dataset, model and trainer builders
    """


class _ConfigTable:
    """Shared behaviour of Dataset / Model / Trainer: inserting a config under its key, reading ``fn`` + config."""

    config_name: str = ""

    @property
    def fn_config(self):
        name = self.config_name
        fn, config = self.fetch1(f"{name}_fn", f"{name}_config")
        return fn, dict(config)

    def _insert_config(self, key: dict, config: dict, comment: str, hashed: dict) -> dict:
        """Insert unless present. ``hashed`` is what the key hashes: a stored row must agree on it."""
        name = self.config_name
        existing = self & key
        if existing:
            stored = _plain(existing.fetch1(f"{name}_config"))
            if any(k not in stored or stored[k] != v for k, v in _plain(hashed).items()):
                raise ConfigError(
                    f"{name} key {key} already holds a different config (hash collision: make_hash hashes "
                    f"values as strings). Stored: {stored}; new: {config}. Change a field's type or value."
                )
            return key
        row = dict(key, **{
            f"{name}_config": config,
            f"{name}_fabrikant": Fabrikant.get_current_user(),
            f"{name}_comment": comment,
        })
        self.insert1(row, skip_duplicates=True)  # another process may have inserted it meanwhile
        return key


def _plain(value):
    """Compare configs as stored by the blob codec (tuples come back as tuples, numpy scalars as numbers)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _config_definition(name: str, what: str) -> str:
    """nnfabrik's layout of the Dataset, Model and Trainer tables."""
    return f"""
    {name}_fn:                     varchar(128)   # import path of the {what}
    {name}_hash:                   varchar(64)    # hash of the configuration
    ---
    {name}_config:                 <blob>         # keyword arguments of the {what}
    -> Fabrikant.proj({name}_fabrikant='fabrikant_name')
    {name}_comment="":             varchar(256)   # short description
    {name}_ts=CURRENT_TIMESTAMP:   datetime       # time of insertion
    """


@schema
class Dataset(_ConfigTable, dj.Manual):
    config_name = "dataset"
    definition = _config_definition("dataset", "dataset loader function")


@schema
class Model(_ConfigTable, dj.Manual):
    config_name = "model"
    definition = _config_definition("model", "model builder")


@schema
class Trainer(_ConfigTable, dj.Manual):
    config_name = "trainer"
    definition = _config_definition("trainer", "trainer function")


CONFIG_TABLES = {"dataset": Dataset, "model": Model, "trainer": Trainer}


def insert_config(cfg) -> dict:
    """Insert a (checked) config object into its table (idempotent, safe under concurrency); returns its key, which
    is ``cfg.get_key()``: the one key function for every path that writes a config row."""
    table = CONFIG_TABLES.get(cfg.config_name)
    if table is None:
        raise ConfigError(f"{type(cfg).__name__}.config_name={cfg.config_name!r} is not dataset, model or trainer")
    if len(cfg.comment) > 256:
        raise ConfigError(f"{type(cfg).__name__}.comment has {len(cfg.comment)} characters; at most 256 fit")
    config = cfg.to_dict()
    comment = config.pop("comment")
    return table()._insert_config(cfg.get_key(), config, comment, cfg.hashed_dict())
