"""The DataJoint tables, under their public import path: ``from nntransfer.tables import TrainedModel``.

They live in :mod:`nntransfer.store`; importing this module connects to nothing, accessing a table binds the
schema (starting the embedded database if needed).
"""
from .store import TABLE_NAMES, bind, table

__all__ = [*TABLE_NAMES, "bind", "table"]


def __getattr__(name):
    if name in TABLE_NAMES:
        return table(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
