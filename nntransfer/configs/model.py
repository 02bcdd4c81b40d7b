"""Model configs. Builders live in ``nntransfer.models``."""
from __future__ import annotations

from .base import BaseConfig, field


class ModelConfig(BaseConfig):
    """Classification models from the registry in ``nntransfer.models`` (``fn(dataloaders, seed, **config)``)."""

    config_name = "model"
    fn = "nntransfer.models.classification_model_builder"

    type: str = field(default="lenet", help="registered architecture name, e.g. lenet, mlp, resnet18, vgg11")
    dropout: float = 0.0
