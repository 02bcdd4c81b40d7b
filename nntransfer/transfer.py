"""Handing results from one transfer step to the next: parameters and generated data."""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def load_transferred_state(model: nn.Module, state: dict, strict: bool = True) -> list[str]:
    """Load the previous step's parameters into ``model``.

    ``strict=True`` requires identical names and shapes. ``strict=False`` loads every parameter whose
    name and shape match and keeps the fresh initialisation of the rest (e.g. a new classifier head);
    returns the names that were not loaded.
    """
    if strict:
        model.load_state_dict(state, strict=True)
        return []
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    model.load_state_dict(usable, strict=False)
    if skipped:
        logger.info("partial parameter transfer: kept fresh %s", ", ".join(skipped))
    return skipped


@torch.no_grad()
def generate_transfer_data(model: nn.Module, dataloaders: dict, device: str | torch.device = "cpu") -> dict:
    """Logits of the trained model for every training example, in the train split's canonical order.

    Returns ``{"train": {"logits": array[N, ...]}}`` for a single task, ``{"train": {"<task>/logits": ...}}``
    with several; later steps' dataset loaders receive it as ``transfer_data``.
    """
    from .dataset import unshuffled

    was_training = model.training
    model.eval()
    tasks = dataloaders["train"]
    out = {}
    for task, loader in tasks.items():
        chunks = [model(batch[0].to(device)).float().cpu().numpy() for batch in unshuffled(loader)]
        name = "logits" if len(tasks) == 1 else f"{task}/logits"
        out[name] = np.concatenate(chunks)
    model.train(was_training)
    return {"train": out}
