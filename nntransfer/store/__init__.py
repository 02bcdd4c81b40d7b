"""The store: the database (embedded PostgreSQL or a configured server), the DataJoint tables (nnfabrik layout)
that record experiments and their results, the codec of stored states, job reservation and store clean-up.

Importing this package does not connect to a database. Accessing a table name
(``from nntransfer.store import TrainedModel``, or the public path ``nntransfer.tables``) connects and declares
the tables once.
"""
import importlib

from . import schema as _schema

TABLE_NAMES = {
    "Fabrikant": "nnfabrik",
    "Seed": "nnfabrik",
    "Dataset": "nnfabrik",
    "Model": "nnfabrik",
    "Trainer": "nnfabrik",
    "TrainedModel": "trained_model",
    "Checkpoint": "trained_model",
    "TransferredTrainedModel": "transfer",
    "TrainedModelTransferRecipe": "transfer",
    "DatasetTransferRecipe": "transfer",
    "ModelTransferRecipe": "transfer",
    "TrainerTransferRecipe": "transfer",
    "TransferData": "transfer",
    "Worker": "jobs",
    "JobAttempt": "jobs",
}

__all__ = sorted(TABLE_NAMES) + ["TABLE_NAMES", "bind", "insert_config", "table"]


def _load_all():
    # every table class must be registered with the schema before it is activated
    for module in sorted(set(TABLE_NAMES.values())):
        importlib.import_module(f"{__name__}.{module}")


def bind():
    """Connect and declare every table (idempotent). Table modules must all be imported first."""
    _load_all()
    return _schema.bind()


def insert_config(cfg):
    """Insert a config object into its table (see ``BaseConfig.add_to_table``)."""
    table(type(cfg).config_name.capitalize())
    return importlib.import_module(f"{__name__}.nnfabrik").insert_config(cfg)


def table(name: str):
    """The bound table class called ``name``."""
    if name not in TABLE_NAMES:
        raise AttributeError(f"nntransfer.store has no table {name!r}; tables: {', '.join(sorted(TABLE_NAMES))}")
    bind()
    return getattr(importlib.import_module(f"{__name__}.{TABLE_NAMES[name]}"), name)


def __getattr__(name):
    if name in TABLE_NAMES:
        return table(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
