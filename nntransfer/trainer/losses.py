"""Losses by name: ``torch.nn`` loss classes, registered losses, or import paths.

A loss is called as ``loss(outputs, targets)``; one whose instances have ``uses_extra = True`` is called as
``loss(outputs, targets, extra)`` with the batch's transfer data (e.g. a teacher's logits).
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry


def _torch_loss(name: str):
    cls = getattr(nn, name, None)
    if isinstance(cls, type) and issubclass(cls, nn.Module) and name.endswith("Loss"):
        return cls
    return None


def _torch_loss_names() -> list[str]:
    return [name for name in dir(nn) if _torch_loss(name) is not None]


def _check(obj) -> str | None:
    return None if callable(obj) else "a loss must be a class or factory that returns a callable"


LOSSES = Registry("loss", "TrainerConfig.loss_functions", check=_check, fallback=_torch_loss, fallback_names=_torch_loss_names,
                  fallback_text="any torch.nn loss class name (CrossEntropyLoss, MSELoss, ...)",
                  how="Register one with @register_loss('Name') (see docs/trainer.md).")
register_loss = LOSSES.register


@register_loss("SoftTargetCrossEntropy")
class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against soft targets (probabilities), e.g. a teacher's softmax."""

    def forward(self, outputs, targets):
        return torch.sum(-targets * torch.log_softmax(outputs, dim=-1), dim=-1).mean()


def make_loss(name: str) -> nn.Module:
    """An instance of the loss called ``name`` (registered, ``torch.nn``, or an import path)."""
    return LOSSES.get(name)()


__all__ = ["LOSSES", "SoftTargetCrossEntropy", "make_loss", "register_loss"]


# -- neural responses (neuralpredictors' losses; imported when first used) --------------------------------
@register_loss("PoissonLoss")
def poisson_loss() -> nn.Module:
    """neuralpredictors' PoissonLoss (``output - target * log(output)``), averaged over examples and neurons.

    Averaged like every other loss here: the trainer weighs each batch by its size.
    """
    import warnings

    from .. import compat  # noqa: F401  (collections aliases neuralpredictors imports)
    from neuralpredictors.measures.modules import PoissonLoss

    with warnings.catch_warnings():  # "averaged per batch ... recommended to use sum": averaging is our convention
        warnings.simplefilter("ignore", UserWarning)
        return PoissonLoss(avg=True)


@register_loss("AnscombeMSE")
def anscombe_mse() -> nn.Module:
    """neuralpredictors' AnscombeMSE: squared error after the variance-stabilising Anscombe transform."""
    from .. import compat  # noqa: F401
    from neuralpredictors.measures.modules import AnscombeMSE

    return AnscombeMSE()


__all__ += ["anscombe_mse", "poisson_loss"]
