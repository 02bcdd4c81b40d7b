"""What earlier steps of a transfer chain hand to a step: :class:`Handover`.

The runner builds one per step (in memory, or from the tables) and gives it to the step's dataset loader (the
per-example data), to the model (the parameters to start from) and to trainers that declare a ``handover=``
keyword (nntransfer's does): main-loop modules read it as ``self.handover``. Regularised transfer (L2-SP, EWC,
SI), teachers (RDL, online distillation) and lottery tickets all come through here.

Transfer data is a dict of sections. The per-example ones are named after the source split they are aligned
with (``"train"``, ``"test"``: rows and ``example_indices``, see :mod:`nntransfer.runner.transfer`); the section
``"parameters"`` holds per-parameter data that main-loop modules produced, keyed by the producing module's name::

    {"train": {"logits": ..., "example_indices": ...}, "test": {...},
     "parameters": {"EWC": {"tasks": {"0": {"fisher": {name: array}, "anchor": {name: array}}}}, "SI": {...}}}

Dataset loaders see only the per-example sections; arrays are numpy, on the CPU, as stored.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

#: the section of transfer data with per-parameter data, keyed by the producing module's name
PARAMETERS = "parameters"


@dataclass
class Handover:
    """What earlier steps of a transfer chain give a step.

    * ``model_state``: the previous step's trained parameters this step starts from (None: a fresh
      initialisation, for the first step or with ``transfer_parameters=False``);
    * ``transfer_data``: the data of the nearest earlier step that generated some (``data_transfer=True``):
      per-example sections and the ``"parameters"`` section (see the module docstring);
    * ``transferred``: names of the model's state entries that were loaded from ``model_state`` (matching name
      and shape), filled in when the step's model is built;
    * ``previous_model``: a function that builds the previous step's model with its trained parameters (a teacher),
      None for the first step.
    """

    model_state: dict | None = None
    transfer_data: dict | None = None
    transferred: tuple[str, ...] = ()
    previous_model: Callable[[], nn.Module] | None = None

    @property
    def from_earlier_step(self) -> bool:
        """Whether there is an earlier step (this is not the first step of a chain, nor a plain experiment)."""
        return self.previous_model is not None or self.model_state is not None or self.transfer_data is not None

    def per_example_data(self) -> dict | None:
        """The transfer data a dataset loader gets: the per-example sections (None when there are none)."""
        sections = {name: block for name, block in (self.transfer_data or {}).items() if name != PARAMETERS}
        return sections or None

    def parameter_data(self, producer: str) -> dict:
        """The per-parameter section ``producer`` (a module's name) handed over, or an empty dict."""
        return dict(((self.transfer_data or {}).get(PARAMETERS) or {}).get(producer) or {})

    def parameter_sections(self) -> dict:
        """Every per-parameter section handed over (module name -> its data)."""
        return dict((self.transfer_data or {}).get(PARAMETERS) or {})

    def teacher(self, device: torch.device, who: str) -> nn.Module:
        """The previous step's trained model on ``device``, in eval mode and without gradients; ``who`` (a module
        name) is named in the ConfigError when there is no previous step."""
        if self.previous_model is None:
            raise ConfigError(f"{who} needs a teacher: the model of the previous step of a TransferExperiment. Use it "
                              "in a later step of a TransferExperiment (any transfer_parameters setting)")
        model = self.previous_model()
        return model.to(device).eval().requires_grad_(False)


def teacher_forward(teacher: nn.Module, inputs: torch.Tensor, task_key: str | None):
    """The teacher's outputs for ``inputs`` (models of several tasks get ``data_key=task_key``, neuralpredictors'
    convention, as the trainer calls them)."""
    import inspect

    try:
        takes_key = "data_key" in inspect.signature(teacher.forward).parameters
    except (TypeError, ValueError):
        takes_key = False
    return teacher(inputs, data_key=task_key) if takes_key else teacher(inputs)


def tensors(arrays: dict, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored per-parameter ``arrays`` (name -> numpy array) as tensors shaped, typed and placed like the parameters
    ``like`` (name -> tensor); names ``like`` lacks or whose shapes differ (e.g. a new classifier) are left out."""
    out = {}
    for name, array in arrays.items():
        target = like.get(name)
        if target is not None and tuple(np.shape(array)) == tuple(target.shape):
            # a copy: arrays read from the tables are read-only, and tensors must not share read-only memory
            out[name] = torch.from_numpy(np.array(array)).to(device=target.device, dtype=target.dtype)
    return out


def arrays(tensors_by_name: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-parameter tensors as float32 numpy arrays on the CPU (how transfer data is stored)."""
    return {name: t.detach().float().cpu().numpy() for name, t in tensors_by_name.items()}


def copy_model(model: nn.Module) -> Callable[[], nn.Module]:
    """A ``previous_model`` function for a model held in memory: each call returns an independent copy."""
    return lambda: copy.deepcopy(model)


__all__ = ["Handover", "PARAMETERS", "arrays", "copy_model", "teacher_forward", "tensors"]
