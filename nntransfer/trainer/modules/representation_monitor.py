"""RepresentationMonitor: statistics of intermediate representations, logged per evaluation."""
from __future__ import annotations

import torch

from ...models.representations import capture
from .base import MainLoopModule, register_module


@register_module("RepresentationMonitor")
class RepresentationMonitor(MainLoopModule):
    """Options (``module_options["RepresentationMonitor"]``): ``layers`` (names), ``modes``
    (default ``["Validation", "Test"]``). Logs ``<layer>/mean``, ``<layer>/std`` and
    ``<layer>/sparsity`` (fraction of zeros) per task, averaged over the pass.
    """


    def __init__(self, model, config, device, seed):
        super().__init__(model, config, device, seed)
        self.layers = list(self.option("layers", []))
        if not self.layers:
            raise ValueError("RepresentationMonitor needs module_options['RepresentationMonitor']['layers']")
        self._capture = None
        self._sums: dict = {}

    def _active(self) -> bool:
        return self.mode in self.option("modes", ["Validation", "Test"])

    def pre_epoch(self, model, mode, **options):
        super().pre_epoch(model, mode, **options)
        self._sums = {}

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self._capture is not None:  # the previous batch was cancelled before post_forward
            self._capture.__exit__(None, None, None)
            self._capture = None
        if self._active():
            self._task = task_key
            self._capture = capture(self.model, self.layers)
            self._reps = self._capture.__enter__()
        return model, inputs

    @torch.no_grad()
    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self._capture is not None:
            self._capture.__exit__(None, None, None)
            self._capture = None
            for layer, rep in self._reps.items():
                rep = rep.detach().float()
                stats = torch.stack([rep.mean(), rep.std(), (rep == 0).float().mean()])
                key = (self._task, layer)
                total, count = self._sums.get(key, (torch.zeros(3, device=rep.device), 0))
                self._sums[key] = (total + stats, count + 1)
        return outputs, loss, targets

    def post_epoch(self, model):
        for (task, layer), (total, count) in self._sums.items():
            for name, value in zip(("mean", "std", "sparsity"), (total / count).tolist()):
                self.log(task, f"{layer}/{name}", value)
