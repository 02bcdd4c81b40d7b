"""L2SP: fine-tuning regularised towards the starting point (Li, Grandvalet & Davoine, ICML 2018)."""
from __future__ import annotations

import torch

from ...errors import ConfigError
from .base import MainLoopModule, Option, PassTerms, register_module


@register_module("L2SP")
class L2SP(MainLoopModule):
    """Penalty ``alpha / 2 * ||w_S - w0_S||^2 + beta / 2 * ||w_new||^2`` added to every training batch's loss.

    ``w_S`` are the trainable parameters transferred from the previous step of a TransferExperiment (``w0``, its
    trained values, the handover's ``model_state``): those loaded by name and shape that the trainer did not
    re-initialise (``reset``). ``w_new`` are the other trainable parameters (e.g. a new classifier), which get plain
    weight decay. Frozen parameters are left out. Options (``module_options["L2SP"]``): ``alpha`` (default 0.1),
    ``beta`` (default 0.01). The penalty's mean per training pass is logged as ``l2sp``.

    Needs a step that starts from the previous step's parameters (``transfer_parameters=True``, the default).
    """

    options_declared = {
        "alpha": Option(0.1, float, "weight of the squared distance of the transferred parameters from their start"),
        "beta": Option(0.01, float, "weight of the squared norm of the parameters that were not transferred"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        for name in ("alpha", "beta"):
            if options[name] < 0:
                raise ConfigError(f"module_options[{key!r}][{name!r}] must be >= 0, got {options[name]}")

    def __init__(self, trainer):
        super().__init__(trainer)
        start = self.handover.model_state
        if start is None:
            raise ConfigError(f"{self.name} regularises towards the parameters the step started from, but this step "
                              "starts from a fresh initialisation: use it in a later step of a TransferExperiment "
                              "with transfer_parameters=True (the default)")
        transferred = set(self.handover.transferred)
        self.anchors: dict[str, torch.Tensor] = {}
        self.new: dict[str, torch.nn.Parameter] = {}
        self.transferred: dict[str, torch.nn.Parameter] = {}
        for name, parameter in self.model.named_parameters():
            if not parameter.requires_grad:
                continue
            anchor = start.get(name)
            if name in transferred and anchor is not None and anchor.shape == parameter.shape:
                anchor = anchor.to(device=parameter.device, dtype=parameter.dtype)
                if torch.equal(anchor, parameter.detach()):  # not re-initialised by `reset`
                    self.anchors[name], self.transferred[name] = anchor, parameter
                    continue
            self.new[name] = parameter
        if not self.transferred:
            raise ConfigError(f"{self.name}: no trainable parameter of this step starts from the previous step's "
                              "values (none was transferred, or all were re-initialised or frozen)")
        self.terms = PassTerms()

    def penalty(self) -> torch.Tensor:
        """``alpha / 2 * sum (w - w0)^2`` over the transferred parameters plus ``beta / 2 * sum w^2`` over the new."""
        distance = sum((p.float() - self.anchors[n].float()).pow(2).sum() for n, p in self.transferred.items())
        penalty = 0.5 * self.option("alpha") * distance
        if self.new and self.option("beta"):
            penalty = penalty + 0.5 * self.option("beta") * sum(p.float().pow(2).sum() for p in self.new.values())
        return penalty

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self.terms = PassTerms()

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode != "Training":
            return outputs, loss, targets
        penalty = self.penalty()
        self.terms.add(self.task_key, penalty)
        return outputs, loss + penalty, targets

    def post_epoch(self, model):
        if self.mode == "Training":
            self.terms.log(self, "l2sp")

    def state_dict(self) -> dict:
        return {"terms": self.terms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.terms.load_state_dict(state["terms"])
