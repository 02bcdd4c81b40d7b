"""Model builders (nnfabrik convention: ``fn(dataloaders, seed, **config) -> nn.Module``).

Architectures register by name; adding one is one file plus one import line below.
"""
from __future__ import annotations

import torch
from torch import nn

from ..configs.errors import ConfigError
from ..configs.model import ModelConfig
from .registry import MODELS, DataInfo, data_info, register_model
from .representations import capture, layer_names

# One line per architecture family (importing a module registers its builders).
from . import lenet, mlp, resnet, torchvision_models, vgg  # noqa: E402,F401


def classification_model_builder(dataloaders: dict, seed: int, **config) -> nn.Module:
    """Build ``config["type"]`` for the data in ``dataloaders`` with seeded initialisation."""
    config.pop("comment", None)
    cfg = ModelConfig(**config)
    info = data_info(dataloaders)
    torch.manual_seed(seed)
    if cfg.type.startswith("torchvision."):
        return torchvision_models.build(cfg.type.removeprefix("torchvision."), info, cfg)
    if cfg.type not in MODELS:
        raise ConfigError(f"unknown model type {cfg.type!r}; registered: {', '.join(sorted(MODELS))}, "
                          "or torchvision.<name>")
    return MODELS[cfg.type](info, cfg)


__all__ = ["MODELS", "DataInfo", "capture", "classification_model_builder", "data_info", "layer_names",
           "register_model"]
