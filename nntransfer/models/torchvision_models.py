"""Any torchvision classification model by name (``type="torchvision.<name>"``); weights only from a local file."""
import os

import torch
import torchvision
from torch import nn

from ..errors import ConfigError
from .registry import register_model_family


def classifiers() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


@register_model_family("torchvision.", members=classifiers)
def build(name: str, info, cfg) -> nn.Module:
    """``torchvision.models.<name>`` with the data's number of classes; ``weights_path``: a local state dict."""
    if info.channels != 3:
        raise ConfigError(f"torchvision.{name} expects 3 input channels, the data has {info.channels}: "
                          "set channels=3 in the dataset config")
    if cfg.weights_path is None:
        model = torchvision.models.get_model(name, weights=None, num_classes=info.num_classes)
        return _with_dropout(model, cfg.dropout)
    if not os.path.isfile(cfg.weights_path):
        raise ConfigError(f"weights_path {os.path.abspath(cfg.weights_path)} does not exist: save a state dict there "
                          f"(e.g. torch.save(torchvision.models.{name}(weights=...).state_dict(), path) on a "
                          "machine with network) or set weights_path=None for random initialisation")
    model = torchvision.models.get_model(name, weights=None)
    state = torch.load(cfg.weights_path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"{cfg.weights_path} does not fit torchvision.{name}: {err}") from None
    _replace_head(model, info.num_classes)
    return _with_dropout(model, cfg.dropout)


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """The classifier: the last ``nn.Linear`` (its parent module, attribute name and the layer)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear classifier to fit to the data's classes")
    name, last = linears[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return parent, name.rpartition(".")[2], last


def _with_dropout(model: nn.Module, p: float) -> nn.Module:
    """``dropout``: put a Dropout in front of the classifier layer (torchvision's own dropouts stay)."""
    if p:
        parent, attr, last = _last_linear(model)
        setattr(parent, attr, nn.Sequential(nn.Dropout(p), last))
    return model


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last linear layer for one with ``num_classes`` outputs (kept if it already fits)."""
    parent, attr, last = _last_linear(model)
    if last.out_features != num_classes:
        setattr(parent, attr, nn.Linear(last.in_features, num_classes))
