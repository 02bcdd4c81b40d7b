"""Gaussian noise on normalised image batches, in normalised or in pixel units, with fixed or drawn noise levels.

Image inputs reach the model normalised, ``x = (pixel - mean) / std`` per channel, with pixels in [0, 1]. Noise of
standard deviation ``s`` in *pixel units* (the original nntransfer's ``noise_std``) is noise of ``s / std`` in
normalised units, and the valid range of a channel is ``[(0 - mean) / std, (1 - mean) / std]``. A
:class:`PixelSpace` holds that conversion; :func:`pixel_space` reads it from a loader's dataset.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class PixelSpace:
    """Per-channel normalisation ``(pixel - mean) / std`` of the inputs (pixels in [0, 1]); empty ``mean`` and
    ``std``: the inputs are unnormalised pixels."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def _view(self, values: tuple[float, ...], default: float, inputs: torch.Tensor) -> torch.Tensor:
        if not self.mean:
            return _constant((default,), inputs.device, inputs.dtype, 0)
        if inputs.dim() < 2 or inputs.shape[1] != len(values):
            raise ConfigError(f"the inputs have shape {tuple(inputs.shape)}, but their normalisation has "
                              f"{len(values)} channels (mean {self.mean}, std {self.std})")
        return _constant(values, inputs.device, inputs.dtype, inputs.dim())

    def noise_scale(self, inputs: torch.Tensor) -> torch.Tensor:
        """Factor from pixel units to normalised units per channel, shaped to broadcast over ``inputs``."""
        return self._view(tuple(1 / s for s in self.std), 1.0, inputs)

    def bounds(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised values of pixel 0 and pixel 1 per channel, shaped to broadcast over ``inputs``."""
        return (self._view(tuple(-m / s for m, s in zip(self.mean, self.std)), 0.0, inputs),
                self._view(tuple((1 - m) / s for m, s in zip(self.mean, self.std)), 1.0, inputs))


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype, dims: int) -> torch.Tensor:
    """Per-channel values shaped ``[1, C, 1, ...]`` for inputs of ``dims`` dimensions (a scalar for ``dims=0``), made
    once per device and dtype: a host-to-device copy every batch would synchronise the GPU every batch."""
    if not dims:
        return torch.tensor(values[0], device=device, dtype=dtype)
    return torch.tensor(values, device=device, dtype=dtype).view((1, -1) + (1,) * (dims - 2))


def pixel_space(loader, who: str) -> PixelSpace:
    """The normalisation of ``loader``'s inputs, read from its dataset's ``mean``/``std`` (nntransfer's image datasets
    have them; None means unnormalised pixels in [0, 1]). ConfigError naming ``who`` when the dataset does not say."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "mean") or not hasattr(dataset, "std"):
        raise ConfigError(f"{who} needs to know how the inputs were normalised (pixel units, the valid pixel range), "
                          f"but the dataset of the loader ({type(dataset).__name__}) has no 'mean' and 'std' "
                          "attributes. nntransfer's image datasets have them; give your dataset mean and std per "
                          "channel (None for unnormalised pixels in [0, 1]), or use normalised units without clamping")
    if dataset.mean is None or dataset.std is None:
        return PixelSpace()
    return PixelSpace(tuple(float(m) for m in dataset.mean), tuple(float(s) for s in dataset.std))


def add_noise(inputs: torch.Tensor, std: torch.Tensor, space: PixelSpace | None = None, clamp: bool = False,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``inputs`` plus Gaussian noise of per-sample standard deviation ``std`` ([B]); in pixel units when ``space``
    is given (else in the inputs' units); ``clamp``: back into the valid pixel range (needs ``space``).
    Samples with ``std == 0`` are unchanged (also by the clamp: a clean input is not touched)."""
    shape = (-1,) + (1,) * (inputs.dim() - 1)
    noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
    noise = noise * std.to(inputs.dtype).view(shape)
    if space is not None:
        noise = noise * space.noise_scale(inputs)
    noisy = inputs + noise
    if clamp:
        low, high = space.bounds(inputs)
        noisy = torch.where((std > 0).view(shape), torch.maximum(torch.minimum(noisy, high), low), inputs)
    return noisy


def fixed_fraction_levels(levels: dict, n: int, generator: torch.Generator | None,
                          device: torch.device) -> torch.Tensor:
    """Per-sample standard deviations with fixed counts: ``int(fraction * n)`` samples get each level (in the order
    given), chosen by a random permutation; the samples left over, and levels <= 0, stay clean (std 0). This is the
    original nntransfer's assignment of ``noise_std={level: fraction}``."""
    order = torch.randperm(n, generator=generator, device=generator.device if generator is not None else "cpu")
    std = torch.zeros(n, device=device)
    start = 0
    for level, fraction in levels.items():
        count = int(float(fraction) * n)
        if float(level) > 0 and count:
            std[order[start:start + count].to(device)] = float(level)
        start += count
    return std


def drawn_levels(levels: dict, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Per-sample standard deviations drawn independently from ``{level: probability}``."""
    values = torch.tensor([float(k) for k in levels], device=device)
    probs = torch.tensor([float(v) for v in levels.values()], device=device)
    choice = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator)
    return values[choice]


def check_levels(levels, owner: str, option: str, fixed: bool = False) -> None:
    """ConfigError unless ``levels`` is a non-negative number or ``{level: fraction}`` with fractions >= 0;
    ``fixed`` (fixed fractions of the batch, as in the original nntransfer): the fractions sum to at most 1 and
    levels <= 0 mean clean samples."""
    if isinstance(levels, (int, float)):
        if levels < 0:
            raise ConfigError(f"module_options[{owner!r}][{option!r}] must be >= 0, got {levels}")
        return
    if not levels:
        raise ConfigError(f"module_options[{owner!r}][{option!r}] is empty; give a level or {{level: fraction}}")
    for level, fraction in levels.items():
        try:
            level, fraction = float(level), float(fraction)
        except (TypeError, ValueError):
            raise ConfigError(f"module_options[{owner!r}][{option!r}] must map numbers to fractions, got "
                              f"{levels!r}") from None
        if fraction < 0:
            raise ConfigError(f"module_options[{owner!r}][{option!r}] has the negative fraction {fraction}")
        if level < 0 and not fixed:
            raise ConfigError(f"module_options[{owner!r}][{option!r}] has the negative level {level}: use 0 for clean "
                              "samples (a negative level means clean only with fractions='fixed', as in the "
                              "original nntransfer)")
    if fixed and sum(float(f) for f in levels.values()) > 1 + 1e-6:
        raise ConfigError(f"module_options[{owner!r}][{option!r}]: the fractions sum to "
                          f"{sum(float(f) for f in levels.values())}, more than the whole batch")


__all__ = ["PixelSpace", "add_noise", "check_levels", "drawn_levels", "fixed_fraction_levels", "pixel_space"]
