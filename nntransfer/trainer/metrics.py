"""Metrics tracked per task and pass, by name: ``TrainerConfig.metrics`` and ``stop_metric``.

A metric accumulates over one pass with :meth:`Metric.update` (called every batch with the detached outputs
and targets; it should keep tensors on the device and never synchronise) and reduces once in
:meth:`Metric.compute`. ``applies(outputs, targets)`` tells whether it makes sense for a task's batches
(accuracy needs class logits and integer targets); a metric that does not apply is not tracked for that task.
The loss is always tracked. Register a metric with ``@register_metric("name")`` on a ``Metric`` subclass.

A checkpoint written in the middle of a pass keeps the metrics' accumulators: ``state_dict()`` returns the
instance's attributes by default, so keep them to tensors, numbers, strings and plain containers (or
override ``state_dict``/``load_state_dict``).
"""
from __future__ import annotations

import torch

from ..configs.registries import METRICS


class Metric:
    """One pass's accumulator. ``higher_is_better`` decides how early stopping reads it."""

    higher_is_better = True

    @staticmethod
    def applies(outputs: torch.Tensor, targets: torch.Tensor) -> bool:
        return True

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The accumulators so far (for a checkpoint in the middle of a pass)."""
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def _check(obj) -> str | None:
    if isinstance(obj, type) and issubclass(obj, Metric):
        return None
    return f"{obj!r} is not a Metric subclass"


METRICS.set_check(_check)
register_metric = METRICS.register


@register_metric("accuracy")
class Accuracy(Metric):
    """Fraction of examples whose largest logit is the target class."""

    @staticmethod
    def applies(outputs, targets) -> bool:
        return outputs.dim() == 2 and targets.dim() == 1 and not targets.is_floating_point()

    def __init__(self):
        # predicted classes and targets per batch, compared once at the end (one kernel per batch)
        self.predictions: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, outputs, targets) -> None:
        self.predictions.append(outputs.argmax(1))
        self.targets.append(targets)

    def compute(self) -> float:
        predictions, targets = torch.cat(self.predictions), torch.cat(self.targets)
        return float((predictions == targets).sum()) / len(targets)


__all__ = ["Accuracy", "METRICS", "Metric", "register_metric"]


@register_metric("correlation")
class Correlation(Metric):
    """Pearson correlation per neuron (output column) over the whole pass, averaged over neurons.

    The same number as neuralpredictors' ``measures.np_functions.corr(outputs, targets, axis=0).mean()`` on the
    concatenated pass (population statistics, ``eps`` added to each standard deviation), computed from running
    sums kept on the device in float64: no per-batch synchronisation, no stored predictions.
    """

    eps = 1e-8  # neuralpredictors' default

    @staticmethod
    def applies(outputs, targets) -> bool:
        return outputs.dim() == 2 and targets.shape == outputs.shape and targets.is_floating_point()

    def __init__(self):
        self.sums: torch.Tensor | None = None  # [6, neurons]: n, Σx, Σy, Σx², Σy², Σxy

    def update(self, outputs, targets) -> None:
        x, y = outputs.double(), targets.double()
        batch = torch.stack([torch.full_like(x[0], len(x)), x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0),
                             (x * y).sum(0)])
        self.sums = batch if self.sums is None else self.sums + batch

    def compute(self) -> float:
        n, sx, sy, sxx, syy, sxy = self.sums
        mx, my = sx / n, sy / n
        std_x = (sxx / n - mx * mx).clamp_min(0).sqrt()
        std_y = (syy / n - my * my).clamp_min(0).sqrt()
        return float(((sxy / n - mx * my) / ((std_x + self.eps) * (std_y + self.eps))).mean())


__all__ += ["Correlation"]
