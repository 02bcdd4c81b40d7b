"""The trainer (nnfabrik signature) and its main-loop modules."""
from .checkpointing import (BackgroundWriter, CheckpointStore, CheckpointWriteFailed, DirectoryCheckpointStore,
                            MemoryCheckpointStore)
from .hooks import Hooks
from .interrupt import StopToken, TrainingInterrupted, request_stop, stop_requested
from .losses import LOSSES, register_loss
from .metrics import METRICS, Metric, register_metric
from .modules import (MODULES, CancelBatch, CancelEpoch, CapturingModule, MainLoopModule, Option, module_class,
                      register_module)
from .modules.base import check_conventions, check_module_options
from .progress import Progress
from .tracking import Tracker
from .trainer import Trainer, TrainingDiverged, TrainingOutOfMemory, trainer

__all__ = [
    "BackgroundWriter",
    "CancelBatch",
    "CancelEpoch",
    "CapturingModule",
    "CheckpointStore",
    "CheckpointWriteFailed",
    "DirectoryCheckpointStore",
    "Hooks",
    "LOSSES",
    "METRICS",
    "MODULES",
    "MainLoopModule",
    "MemoryCheckpointStore",
    "Metric",
    "Option",
    "Progress",
    "StopToken",
    "Tracker",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingOutOfMemory",
    "check_conventions",
    "check_module_options",
    "module_class",
    "register_loss",
    "register_metric",
    "register_module",
    "request_stop",
    "stop_requested",
    "trainer",
]
