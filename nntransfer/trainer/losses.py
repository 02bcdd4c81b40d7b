"""Losses by name: ``torch.nn`` loss classes, registered losses, or import paths.

A loss is called as ``loss(outputs, targets)``; one whose instances have ``uses_extra = True`` is called as
``loss(outputs, targets, extra)`` with the batch's transfer data (e.g. a teacher's logits). Its keyword
arguments come from ``TrainerConfig.loss_options[<name>]``.

A training objective that is more than a plain loss (distillation adds a teacher term) declares the loss it
reduces to as ``evaluation_loss = "<loss name>"``: validation and test passes measure that one, so that their
``loss`` columns compare like with like across experiments (:func:`evaluation_loss`).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..configs.registries import LOSSES


def _torch_loss(name: str):
    cls = getattr(nn, name, None)
    if isinstance(cls, type) and issubclass(cls, nn.Module) and name.endswith("Loss"):
        return cls
    return None


def _torch_loss_names() -> list[str]:
    return [name for name in dir(nn) if _torch_loss(name) is not None]


def _check(obj) -> str | None:
    return None if callable(obj) else "a loss must be a class or factory that returns a callable"


LOSSES.set_check(_check)
LOSSES.set_fallback(_torch_loss, _torch_loss_names)
register_loss = LOSSES.register


@register_loss("SoftTargetCrossEntropy")
class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against soft targets (probabilities), e.g. a teacher's softmax."""

    def forward(self, outputs, targets):
        return torch.sum(-targets * torch.log_softmax(outputs, dim=-1), dim=-1).mean()


@register_loss("Distillation")
class Distillation(nn.Module):
    """Knowledge distillation (Hinton et al., 2015) from a teacher's logits handed over as transfer data.

    ``alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CrossEntropy(student, labels)``
    with the teacher's logits in ``extra[key]`` ("logits" from a step with ``data_transfer=True``); training
    batches without them get the cross-entropy term alone. Validation and test passes measure the
    cross-entropy (``evaluation_loss``), so a distilled student's ``loss`` compares with other students'.
    Options (``loss_options={"Distillation": {...}}``): ``temperature`` (> 0), ``alpha`` (in [0, 1]), ``key``.
    """

    uses_extra = True
    evaluation_loss = "CrossEntropyLoss"  # validation and test: the labels' loss, like a label-only student's

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, key: str = "logits"):
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"Distillation temperature must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ConfigError(f"Distillation alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha, self.key = float(temperature), float(alpha), key

    def forward(self, outputs, targets, extra=None):
        outputs = outputs.float()
        hard = F.cross_entropy(outputs, targets)
        teacher = (extra or {}).get(self.key)
        if teacher is None:
            return hard
        t = self.temperature
        soft = F.kl_div(F.log_softmax(outputs / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                        reduction="batchmean", log_target=True)
        return self.alpha * t * t * soft + (1 - self.alpha) * hard


def check_loss_options(name: str, options: dict, loss=None) -> None:
    """ConfigError unless ``loss`` (the class or factory called ``name``) accepts every key of ``options``."""
    loss = LOSSES.get(name) if loss is None else loss
    try:
        parameters = inspect.signature(loss).parameters
    except (TypeError, ValueError):  # no signature to check against: let the call decide
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"loss_options[{name!r}] has {unknown}, which {name} does not take; its options: "
                          f"{', '.join(known) or 'none'}")


def make_loss(name: str, options: dict | None = None) -> nn.Module:
    """An instance of the loss called ``name`` (registered, ``torch.nn``, or an import path) with ``options``."""
    loss = LOSSES.get(name)
    check_loss_options(name, options or {}, loss)
    return loss(**(options or {}))


def evaluation_loss(loss) -> nn.Module:
    """The loss validation and test passes measure for the training loss ``loss``: the plain loss it declares as
    ``evaluation_loss`` (a loss name, built without options), else ``loss`` itself."""
    name = getattr(loss, "evaluation_loss", None)
    if name is None:
        return loss
    if not isinstance(name, str):
        raise ConfigError(f"{type(loss).__name__}.evaluation_loss must name a loss (a string), got {name!r}")
    return make_loss(name)


__all__ = ["Distillation", "LOSSES", "SoftTargetCrossEntropy", "check_loss_options", "evaluation_loss", "make_loss",
           "register_loss"]


# -- neural responses (neuralpredictors' losses; imported when first used) --------------------------------
@register_loss("PoissonLoss")
def poisson_loss() -> nn.Module:
    """neuralpredictors' PoissonLoss (``output - target * log(output)``), averaged over examples and neurons.

    Averaged like every other loss here: the trainer weighs each batch by its size.
    """
    import warnings

    from ..core import compat  # noqa: F401  (collections aliases neuralpredictors imports)
    from neuralpredictors.measures.modules import PoissonLoss

    with warnings.catch_warnings():  # "averaged per batch ... recommended to use sum": averaging is our convention
        warnings.simplefilter("ignore", UserWarning)
        return PoissonLoss(avg=True)


@register_loss("AnscombeMSE")
def anscombe_mse() -> nn.Module:
    """neuralpredictors' AnscombeMSE: squared error after the variance-stabilising Anscombe transform."""
    from ..core import compat  # noqa: F401
    from neuralpredictors.measures.modules import AnscombeMSE

    return AnscombeMSE()


__all__ += ["anscombe_mse", "poisson_loss"]
