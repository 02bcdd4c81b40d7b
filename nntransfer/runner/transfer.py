"""Handing results from one transfer step to the next: parameters and generated data."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..models.devices import model_device, takes_data_key

logger = logging.getLogger(__name__)


def load_transferred_state(model: nn.Module, state: dict, strict: bool = True) -> list[str]:
    """Load the previous step's parameters into ``model``.

    ``strict=True`` requires identical names and shapes. ``strict=False`` loads every parameter whose
    name and shape match and keeps the fresh initialisation of the rest (e.g. a new classifier head);
    returns the names that were not loaded. Either way a transfer that cannot do what it says is a
    ConfigError naming the parameters and the option to use.
    """
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if strict:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        resized = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or resized:
            problems = [f"{what}: {_some(names)}" for what, names in (
                ("missing in the previous step's model", missing), ("only in the previous step's model", unexpected),
                ("different shapes", [f"{k} {tuple(state[k].shape)} -> {tuple(own[k].shape)}" for k in resized]))
                if names]
            raise ConfigError(
                "strict parameter transfer needs the previous step's parameter names and shapes ("
                + "; ".join(problems) + "). Set trainer.transfer_strict=False to load the parameters that match "
                "and keep the fresh initialisation of the rest, trainer.transfer_parameters=False to start from a "
                "fresh initialisation (e.g. to distil the previous step's logits), or use the same model")
        model.load_state_dict(state, strict=True)
        return []
    if not usable:
        raise ConfigError(
            f"transfer_strict=False transferred no parameter: none of this model's parameters ({_some(sorted(own))}) "
            f"matches the previous step's ({_some(sorted(state))}) in name and shape. Use a model that shares "
            "parameters with it, or set trainer.transfer_parameters=False to start from a fresh initialisation")
    skipped = sorted(set(own) - set(usable))
    model.load_state_dict(usable, strict=False)
    if skipped:
        logger.info("partial parameter transfer: kept fresh %s", ", ".join(skipped))
    return skipped


def _some(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


@torch.no_grad()
def generate_transfer_data(model: nn.Module, dataloaders: dict, device: str | torch.device | None = None,
                           layers: Sequence[str] = ()) -> dict:
    """Logits of the trained model for every example it can name, computed on ``device`` (the model's) and
    stored on the CPU; with ``layers``, also those layers' outputs, flattened per example and named by layer
    (``"readout.4": array[N, features]``), e.g. a teacher's representations for RDL.

    For each training task, the training and validation splits (and the test split) whose datasets declare
    ``example_indices`` and ``source_split`` (see :func:`nntransfer.dataset.example_indices`) are run in
    canonical order; rows are grouped by source split::

        {"train": {"logits": array[N, ...], "example_indices": array[N]}, "test": {...}}

    so that a later step, whatever its seed, split or selection, gets each of its examples' own rows. A
    dataset without indices contributes its training split only, indexed by position. With several tasks
    the names are ``"<task>/logits"`` and ``"<task>/example_indices"``.
    """
    from ..dataset import example_indices, unshuffled

    device = model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    tasks = list(dataloaders["train"])
    out: dict[str, dict] = {}
    for task in tasks:
        prefix = "" if len(tasks) == 1 else f"{task}/"
        rows: dict[str, list] = {}  # source split -> [(logits, indices), ...]
        for split in ("train", "validation", "test"):
            loader = dataloaders.get(split, {}).get(task)
            if loader is None:
                continue
            located = example_indices(loader)
            if located is None and split != "train":
                continue  # without indices, only the training split's order is known
            # a model of several sessions (neuralpredictors' convention) is told whose data it sees
            batches = [_outputs(model, batch[0].to(device), layers, task if takes_data_key(model) else None)
                       for batch in unshuffled(loader)]
            if not batches:  # an empty split (e.g. valid_size=0)
                continue
            arrays = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
            source_split, indices = located if located is not None else ("train", np.arange(len(arrays["logits"])))
            rows.setdefault(source_split, []).append((arrays, indices))
        for source_split, parts in rows.items():
            block = out.setdefault(source_split, {})
            for name in parts[0][0]:
                block[f"{prefix}{name}"] = np.concatenate([arrays[name] for arrays, _ in parts])
            block[f"{prefix}example_indices"] = np.concatenate([indices for _, indices in parts]).astype(np.int64)
    model.train(was_training)
    return out


def _outputs(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str],
             data_key: str | None) -> dict[str, np.ndarray]:
    """The logits (and the outputs of ``layers``, flattened per example) of one batch, as float32 arrays; ``data_key``
    names the session for a model of several."""
    def forward():
        return model(inputs) if data_key is None else model(inputs, data_key=data_key)

    if not layers:
        return {"logits": forward().float().cpu().numpy()}
    from ..models.representations import capture

    try:
        with capture(model, list(layers)) as reps:
            logits = forward()
    except KeyError as err:
        raise ConfigError(f"TrainerConfig.transfer_layers: {err.args[0]}") from None
    return {"logits": logits.float().cpu().numpy(),
            **{layer: reps[layer].flatten(1).float().cpu().numpy() for layer in layers}}


__all__ = ["generate_transfer_data", "load_transferred_state"]
