"""How configs and experiments reach the tables although the core may not import the store.

``cfg.add_to_table()`` and ``experiment.add_to_table()`` hand themselves to the writer set here. The composition
root, ``nntransfer/__init__.py`` (above every layer), sets one that checks and inserts through
:func:`nntransfer.orchestration.fill.add_to_table`, importing it on first use.
"""
from __future__ import annotations

from typing import Any, Callable

_writer: Callable[[Any], Any] | None = None


def set_table_writer(writer: Callable[[Any], Any]) -> None:
    global _writer
    _writer = writer


def add_to_table(obj: Any) -> Any:
    if _writer is None:
        raise RuntimeError("no table writer is set: nntransfer/__init__.py sets one when the package is imported")
    return _writer(obj)


__all__ = ["add_to_table", "set_table_writer"]
