"""Model configs. Builders live in ``nntransfer.models``."""
from __future__ import annotations

from typing import Optional

from ..core.config import BaseConfig, field
from .registries import MODELS


class ModelConfig(BaseConfig):
    """Classification models from the registry in ``nntransfer.models`` (``fn(dataloaders, seed, **config)``).

    Input channels, image size and the number of classes are read from the dataloaders.
    """

    config_name = "model"
    fn = "nntransfer.models.classification_model_builder"

    type: str = field(default="lenet", help="lenet | mlp | resnet18..152 | vgg11..19[_bn] | torchvision.<name>")
    dropout: float = field(default=0.0, help="dropout before the classifier layers")
    hidden_sizes: list[int] = field(default=[256, 128], help="mlp: sizes of the hidden layers")
    cifar_stem: bool = field(default=True, help="resnet: 3x3 stem without max-pool (small images)")
    weights_path: Optional[str] = field(default=None, help="torchvision models: local file with pretrained weights")

    def _check_names(self) -> None:
        if self.fn == ModelConfig.fn:  # another builder may read type differently
            MODELS.check_name(self.type)
