"""nntransfer: define transfer-learning experiments in a few lines, record every run in DataJoint.

Importing this package never connects to a database; tables bind on first use.
"""
import importlib
import warnings

# DataJoint warns on import when no datajoint.json exists (the normal case with the embedded database)
# and about its own deprecated migrate module; neither is actionable for nntransfer users.
warnings.filterwarnings("ignore", message="No datajoint.json found")
warnings.filterwarnings("ignore", message="datajoint.migrate is deprecated", category=DeprecationWarning)

__version__ = "0.2.0"

_LAZY = {
    "Experiment": "nntransfer.core.experiment",
    "TransferExperiment": "nntransfer.core.experiment",
    "Description": "nntransfer.core.experiment",
    "run": "nntransfer.orchestration",
}

__all__ = ["Description", "Experiment", "TransferExperiment", "run", "__version__"]


def __getattr__(name):
    # Lazy so that `import nntransfer` stays cheap and offline.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nntransfer' has no attribute {name!r}")
