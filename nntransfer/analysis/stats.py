"""The one definition of spread used everywhere (CLI tables, ``compare``, plots, the report).

A group of results (e.g. the seeds of one experiment) is summarised as its mean, the *sample*
standard deviation (``ddof=1``, the estimate of the spread between seeds) and the count. With a
single value the standard deviation is undefined: it is NaN, and shown as ``n=1`` without ``±``.
"""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple


class Spread(NamedTuple):
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for fewer than two values
    count: int

    def __str__(self) -> str:
        return format_spread(self)


def spread(values: Iterable[float]) -> Spread:
    """Mean, sample standard deviation (ddof=1) and count of the finite values."""
    values = [float(v) for v in values if v is not None and not _isnan(v)]
    n = len(values)
    if n == 0:
        return Spread(math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return Spread(mean, std, n)


def format_spread(s: Spread, digits: int = 4) -> str:
    """``0.9170 ± 0.0123 (n=3)``; ``0.9170 (n=1)`` for one value."""
    if s.count == 0:
        return "–"
    if s.count == 1:
        return f"{s.mean:.{digits}f} (n=1)"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f} (n={s.count})"


def _isnan(v) -> bool:
    try:
        return math.isnan(v)
    except TypeError:
        return False


__all__ = ["Spread", "format_spread", "spread"]
