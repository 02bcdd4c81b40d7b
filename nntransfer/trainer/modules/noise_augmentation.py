"""NoiseAugmentation: Gaussian noise on the inputs, by standard deviation or by SNR mixture."""
from __future__ import annotations

import functools

import torch

from ...errors import ConfigError
from ..noise import add_noise, check_levels, fixed_fraction_levels, pixel_space
from .base import MainLoopModule, Option, register_module


@register_module("NoiseAugmentation")
class NoiseAugmentation(MainLoopModule):
    """Options (``module_options["NoiseAugmentation"]``):

    * ``std``: a float, or a dict ``{std: probability}`` — each sample draws its noise level from it;
    * ``snr``: instead of ``std``, a float or ``{snr: probability}``; std = signal std / snr per sample;
    * ``in_eval``: also add noise in validation/test (default False). Evaluation noise is seeded by
      (seed, epoch, batch), so the same parameters always get the same score;
    * ``units``: ``"normalised"`` (default: the std is in the units of the normalised inputs) or ``"pixels"``
      (the std is in pixel units, pixels in [0, 1], and is divided by each channel's normalisation std);
    * ``clamp``: clip noisy inputs to the valid pixel range (default False);
    * ``fractions``: ``"sampled"`` (default: each sample draws its level) or ``"fixed"`` (``{std: fraction}``:
      exactly ``int(fraction * batch size)`` samples of every batch get that level, the rest stay clean; levels
      <= 0 mean clean samples).

    ``{"units": "pixels", "clamp": True, "fractions": "fixed"}`` are the original nntransfer's semantics, under which
    an original ``noise_std`` config (e.g. ``{0.08: 0.1, 0.12: 0.1, 0.18: 0.1, 0.26: 0.1, 0.38: 0.1, -1: 0.5}``)
    reproduces. The defaults keep this module's earlier behaviour (and the keys of configs that do not set them).

    The clean inputs and per-sample noise levels (in the module's units) are left in
    ``shared_memory["clean_inputs"]`` and ``shared_memory["noise_std"]`` for later modules (e.g.
    RepresentationMatching, NoiseAdversarial).
    """

    options_declared = {
        "std": Option(0.1, (float, dict), "noise std, or {std: probability}"),
        "snr": Option(None, (float, dict, type(None)), "instead of std: signal-to-noise ratio, or {snr: probability}"),
        "in_eval": Option(False, bool, "also add (seeded) noise in validation and test"),
        "units": Option("normalised", str, "'normalised' (std in the inputs' units) or 'pixels' (pixel units)",
                        choices=("normalised", "pixels")),
        "clamp": Option(False, bool, "clip noisy inputs to the valid pixel range"),
        "fractions": Option("sampled", str, "'sampled' (per-sample draws) or 'fixed' (fixed fractions of each batch)",
                        choices=("sampled", "fixed")),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        fixed = options["fractions"] == "fixed"
        if options["snr"] is not None:
            if options["units"] == "pixels" or fixed:
                raise ConfigError(f"module_options[{key!r}]: snr sets the noise relative to each sample's signal; "
                                  "units='pixels' and fractions='fixed' are for std levels")
            check_levels(options["snr"], key, "snr")
        else:
            check_levels(options["std"], key, "std", fixed=fixed)

    def __init__(self, trainer):
        super().__init__(trainer)
        self.space = None
        if self.option("units") == "pixels" or self.option("clamp"):
            loaders = list(self.train_loader.values())
            if not loaders:
                raise ConfigError(f"{self.name} with units='pixels' or clamp=True reads the inputs' normalisation "
                                  "from the training loader, and the trainer has none")
            self.space = pixel_space(loaders[0], f"{self.name} with units='pixels' or clamp=True")

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode != "Training" and not self.option("in_eval"):
            return model, inputs
        generator = None
        if self.mode != "Training":
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + self.batch_index)
        std = self._per_sample_std(inputs, generator)
        shared_memory["clean_inputs"] = inputs
        shared_memory["noise_std"] = std
        if self.space is None:  # this module's earlier code path, unchanged (the same random numbers)
            shape = (-1,) + (1,) * (inputs.dim() - 1)
            noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
            return model, inputs + noise * std.view(shape)
        space = self.space if self.option("units") == "pixels" else None
        noisy = add_noise(inputs, std, space, clamp=False, generator=generator)
        if self.option("clamp"):
            low, high = self.space.bounds(inputs)
            noisy = torch.maximum(torch.minimum(noisy, high), low)
        return model, noisy

    def _per_sample_std(self, inputs, generator):
        n = inputs.shape[0]
        if self.option("snr") is not None:
            levels = self._draw(self.option("snr"), n, generator, inputs.device)
            signal = inputs.reshape(n, -1).std(dim=1)
            return signal / levels
        if self.option("fractions") == "fixed":
            spec = self.option("std")
            spec = spec if isinstance(spec, dict) else {spec: 1.0}
            return fixed_fraction_levels(spec, n, generator, inputs.device)
        return self._draw(self.option("std"), n, generator, inputs.device)

    def _draw(self, spec, n, generator, device):
        if isinstance(spec, (int, float)):
            return torch.full((n,), float(spec), device=device)
        values, probs = self._mixture(tuple(spec.items()), device)
        choice = torch.multinomial(probs, n, replacement=True, generator=generator)
        return values[choice]

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a few small tensors per module: built once, not per batch
    def _mixture(self, items: tuple, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's levels and probabilities on ``device`` (a host-to-device copy would sync every batch)."""
        values = torch.tensor([float(k) for k, _ in items], device=device)
        probs = torch.tensor([float(v) for _, v in items], device=device)
        return values, probs / probs.sum()
