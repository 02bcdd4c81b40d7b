"""RepresentationMonitor: statistics of intermediate representations, logged per pass."""
from __future__ import annotations

import torch

from .base import CapturingModule, Option, register_module


@register_module("RepresentationMonitor")
class RepresentationMonitor(CapturingModule):
    """Options (``module_options["RepresentationMonitor"]``): ``layers`` (names), ``modes``
    (default ``["Validation", "Test"]``). Logs ``<layer>/mean``, ``<layer>/std`` and
    ``<layer>/sparsity`` (fraction of zeros) per task, averaged over the pass.
    """

    options_declared = {
        "layers": Option(types=list, help="names of the layers to monitor"),
        "modes": Option(["Validation", "Test"], list, "passes in which to monitor"),
    }

    def __init__(self, trainer):
        super().__init__(trainer)
        self.layers = list(self.option("layers"))
        if not self.layers:
            raise ValueError("RepresentationMonitor needs module_options['RepresentationMonitor']['layers'] "
                             "(a non-empty list of layer names)")
        # per mode (a validation pass may run inside a training pass): (task, layer) -> (sum of stats, count)
        self._sums: dict[str, dict] = {}

    def _active(self) -> bool:
        return self.mode in self.option("modes")

    def pre_epoch(self, model, mode, **options):
        self._sums[mode] = {}

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self._active():
            self.start_capture(self.layers)
        return model, inputs

    @torch.no_grad()
    def post_forward(self, outputs, loss, targets, **shared_memory):
        reps = self.end_capture()
        if reps is not None:
            sums = self._sums.setdefault(self.mode, {})
            for layer, rep in reps.items():
                rep = rep.detach().float()
                stats = torch.stack([rep.mean(), rep.std(), (rep == 0).float().mean()])
                key = (self.task_key, layer)
                total, count = sums.get(key, (torch.zeros(3, device=rep.device), 0))
                sums[key] = (total + stats, count + 1)
        return outputs, loss, targets

    def post_epoch(self, model):
        for (task, layer), (total, count) in self._sums.pop(self.mode, {}).items():
            for name, value in zip(("mean", "std", "sparsity"), (total / count).tolist()):
                self.log(task, f"{layer}/{name}", value)

    def state_dict(self) -> dict:
        # a checkpoint mid-epoch keeps the training pass's sums (when training is monitored)
        sums = self._sums.get("Training", {})
        return {"training": [[task, layer, total, count] for (task, layer), (total, count) in sums.items()]}

    def load_state_dict(self, state: dict) -> None:
        self._sums["Training"] = {(task, layer): (total, count) for task, layer, total, count in state["training"]}
