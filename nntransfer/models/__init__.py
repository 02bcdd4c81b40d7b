"""Model builders (nnfabrik convention: ``fn(dataloaders, seed, **config) -> nn.Module``).

Architectures register by name; adding one is one file (registering its builder with ``@register_model``) plus
one line in ``nntransfer.configs.registries``, which imports the file when the name is first used.
"""
from __future__ import annotations

import torch
from torch import nn

from ..configs.model import ModelConfig
from .registry import MODELS, DataInfo, data_info, register_model, register_model_family, resolve
from .representations import capture, layer_names


def classification_model_builder(dataloaders: dict, seed: int, **config) -> nn.Module:
    """Build ``config["type"]`` for the data in ``dataloaders`` with seeded initialisation."""
    config.pop("comment", None)
    cfg = ModelConfig(**config)
    info = data_info(dataloaders)
    build = resolve(cfg.type)
    torch.manual_seed(seed)  # the same seed gives the same initial weights
    return build(info, cfg)


__all__ = ["MODELS", "DataInfo", "capture", "classification_model_builder", "data_info",
           "layer_names", "register_model", "register_model_family", "resolve"]
