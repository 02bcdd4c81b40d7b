"""nntransfer: define transfer-learning experiments in a few lines, record every run in DataJoint.

Importing this package never connects to a database; tables bind on first use.
"""
import importlib
import warnings

# DataJoint warns on import when no datajoint.json exists (the normal case with the embedded database)
# and about its own deprecated migrate module; neither is actionable for nntransfer users.
warnings.filterwarnings("ignore", message="No datajoint.json found")
warnings.filterwarnings("ignore", message="datajoint.migrate is deprecated", category=DeprecationWarning)

from .core import persistence  # noqa: E402  (cheap: no torch, no DataJoint)
from .core.version import VERSION as __version__  # noqa: E402

_LAZY = {
    "Experiment": "nntransfer.configs.experiment",
    "TransferExperiment": "nntransfer.configs.experiment",
    "Description": "nntransfer.configs.experiment",
    "run": "nntransfer.api",
    "train": "nntransfer.api",
    "load_recipe": "nntransfer.api",
    "apply_overrides": "nntransfer.api",
    "search": "nntransfer.api",
    "search_frame": "nntransfer.analysis.search",
    "uniform": "nntransfer.configs.space",
    "loguniform": "nntransfer.configs.space",
    "integer": "nntransfer.configs.space",
    "choice": "nntransfer.configs.space",
}

__all__ = ["Description", "Experiment", "TransferExperiment", "__version__", "apply_overrides", "choice", "integer",
           "load_recipe", "loguniform", "run", "search", "search_frame", "train", "uniform"]


def _add_to_table(obj):
    # The composition root wires the core's table writer to the layer that fills tables (imported on first use).
    from .orchestration.fill import add_to_table

    return add_to_table(obj)


persistence.set_table_writer(_add_to_table)


def __getattr__(name):
    # Lazy so that `import nntransfer` stays cheap and offline.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nntransfer' has no attribute {name!r}")
