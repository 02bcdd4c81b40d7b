"""nntransfer: define transfer-learning experiments in a few lines, record every run in DataJoint.

Importing this package never connects to a database; tables bind on first use.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "Experiment": "nntransfer.experiment",
    "TransferExperiment": "nntransfer.experiment",
    "Description": "nntransfer.experiment",
    "run": "nntransfer.recipes",
}

__all__ = ["Description", "Experiment", "TransferExperiment", "run", "__version__"]


def __getattr__(name):
    # Lazy so that `import nntransfer` stays cheap and offline.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nntransfer' has no attribute {name!r}")
