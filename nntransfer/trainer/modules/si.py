"""SI: synaptic intelligence (Zenke, Poole & Ganguli, ICML 2017): per-parameter importance from the path integral
of the training loss, handed from step to step."""
from __future__ import annotations

import fnmatch

import torch

from ...errors import ConfigError
from ..handover import arrays, tensors
from .base import MainLoopModule, Option, PassTerms, register_module


@register_module("SI")
class SI(MainLoopModule):
    """Importance accumulated while a step trains; penalty ``strength * sum_i Omega_i * (w_i - w~_i)^2`` in later steps.

    While training, after every optimizer step the module adds ``-g_i * dw_i`` to a running sum ``omega_i``, where
    ``g`` is the step's gradient of the loss without SI's own penalty and ``dw`` the parameter change the step made:
    the path integral of the loss's decrease attributed to each parameter. After training it hands over the
    importance ``Omega_i = max(omega_i, 0) / (Delta_i^2 + damping)`` (``Delta`` the parameter's total change during
    the step; a negative path integral would reward moving away and is cut at 0) added to the importance it
    received, and the returned parameters ``w~`` (section ``"SI"``). A later step with SI adds the penalty's
    gradient ``2 * strength * Omega * (w - w~)`` to every optimizer step's gradient (after clipping, before the
    step: SI's path integral must see the gradient without its own penalty); its mean per training pass is logged as
    ``si``. Parameters are matched by name and shape; untouched and frozen parameters have importance 0.

    Options (``module_options["SI"]``): ``strength`` (c, default 1.0), ``damping`` (xi, default 1e-3), ``parameters``
    (glob patterns of the parameters the penalty applies to; default: all that have an importance).
    The path integral runs over every step of the run; with ``restore_best`` the handed-over change ``Delta`` is
    that of the returned parameters.
    """

    options_declared = {
        "strength": Option(1.0, float, "c: weight of the penalty"),
        "damping": Option(1e-3, float, "xi: keeps the importance finite for parameters that hardly moved"),
        "parameters": Option(None, (list, type(None)), "glob patterns of the penalised parameters (default: all)"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if options["strength"] < 0:
            raise ConfigError(f"module_options[{key!r}]['strength'] must be >= 0, got {options['strength']}")
        if not options["damping"] > 0:
            raise ConfigError(f"module_options[{key!r}]['damping'] must be > 0, got {options['damping']}")

    def __init__(self, trainer):
        super().__init__(trainer)
        received = self.handover.parameter_data(self.handover_name())
        if self.handover.from_earlier_step and not received:
            raise ConfigError(f"{self.name} found no importance in what earlier steps handed over: add SI to the "
                              "main_loop_modules of an earlier step of the chain")
        named = dict(self.model.named_parameters())
        self.received_importance = tensors(received.get("importance", {}), named)
        anchors = tensors(received.get("anchor", {}), named)
        # the penalty applies to trainable parameters that have an importance and an anchor
        patterns = self.option("parameters")
        self.penalised = {name: (self.received_importance[name], anchors[name]) for name in anchors
                          if name in self.received_importance and named[name].requires_grad
                          and (patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns))}
        self.tracked = {name: p for name, p in named.items() if p.requires_grad}
        self.start = {name: p.detach().clone() for name, p in self.tracked.items()}
        self.omega = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in self.tracked.items()}
        self._step: dict | None = None  # the gradients and parameters of the step being taken
        self.terms = PassTerms()

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self.terms = PassTerms()

    @torch.no_grad()
    def pre_optimizer(self, model):
        gradients = {name: (p.grad.float().clone() if p.grad is not None else None) for name, p in self.tracked.items()}
        self._step = {"gradients": gradients, "before": {name: p.detach().clone() for name, p in self.tracked.items()}}
        if not self.penalised:
            return
        strength = self.option("strength")
        penalty = torch.zeros((), device=self.device)
        for name, (importance, anchor) in self.penalised.items():
            parameter = self.tracked[name]
            difference = parameter.float() - anchor.float()
            penalty += (importance.float() * difference.pow(2)).sum()
            extra = (2 * strength * importance.float() * difference).to(parameter.dtype)
            parameter.grad = extra if parameter.grad is None else parameter.grad + extra
        self.terms.add(self.task_key, strength * penalty)

    @torch.no_grad()
    def post_optimizer(self, model):
        if self._step is None:
            return
        for name, parameter in self.tracked.items():
            gradient = self._step["gradients"][name]
            if gradient is not None:
                self.omega[name] -= gradient * (parameter.float() - self._step["before"][name].float())
        self._step = None

    def after_cancel_batch(self, model):
        self._step = None  # a dropped step moved nothing

    def post_epoch(self, model):
        if self.mode == "Training" and self.penalised:
            self.terms.log(self, "si")

    def importance(self, model) -> dict[str, torch.Tensor]:
        """This step's importance of every parameter of ``model`` (0 for frozen ones) plus the importance received."""
        out = {}
        for name, parameter in model.named_parameters():
            total = torch.zeros_like(parameter, dtype=torch.float32)
            if name in self.tracked:
                change = parameter.detach().float() - self.start[name].float()
                total += self.omega[name].clamp(min=0) / (change.pow(2) + self.option("damping"))
            if name in self.received_importance:
                total += self.received_importance[name].float()
            out[name] = total
        return out

    def hand_over(self, model) -> dict:
        return {"importance": arrays(self.importance(model)), "anchor": arrays(dict(model.named_parameters()))}

    def state_dict(self) -> dict:
        return {"omega": dict(self.omega), "start": dict(self.start), "terms": self.terms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.omega = {name: value.float() for name, value in state["omega"].items()}
        self.start = dict(state["start"])
        self.terms.load_state_dict(state["terms"])
