"""RepresentationMatching: pull the representations of noisy inputs towards those of clean inputs, at one or more
layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..noise import add_noise, check_levels, drawn_levels, pixel_space
from .base import CapturingModule, Option, PassTerms, register_module


@register_module("RepresentationMatching")
class RepresentationMatching(CapturingModule):
    """Options (``module_options["RepresentationMatching"]``):

    * ``layer`` or ``layers``: the layer whose output is matched (``model.named_modules()`` name), or several: a
      list, or ``{layer: weight}``;
    * ``weight``: factor of the extra loss term (default 1.0);
    * ``criterion``: ``"mse"`` (default) or ``"cosine"``;
    * ``std``: noise std used when no NoiseAugmentation ran before this module (default 0.1);
    * ``second_noise_std``: a second noise draw (a float, ``[low, high]`` for a uniform draw per sample, or
      ``{std: probability}``): the pairs are then (the batch as it comes, the clean inputs with this second noise);
    * ``only_for_clean``: with a second draw, pair only the samples that NoiseAugmentation left clean (default False);
    * ``layer_weights``: ``"fixed"`` (default: the given weights) or ``"learned"``: per layer a log-variance ``s``
      trained with the model, the layer's term weighted ``exp(-s) * weight * term + s`` (Kendall et al. 2018);
    * ``units``, ``clamp``: for this module's own noise draws, as NoiseAugmentation's (``"normalised"``/``"pixels"``,
      clip to the valid pixel range).

    During training, both inputs of each pair run as one batch. Without a second draw the pairs are (noisy input,
    clean input): the noisy half's representation is pulled towards the clean half's. With a second draw the
    pairs are (the batch as NoiseAugmentation left it, a second noisy version of the clean inputs), and the second
    is pulled towards the first. The target side gets no gradient; the batch's own outputs (the first half) go on
    to the main loss. The mean term of each training pass is logged per task as ``representation_matching`` (and
    per layer as ``representation_matching/<layer>`` when there are several). The layers are watched from
    ``pre_forward`` to ``post_forward``; a cancelled batch or pass stops watching them.
    """

    options_declared = {
        "layer": Option(None, (str, type(None)), "name of the layer whose output is matched"),
        "layers": Option(None, (list, dict, type(None)), "several layers: [names] or {name: weight}"),
        "weight": Option(1.0, float, "factor of the extra loss term"),
        "criterion": Option("mse", str, "'mse' or 'cosine'", choices=("mse", "cosine")),
        "std": Option(0.1, float, "noise std when no NoiseAugmentation ran before this module"),
        "second_noise_std": Option(None, (float, list, dict, type(None)),
                                   "second noise draw on the clean inputs: std, [low, high] or {std: probability}"),
        "only_for_clean": Option(False, bool, "with a second draw: pair only the samples left clean"),
        "layer_weights": Option("fixed", str, "'fixed' or 'learned' (uncertainty weighting)",
                        choices=("fixed", "learned")),
        "units": Option("normalised", str, "units of this module's noise: 'normalised' or 'pixels'",
                        choices=("normalised", "pixels")),
        "clamp": Option(False, bool, "clip this module's noisy inputs to the valid pixel range"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if (options["layer"] is None) == (options["layers"] is None):
            raise ConfigError(f"RepresentationMatching needs module_options[{key!r}]['layer'] (a layer name) or "
                              "['layers'] (names, or {name: weight}), one of them")
        if options["layers"] is not None and not options["layers"]:
            raise ConfigError(f"module_options[{key!r}]['layers'] is empty")
        second = options["second_noise_std"]
        if options["only_for_clean"] and second is None:
            raise ConfigError(f"module_options[{key!r}]['only_for_clean'] pairs the clean samples with a second noisy "
                              "version of them: set 'second_noise_std' too")
        if isinstance(second, list):
            if len(second) != 2 or not all(isinstance(v, (int, float)) for v in second) or not 0 <= second[0] <= \
                    second[1]:
                raise ConfigError(f"module_options[{key!r}]['second_noise_std'] as a list is a range [low, high] with "
                                  f"0 <= low <= high, got {second!r}")
        elif second is not None:
            check_levels(second, key, "second_noise_std")

    def __init__(self, trainer):
        super().__init__(trainer)
        layers = self.option("layers")
        if layers is None:
            layers = [self.option("layer")]
        self.layer_weight = dict(layers) if isinstance(layers, dict) else {name: 1.0 for name in layers}
        self.layers = list(self.layer_weight)
        self.log_variances = None
        if self.option("layer_weights") == "learned":
            self.log_variances = torch.zeros(len(self.layers), device=self.device, requires_grad=True)
            trainer.add_trainable([self.log_variances])
        self.space = None
        if self.option("units") == "pixels" or self.option("clamp"):
            self.space = pixel_space(next(iter(self.train_loader.values()), None), f"{self.name} with units='pixels'")
        self._pairs = None  # (indices of the target side in the first half, number of first-half samples)
        self.terms = PassTerms()
        self.layer_terms = {layer: PassTerms() for layer in self.layers}

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self.terms = PassTerms()
            self.layer_terms = {layer: PassTerms() for layer in self.layers}

    def _noisy(self, inputs, std):
        if self.space is None and self.option("units") == "normalised" and not self.option("clamp"):
            shape = (-1,) + (1,) * (inputs.dim() - 1)
            return inputs + torch.randn_like(inputs) * std.view(shape)
        return add_noise(inputs, std, self.space if self.option("units") == "pixels" else None,
                         clamp=self.option("clamp"))

    def _second_std(self, n, device):
        second = self.option("second_noise_std")
        if isinstance(second, list):
            return torch.empty(n, device=device).uniform_(float(second[0]), float(second[1]))
        if isinstance(second, dict):
            return drawn_levels(second, n, None, device)
        return torch.full((n,), float(second), device=device)

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode != "Training":
            return model, inputs
        clean = shared_memory.get("clean_inputs")
        if self.option("second_noise_std") is None:
            if clean is None:
                clean = inputs
                if self.space is None and not self.option("clamp"):  # this module's earlier code path
                    inputs = inputs + torch.randn_like(inputs) * self.option("std")
                else:
                    inputs = self._noisy(inputs, torch.full((inputs.shape[0],), self.option("std"),
                                                            device=inputs.device))
            pair_with = torch.arange(inputs.shape[0], device=inputs.device)
            second = clean
        else:
            if clean is None:
                clean = inputs
            if self.option("only_for_clean"):
                levels = shared_memory.get("noise_std")
                if levels is None:
                    raise ConfigError(f"{self.name} with only_for_clean needs to know which samples are clean: put "
                                      "NoiseAugmentation before it in main_loop_modules")
                pair_with = torch.nonzero(levels <= 0).flatten()
            else:
                pair_with = torch.arange(inputs.shape[0], device=inputs.device)
            picked = clean[pair_with]
            second = self._noisy(picked, self._second_std(picked.shape[0], inputs.device))
        self._pairs = (pair_with, inputs.shape[0])
        self.start_capture(self.layers)
        return model, torch.cat([inputs, second])

    def post_forward(self, outputs, loss, targets, **shared_memory):
        reps = self.end_capture()
        if reps is None:
            return outputs, loss, targets
        pair_with, n = self._pairs
        term = outputs.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.layers):
            rep = reps[layer].flatten(1).float()
            first, second = rep[:n], rep[n:]
            if self.option("second_noise_std") is None:  # (noisy, clean): the noisy side moves
                moving, target = first, second
            else:  # (batch as it comes, second draw): the second draw moves
                moving, target = second, first[pair_with]
            layer_term = self._criterion(moving, target.detach()) if len(moving) else rep.sum() * 0.0
            self.layer_terms[layer].add(self.task_key, layer_term)
            weighted = self.layer_weight[layer] * layer_term
            if self.log_variances is not None:
                s = self.log_variances[i]
                weighted = torch.exp(-s) * weighted + s
            term = term + weighted
        self.terms.add(self.task_key, term)
        return outputs[:n], loss + self.option("weight") * term, targets

    def _criterion(self, moving, target):
        if self.option("criterion") == "cosine":
            return (1 - F.cosine_similarity(moving, target, dim=1)).mean()
        return F.mse_loss(moving, target)

    def post_epoch(self, model):
        if self.mode == "Training":
            self.terms.log(self, "representation_matching")
            for layer, terms in self.layer_terms.items():
                if len(self.layers) > 1:
                    terms.log(self, f"representation_matching/{layer}")
                terms.terms = {}

    def state_dict(self) -> dict:
        state = {"terms": self.terms.state_dict(),
                 "layer_terms": {layer: terms.state_dict() for layer, terms in self.layer_terms.items()}}
        if self.log_variances is not None:
            state["log_variances"] = self.log_variances.detach().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.terms.load_state_dict(state["terms"])
        for layer, terms in state.get("layer_terms", {}).items():  # (checkpoints of 0.2 have none)
            self.layer_terms[layer].load_state_dict(terms)
        if self.log_variances is not None:
            with torch.no_grad():
                self.log_variances.copy_(state["log_variances"])
