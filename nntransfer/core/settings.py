"""Settings read from the environment that several layers share."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data directory: ``$NNTRANSFER_HOME`` or ``~/.nntransfer`` (database, store, TensorBoard runs, logs)."""
    return Path(os.environ.get("NNTRANSFER_HOME", "~/.nntransfer")).expanduser().resolve()


__all__ = ["home"]
