"""The trainer (nnfabrik signature) and its main-loop modules."""
from .checkpointing import CheckpointStore, DirectoryCheckpointStore, MemoryCheckpointStore
from .modules import CancelBatch, CancelEpoch, MODULES, MainLoopModule, module_class, register_module
from .losses import LOSSES, register_loss
from .tracking import Tracker
from .trainer import Trainer, TrainingDiverged, trainer

__all__ = [
    "CancelBatch",
    "CancelEpoch",
    "CheckpointStore",
    "DirectoryCheckpointStore",
    "LOSSES",
    "MODULES",
    "MainLoopModule",
    "MemoryCheckpointStore",
    "Tracker",
    "Trainer",
    "TrainingDiverged",
    "module_class",
    "register_loss",
    "register_module",
    "trainer",
]
