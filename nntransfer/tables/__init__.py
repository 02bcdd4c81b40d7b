"""DataJoint tables (nnfabrik layout) that record experiments and their results.

Importing this package does not connect to a database. Accessing a table name
(``from nntransfer.tables import TrainedModel``) connects and declares the tables once.
"""
import importlib

from . import schema as _schema

_TABLE_MODULES = {
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

__all__ = sorted(_TABLE_MODULES) + ["bind", "insert_config"]


def _load_all():
    # every table class must be registered with the schema before it is activated
    for module in sorted(set(_TABLE_MODULES.values())):
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
    if name not in _TABLE_MODULES:
        raise AttributeError(f"nntransfer.tables has no table {name!r}; tables: {', '.join(sorted(_TABLE_MODULES))}")
    bind()
    return getattr(importlib.import_module(f"{__name__}.{_TABLE_MODULES[name]}"), name)


def __getattr__(name):
    if name in _TABLE_MODULES:
        return table(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
