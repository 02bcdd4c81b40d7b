"""Config classes: every experiment setting with defaults, validation and a DataJoint key."""
from ..core.config import BaseConfig, field, from_jsonable, to_jsonable
from ..core.registry import resolve_import_path
from ..errors import ConfigError
from .dataset import DatasetConfig, ImageDatasetConfig
from .model import ModelConfig
from .neural import NeuralDatasetConfig, NeuralModelConfig
from .trainer import TrainerConfig

__all__ = [
    "BaseConfig",
    "ConfigError",
    "DatasetConfig",
    "ImageDatasetConfig",
    "ModelConfig",
    "NeuralDatasetConfig",
    "NeuralModelConfig",
    "TrainerConfig",
    "field",
    "from_jsonable",
    "resolve_import_path",
    "to_jsonable",
]
