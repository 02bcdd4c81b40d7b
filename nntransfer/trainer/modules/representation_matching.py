"""RepresentationMatching: pull the representation of a noisy input towards that of the clean input."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.representations import capture
from .base import MainLoopModule, register_module


@register_module("RepresentationMatching")
class RepresentationMatching(MainLoopModule):
    """Options (``module_options["RepresentationMatching"]``):

    * ``layer``: name of the layer whose output is matched (``model.named_modules()`` name);
    * ``weight``: factor of the extra loss term (default 1.0);
    * ``criterion``: ``"mse"`` (default) or ``"cosine"``;
    * ``std``: noise std used when no NoiseAugmentation ran before this module (default 0.1).

    During training, clean and noisy inputs run as one batch; the extra loss compares the noisy
    half's representation with the clean half's (no gradient through the clean one), and the noisy
    half's outputs go on to the main loss. The term of every training batch is logged as
    ``representation_matching`` at the end of the epoch.
    """


    def __init__(self, model, config, device, seed):
        super().__init__(model, config, device, seed)
        if "layer" not in self.options:
            raise ValueError("RepresentationMatching needs module_options['RepresentationMatching']['layer']")
        self._capture = None
        self._reps = None
        self._task = None
        self._terms: list = []  # (task, term) of this pass, logged at its end (no per-batch synchronisation)

    def pre_epoch(self, model, mode, **options):
        super().pre_epoch(model, mode, **options)
        self._terms = []

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self._capture is not None:  # the previous batch was cancelled before post_forward
            self._capture.__exit__(None, None, None)
            self._capture = None
        if self.mode != "Training":
            return model, inputs
        clean = shared_memory.get("clean_inputs")
        if clean is None:
            clean = inputs
            inputs = inputs + torch.randn_like(inputs) * self.option("std", 0.1)
        self._task = task_key
        self._capture = capture(self.model, [self.options["layer"]])
        self._reps = self._capture.__enter__()
        return model, torch.cat([inputs, clean])

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self._capture is None:
            return outputs, loss, targets
        self._capture.__exit__(None, None, None)
        self._capture = None
        rep = self._reps[self.options["layer"]].flatten(1)
        noisy, clean = rep.chunk(2)
        if self.option("criterion", "mse") == "cosine":
            term = (1 - F.cosine_similarity(noisy, clean.detach(), dim=1)).mean()
        else:
            term = F.mse_loss(noisy, clean.detach())
        self._terms.append((self._task, term.detach()))
        outputs = outputs[: outputs.shape[0] // 2]
        return outputs, loss + self.option("weight", 1.0) * term, targets

    def post_epoch(self, model):
        for task, term in self._terms:
            self.log(task, "representation_matching", float(term))
        self._terms = []
