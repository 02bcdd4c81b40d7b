"""Where a model is and what to call that device: the one place the trainer, transfer data and provenance ask."""
from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters (or buffers) are; the CPU for a model without either."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def device_label(device: torch.device) -> str:
    """``"cpu"``, or ``"cuda:1 (NVIDIA H100 80GB HBM3)"``: the device with its GPU's name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def takes_data_key(model: nn.Module) -> bool:
    """Whether the model follows neuralpredictors' convention for several sessions: ``forward(x, data_key=...)``."""
    import inspect

    try:
        return "data_key" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


__all__ = ["device_label", "model_device", "takes_data_key"]
