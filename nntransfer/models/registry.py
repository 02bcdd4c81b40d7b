"""The model registry and what builders learn from the data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..configs.errors import ConfigError

# name -> builder(info: DataInfo, cfg: ModelConfig) -> nn.Module
MODELS: dict[str, Callable] = {}
# prefix -> builder(name_after_prefix, info, cfg): families named at run time, e.g. "torchvision.<name>"
MODEL_FAMILIES: dict[str, Callable] = {}


def register_model(*names: str):
    """Register a builder ``fn(info: DataInfo, cfg: ModelConfig) -> nn.Module`` under one or more names."""

    def decorate(fn):
        for name in names:
            MODELS[name] = fn
        return fn

    return decorate


def register_model_family(prefix: str):
    """Register ``fn(name, info, cfg)`` for every ``type`` that starts with ``prefix`` (e.g. ``"torchvision."``)."""

    def decorate(fn):
        MODEL_FAMILIES[prefix] = fn
        return fn

    return decorate


def resolve(model_type: str) -> Callable:
    """The builder ``fn(info, cfg)`` for ``model_type``."""
    if model_type in MODELS:
        return MODELS[model_type]
    for prefix, family in MODEL_FAMILIES.items():
        if model_type.startswith(prefix):
            return lambda info, cfg: family(model_type[len(prefix):], info, cfg)
    families = ", ".join(f"{p}<name>" for p in MODEL_FAMILIES)
    raise ConfigError(f"unknown model type {model_type!r}; registered: {', '.join(sorted(MODELS))}, or {families}. "
                      "Add one with @register_model('name') (see docs/datasets_and_models.md)")


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
