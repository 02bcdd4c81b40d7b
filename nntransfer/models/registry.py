"""The model registry and what builders learn from the data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

MODELS: dict[str, Callable] = {}


def register_model(*names: str):
    """Register a builder ``fn(info: DataInfo, cfg: ModelConfig) -> nn.Module`` under one or more names."""

    def decorate(fn):
        for name in names:
            MODELS[name] = fn
        return fn

    return decorate


@dataclass(frozen=True)
class DataInfo:
    channels: int
    height: int
    width: int
    num_classes: int


def data_info(dataloaders: dict) -> DataInfo:
    """Input shape from one training batch; classes from the dataset (``num_classes``) or its labels."""
    loader = next(iter(dataloaders["train"].values()))
    inputs, targets = next(iter(loader))[:2]
    _, channels, height, width = inputs.shape
    dataset = getattr(loader, "dataset", None)
    num_classes = getattr(dataset, "num_classes", None)
    if num_classes is None:
        labels = getattr(dataset, "labels", None)
        if labels is None and hasattr(dataset, "tensors"):
            labels = dataset.tensors[1]
        num_classes = int(torch.as_tensor(labels if labels is not None else targets).max()) + 1
    return DataInfo(int(channels), int(height), int(width), int(num_classes))
