"""NoiseAugmentation: Gaussian noise on the inputs, by standard deviation or by SNR mixture."""
from __future__ import annotations

import functools

import torch

from .base import MainLoopModule, Option, register_module


@register_module("NoiseAugmentation")
class NoiseAugmentation(MainLoopModule):
    """Options (``module_options["NoiseAugmentation"]``):

    * ``std``: a float, or a dict ``{std: probability}`` — each sample draws its noise level from it;
    * ``snr``: instead of ``std``, a float or ``{snr: probability}``; std = signal std / snr per sample;
    * ``in_eval``: also add noise in validation/test (default False). Evaluation noise is seeded by
      (seed, epoch, batch), so the same parameters always get the same score.

    The clean inputs and per-sample noise levels are left in ``shared_memory["clean_inputs"]`` and
    ``shared_memory["noise_std"]`` for later modules (e.g. RepresentationMatching).
    """

    options_declared = {
        "std": Option(0.1, (float, dict), "noise std, or {std: probability}"),
        "snr": Option(None, (float, dict, type(None)), "instead of std: signal-to-noise ratio, or {snr: probability}"),
        "in_eval": Option(False, bool, "also add (seeded) noise in validation and test"),
    }

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode != "Training" and not self.option("in_eval"):
            return model, inputs
        generator = None
        if self.mode != "Training":
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + self.batch_index)
        std = self._per_sample_std(inputs, generator)
        shape = (-1,) + (1,) * (inputs.dim() - 1)
        noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        shared_memory["clean_inputs"] = inputs
        shared_memory["noise_std"] = std
        return model, inputs + noise * std.view(shape)

    def _per_sample_std(self, inputs, generator):
        n = inputs.shape[0]
        if self.option("snr") is not None:
            levels = self._draw(self.option("snr"), n, generator, inputs.device)
            signal = inputs.reshape(n, -1).std(dim=1)
            return signal / levels
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
