"""Config classes: every experiment setting with defaults, validation and a DataJoint key."""
from ..core.config import BaseConfig, field, resolve_import_path, to_jsonable, from_jsonable
from .dataset import DatasetConfig, ImageDatasetConfig
from ..errors import ConfigError
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
