"""The model registry and what builders learn from the data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..configs.registries import MODELS

# MODELS: name -> builder(info: DataInfo, cfg: ModelConfig) -> nn.Module; families ("torchvision.<name>") get the
# name first. The built-in names are declared in nntransfer.configs.registries.


def register_model(*names: str):
    """Register a builder ``fn(info: DataInfo, cfg: ModelConfig) -> nn.Module`` under one or more names."""
    return MODELS.register(*names)


def register_model_family(prefix: str, members=None):
    """Register ``fn(name, info, cfg)`` for every ``type`` that starts with ``prefix`` (e.g. ``"torchvision."``);
    ``members()`` lists the names it serves."""
    return MODELS.register_family(prefix, members)


def resolve(model_type: str) -> Callable:
    """The builder ``fn(info, cfg)`` for ``model_type`` (a registered name, a family member or an import path)."""
    return MODELS.get(model_type)


@dataclass(frozen=True)
class DataInfo:
    channels: int
    height: int
    width: int
    num_classes: int


def data_info(dataloaders: dict) -> DataInfo:
    """Input shape from one training example (or batch); classes from the dataset's ``num_classes`` or labels."""
    loader = next(iter(dataloaders["train"].values()))
    dataset = getattr(loader, "dataset", None)
    try:  # one item: no worker start-up, no shuffling, no augmentation of a whole batch
        image, target = dataset[0][:2]
        channels, height, width = torch.as_tensor(image).shape[-3:]
        targets = torch.as_tensor([target])
    except (TypeError, IndexError, ValueError, KeyError):
        inputs, targets = next(iter(loader))[:2]
        _, channels, height, width = inputs.shape
    num_classes = getattr(dataset, "num_classes", None)
    if num_classes is None:
        labels = getattr(dataset, "labels", None)
        if labels is None and hasattr(dataset, "tensors"):
            labels = dataset.tensors[1]
        num_classes = int(torch.as_tensor(labels if labels is not None else targets).max()) + 1
    return DataInfo(int(channels), int(height), int(width), int(num_classes))
