"""A model's modules and parameters by name without its data, for checks before anything trains.

The built-in architectures are built on the meta device (no memory, no initialisation, no data) from a nominal data
shape: their names do not depend on the image size, the channels or the number of classes. A neural model gets its
core the same way and one readout per session its dataset config names (readouts are small and built on the CPU:
neuralpredictors initialises them from tensors). Models that only their data can size (custom builders, other
dataset builders) give None: the trainer checks their names when the job starts.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..configs import DatasetConfig, ModelConfig, NeuralModelConfig
from ..configs.registries import CORES, MODELS
from .registry import DataInfo

#: the data shape a classification model is built for here (3 channels: torchvision models take nothing else)
NOMINAL = DataInfo(channels=3, height=32, width=32, num_classes=10)
#: the image shape [C, H, W] a neural core is built for here (1 channel: classifier cores repeat it)
NOMINAL_IMAGE = (1, 64, 64)


def _builtin(model_type: str) -> bool:
    return model_type in MODELS.builtins or model_type.startswith(tuple(MODELS.builtin_families))


def skeleton(model: ModelConfig, dataset: DatasetConfig) -> nn.Module | None:
    """The model ``model`` builds, with its names but without data (None where only the data can size it)."""
    if type(model).fn == ModelConfig.fn and model.fn == ModelConfig.fn and _builtin(model.type):
        with torch.device("meta"):
            return MODELS.get(model.type)(NOMINAL, model.replace(weights_path=None))
    if isinstance(model, NeuralModelConfig) and model.fn == NeuralModelConfig.fn:
        sessions = getattr(dataset, "sessions", None)
        if not sessions or not (model.type in CORES.builtins or _builtin(model.type)):
            return None
        return _neural_skeleton(model, sessions)
    return None


def _neural_skeleton(cfg: NeuralModelConfig, sessions: list[str]) -> nn.Module:
    from .neural import NeuralModel, SessionInfo, core_layers, multi_readout

    with torch.device("meta"):
        core, channels = core_layers(cfg, NOMINAL_IMAGE)
        probe = NeuralModel(core, nn.ModuleDict(), channels)
        shape = tuple(probe.core_forward(torch.zeros(1, *NOMINAL_IMAGE)).shape[1:])
    info = {session: SessionInfo(1, NOMINAL_IMAGE, np.ones(1)) for session in sessions}
    readout = multi_readout(cfg, {session: shape for session in sessions}, info)
    return NeuralModel(core, readout, channels, cfg.elu_offset)


__all__ = ["NOMINAL", "NOMINAL_IMAGE", "skeleton"]
