"""RandomReadoutReset: re-initialise chosen layers (e.g. the readout) every n epochs."""
from __future__ import annotations

import fnmatch

import torch

from ...errors import ConfigError
from .base import MainLoopModule, Option, register_module


@register_module("RandomReadoutReset")
class RandomReadoutReset(MainLoopModule):
    """Re-initialises the layers named by ``layers`` (glob patterns of ``model.named_modules()`` names, e.g.
    ``["readout.7"]``) at the start of every ``every``-th epoch after the first: before epochs ``every + 1``,
    ``2 * every + 1``, …, from epoch ``from_epoch`` on (default: from the start), with each layer's own
    ``reset_parameters``. The optimizer's state of their parameters (momentum, Adam's moments) is dropped too
    (``reset_optimizer_state``, default True). The draws come from torch's global RNG, which the trainer seeds per
    epoch and checkpoints: a resumed run resets to the same values.
    """

    options_declared = {
        "layers": Option(types=list, help="glob patterns of the layers to re-initialise"),
        "every": Option(1, int, "re-initialise every n epochs"),
        "from_epoch": Option(1, int, "the first epoch that may start with a reset"),
        "reset_optimizer_state": Option(True, bool, "also drop the optimizer's state of the reset parameters"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if not options["layers"]:
            raise ConfigError(f"module_options[{key!r}]['layers'] is empty; name the layers to re-initialise")
        for name in ("every", "from_epoch"):
            if options[name] < 1:
                raise ConfigError(f"module_options[{key!r}][{name!r}] must be at least 1, got {options[name]}")

    def __init__(self, trainer):
        super().__init__(trainer)
        self.layers = [module for name, module in self.model.named_modules()
                       if name and any(fnmatch.fnmatchcase(name, pattern) for pattern in self.option("layers"))]
        resettable = [m for layer in self.layers for m in layer.modules() if hasattr(m, "reset_parameters")]
        if not resettable:
            raise ConfigError(f"{self.name}: the layers {self.option('layers')} match no module with "
                              "reset_parameters (model layers: "
                              f"{', '.join(n for n, _ in list(self.model.named_modules())[1:13])}, …)")

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` starts with a reset."""
        return epoch > 1 and epoch >= self.option("from_epoch") and (epoch - 1) % self.option("every") == 0

    def pre_epoch(self, model, mode, **options):
        if mode == "Training" and self.due(self.epoch):
            self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        for layer in self.layers:
            for module in layer.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        if self.option("reset_optimizer_state"):
            state = getattr(self.trainer, "optimizer", None)
            for layer in self.layers:
                for parameter in layer.parameters():
                    if state is not None:
                        state.state.pop(parameter, None)
