"""RepresentationMatching: pull the representation of a noisy input towards that of the clean input."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.representations import capture
from .base import MainLoopModule, Option, register_module


@register_module("RepresentationMatching")
class RepresentationMatching(MainLoopModule):
    """Options (``module_options["RepresentationMatching"]``):

    * ``layer``: name of the layer whose output is matched (``model.named_modules()`` name);
    * ``weight``: factor of the extra loss term (default 1.0);
    * ``criterion``: ``"mse"`` (default) or ``"cosine"``;
    * ``std``: noise std used when no NoiseAugmentation ran before this module (default 0.1).

    During training, clean and noisy inputs run as one batch; the extra loss compares the noisy
    half's representation with the clean half's (no gradient through the clean one), and the noisy
    half's outputs go on to the main loss. The mean term of each training pass is logged per task as
    ``representation_matching`` (one value per pass, computed at its end: no per-batch synchronisation).
    The layer is watched from ``pre_forward`` to ``post_forward``; a cancelled batch or pass stops watching it.
    """

    options_declared = {
        "layer": Option(types=str, help="name of the layer whose output is matched"),
        "weight": Option(1.0, float, "factor of the extra loss term"),
        "criterion": Option("mse", str, "'mse' or 'cosine'"),
        "std": Option(0.1, float, "noise std when no NoiseAugmentation ran before this module"),
    }

    def __init__(self, trainer):
        super().__init__(trainer)
        self._capture = None
        self._reps = None
        self._terms: dict[str, list] = {}  # task -> this training pass's terms (tensors), logged at its end

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self._terms = {}

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode != "Training":
            return model, inputs
        clean = shared_memory.get("clean_inputs")
        if clean is None:
            clean = inputs
            inputs = inputs + torch.randn_like(inputs) * self.option("std")
        self._capture = capture(self.model, [self.option("layer")])
        self._reps = self._capture.__enter__()
        return model, torch.cat([inputs, clean])

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self._capture is None:
            return outputs, loss, targets
        self._stop_capture()
        rep = self._reps[self.option("layer")].flatten(1)
        noisy, clean = rep.chunk(2)
        if self.option("criterion") == "cosine":
            term = (1 - F.cosine_similarity(noisy, clean.detach(), dim=1)).mean()
        else:
            term = F.mse_loss(noisy, clean.detach())
        self._terms.setdefault(self.task_key, []).append(term.detach())
        outputs = outputs[: outputs.shape[0] // 2]
        return outputs, loss + self.option("weight") * term, targets

    def after_cancel_batch(self, model):
        self._stop_capture()

    def after_cancel_epoch(self, model):
        self._stop_capture()

    def _stop_capture(self) -> None:
        if self._capture is not None:
            self._capture.__exit__(None, None, None)
            self._capture = None

    def post_epoch(self, model):
        if self.mode == "Training":
            for task, terms in self._terms.items():
                self.log(task, "representation_matching", float(torch.stack(terms).float().mean()))
            self._terms = {}

    def state_dict(self) -> dict:
        return {"terms": {task: torch.stack(terms) for task, terms in self._terms.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._terms = {task: list(terms.unbind()) for task, terms in state["terms"].items()}
