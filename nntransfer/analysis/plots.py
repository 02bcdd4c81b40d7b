"""Plots of results. Each returns a matplotlib ``Figure`` and never touches pyplot or the global backend.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot state), so a notebook's inline plots and
any backend a program chose stay as they were. Save one with ``fig.savefig("curves.png")`` (PNG, SVG,
PDF ...); in a notebook, show one by leaving it as a cell's last value (after ``%matplotlib inline``).

Every plot summarises seeds the same way (:mod:`nntransfer.analysis.stats`): the mean, a band or bar of
± one sample standard deviation (ddof=1; none for a single seed), and the individual seeds as points.
Plots take a results frame (:func:`~nntransfer.analysis.results_frame`) or a history frame
(:func:`~nntransfer.analysis.history_frame`), or anything those accept (a recipe, experiments, a query).
"""
from __future__ import annotations

import math
import os
import re
import textwrap
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .frames import TRAINING, VALIDATION, default_metric, history_frame, last_steps, results_frame
from .stats import spread

LABEL_WIDTH = 32  # characters per line of a wrapped experiment name


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _wrap(label: str, width: int = LABEL_WIDTH) -> str:
    return "\n".join(textwrap.wrap(str(label), width, break_long_words=True, break_on_hyphens=False)) or str(label)


def _results(source: Any):
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, list) and source and isinstance(source[0], dict):
        return pd.DataFrame(source)
    return results_frame(source)


def _history(source: Any):
    import pandas as pd

    return source if isinstance(source, pd.DataFrame) else history_frame(source)


def _check_metric(frame, metric: str | None) -> str:
    metric = metric or default_metric(frame)
    if metric not in frame.columns:
        numeric = [c for c in frame.columns if c == "score" or c.startswith("test/")]
        raise ConfigError(f"no column {metric!r} to plot; metrics: {', '.join(numeric)}")
    return metric


def _fit_axis(values: list[float], pad: float = 0.08) -> tuple[float, float]:
    """Axis limits around the data (not from zero), so that small differences stay visible."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    margin = (hi - lo) * pad if hi > lo else max(abs(hi) * 0.05, 0.01)
    return lo - margin, hi + margin


# -- learning curves ------------------------------------------------------------------------------
def learning_curves(source: Any, metrics: Sequence[str] = ("loss", "accuracy"),
                    modes: Sequence[str] = (TRAINING, VALIDATION), steps: str | int = "last"):
    """Per-epoch curves: one row of axes per metric, one column per mode, one line per experiment.

    Lines are the mean over seeds with a band of ± one sample std. ``steps``: ``"last"`` (each
    experiment's last step), ``"all"`` (every step, labelled ``name (step k)``) or a step number. The
    final evaluation of the restored best parameters (same epoch as the last one) is not drawn as a jump.
    """
    from matplotlib.ticker import MaxNLocator

    history = _history(source)
    history = history[history["mode"].isin(modes) & history["metric"].isin(metrics) & history["epoch"].notna()
                      & ~history["final"].astype(bool)]
    if history.empty:
        raise ValueError(f"no per-epoch history of {list(metrics)} in modes {list(modes)} to plot "
                         "(only nntransfer's trainer records one)")
    if steps == "last":
        history = history[history["step"] == history.groupby("name")["step"].transform("max")]
    elif steps != "all":
        history = history[history["step"] == int(steps)]
    multi_step = steps == "all" and history["step"].nunique() > 1
    multi_task = history["task"].nunique() > 1
    history = history.assign(line=[_line_label(n, s, t, multi_step, multi_task)
                                   for n, s, t in zip(history["name"], history["step"], history["task"])])
    lines = list(dict.fromkeys(history["line"]))
    colors = dict(zip(lines, _colors(len(lines))))
    present = [m for m in metrics if m in set(history["metric"])]
    fig = _figure(5.0 * len(modes) + 3.0, 3.0 * len(present) + 0.4)
    axes = fig.subplots(len(present), len(modes), squeeze=False, sharex=True)
    for row, metric in enumerate(present):
        for col, mode in enumerate(modes):
            ax = axes[row][col]
            part = history[(history["metric"] == metric) & (history["mode"] == mode)]
            for line in lines:
                series = part[part["line"] == line]
                if series.empty:
                    continue
                # one value per seed and epoch: the first (a repeated last epoch is the restored-best evaluation)
                series = series.drop_duplicates(["seed", "epoch"], keep="first")
                epochs, means, lows, highs = [], [], [], []
                for epoch, group in series.groupby("epoch"):
                    s = spread(group["value"])
                    epochs.append(epoch)
                    means.append(s.mean)
                    band = s.std if s.count > 1 else 0.0
                    lows.append(s.mean - band)
                    highs.append(s.mean + band)
                ax.plot(epochs, means, color=colors[line], label=_wrap(line), linewidth=1.5)
                if any(h > lo for lo, h in zip(lows, highs)):
                    ax.fill_between(epochs, lows, highs, color=colors[line], alpha=0.2, linewidth=0)
            ax.set_title(f"{mode} {metric}")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row == len(present) - 1:
                ax.set_xlabel("epoch")
            if col == 0:
                ax.set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small",
                   title="mean ± std over seeds", title_fontsize="small")
    return fig


def _line_label(name: str, step: int, task: str, multi_step: bool, multi_task: bool) -> str:
    label = f"{name} (step {step})" if multi_step else name
    return f"{label} · {task}" if multi_task else label


# -- comparisons ----------------------------------------------------------------------------------
def transfer_comparison(source: Any, metric: str | None = None):
    """The final ``metric`` of each experiment's last step: a bar per experiment (mean), ± one sample std,
    and every seed as a point. Horizontal bars keep long names readable; the value axis is fitted to the
    data. Default metric: the test metric the results table shows (:func:`default_metric`).
    """
    frame = _results(source)
    metric = _check_metric(frame, metric)
    rows = last_steps(frame)
    rows = rows[rows[metric].notna()]
    if rows.empty:
        raise ValueError(f"no finished experiment has a {metric!r} to plot")
    names = list(dict.fromkeys(rows["name"]))
    fig = _figure(9.0, 0.9 + 0.55 * len(names) + 0.2 * sum(len(_wrap(n).splitlines()) - 1 for n in names))
    ax = fig.subplots()
    colors = _colors(len(names))
    extent = []
    for i, name in enumerate(names):
        values = rows.loc[rows["name"] == name, metric].astype(float).tolist()
        s = spread(values)
        y = len(names) - 1 - i  # first experiment on top
        ax.barh(y, s.mean, height=0.6, color=colors[i], alpha=0.45)
        if s.count > 1:
            ax.hlines(y, s.mean - s.std, s.mean + s.std, color="black", linewidth=1.5)
            extent += [s.mean - s.std, s.mean + s.std]
        offsets = [(k - (len(values) - 1) / 2) * 0.12 for k in range(len(values))]
        ax.scatter(values, [y + o for o in offsets], color=colors[i], edgecolor="black", s=22, zorder=3)
        extent += values
    ax.set_yticks(range(len(names)), [_wrap(n) for n in reversed(names)], fontsize="small")
    ax.set_xlim(*_fit_axis(extent))
    ax.set_xlabel(metric)
    ax.set_title("last step of each experiment (bar: mean, line: ± std, points: seeds)", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    return fig


_GRID_LABEL = re.compile(r"^(.*)\[(.*)\]$")


def sweep_line_name(name: str, x: str) -> str:
    """``name`` without the grid entry of ``x``: ``"transfer[examples_per_class=3]"`` -> ``"transfer"``.

    Grid points are named ``name[path=value,...]``; an entry belongs to ``x`` when one path is a dotted
    suffix of the other (``examples_per_class`` and ``dataset.examples_per_class``).
    """
    match = _GRID_LABEL.match(name)
    if not match:
        return name
    base, label = match.groups()
    entries = re.split(r",(?=[\w.]+=)", label)
    kept = [e for e in entries if not _same_path(e.partition("=")[0], x)]
    return f"{base}[{','.join(kept)}]" if kept else base


def _same_path(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def sweep_fields(frame) -> list[str]:
    """Config columns that some grid label of the names sweeps over (candidates for :func:`sweep_plot`)."""
    config_columns = [c for c in frame.columns if c.split(".")[0] in ("dataset", "model", "trainer")]
    paths = set()
    for name in frame["name"]:
        match = _GRID_LABEL.match(str(name))
        if match:
            paths |= {e.partition("=")[0] for e in re.split(r",(?=[\w.]+=)", match.group(2))}
    return [c for c in config_columns if any(_same_path(c, p) for p in paths)]


def _order(values) -> list:
    """Sweep values in order: numbers ascending, then the rest (None, strings ...) as they come."""
    unique = list(dict.fromkeys(values))
    numbers = sorted(v for v in unique if isinstance(v, (int, float)) and not isinstance(v, bool))
    return numbers + [v for v in unique if v not in numbers]


def sweep_plot(source: Any, x: str, metric: str | None = None, by: str | None = None):
    """``metric`` of each experiment's last step against the swept config field ``x`` (a dotted column such
    as ``dataset.examples_per_class``): one line per other setting, mean ± one sample std, seeds as points.

    Lines are named by ``by`` (a column) or, by default, by the experiment name without the grid entry
    of ``x`` (:func:`sweep_line_name`). Numeric sweeps use a log axis when they span a factor of 10 or
    more; others (or ones with ``None``) are placed in order, evenly spaced.
    """
    frame = _results(source)
    metric = _check_metric(frame, metric)
    if x not in frame.columns:
        raise ValueError(f"no config column {x!r} to sweep over; config columns that differ: "
                         f"{', '.join(c for c in frame.columns if c.split('.')[0] in ('dataset', 'model', 'trainer'))}")
    rows = last_steps(frame)
    rows = rows[rows[metric].notna()]
    if rows.empty:
        raise ValueError(f"no finished experiment has a {metric!r} to plot")
    xs_all = [_plain(v) for v in rows[x]]
    order = _order(xs_all)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in order)
    position = {v: (float(v) if numeric else i) for i, v in enumerate(order)}
    line_of = rows[by].astype(str).tolist() if by else [sweep_line_name(n, x) for n in rows["name"]]
    lines = list(dict.fromkeys(line_of))
    colors = dict(zip(lines, _colors(len(lines))))
    fig = _figure(8.5, 4.5)
    ax = fig.subplots()
    values = rows[metric].astype(float).tolist()
    extent = []
    for line in lines:
        points: dict = {}
        for lv, xv, v in zip(line_of, xs_all, values):
            if lv == line:
                points.setdefault(xv, []).append(v)
        ordered = [v for v in order if v in points]
        stats = [spread(points[v]) for v in ordered]
        px = [position[v] for v in ordered]
        ax.plot(px, [s.mean for s in stats], marker="o", color=colors[line], label=_wrap(line))
        for p, s in zip(px, stats):
            if s.count > 1:
                ax.vlines(p, s.mean - s.std, s.mean + s.std, color=colors[line], linewidth=1.5)
                extent += [s.mean - s.std, s.mean + s.std]
        seeds_x = [position[xv] for lv, xv in zip(line_of, xs_all) if lv == line]
        seeds_y = [v for lv, v in zip(line_of, values) if lv == line]
        ax.scatter(seeds_x, seeds_y, color=colors[line], s=12, alpha=0.5, zorder=3)
        extent += seeds_y
    if numeric and min(order) > 0 and max(order) / min(order) >= 10:
        ax.set_xscale("log")
    ax.set_xticks([position[v] for v in order], [str(v) for v in order])
    ax.minorticks_off()
    ax.set_ylim(*_fit_axis(extent))
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title("mean ± std over seeds; points: seeds", fontsize="medium")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def _plain(value):
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
    except TypeError:
        pass
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, tuple)) else value


def chain_plot(source: Any, metric: str | None = None):
    """A chain view of transfer experiments: ``metric`` per step, one line per experiment with more than
    one step (mean ± one sample std; points: seeds). Step k's test metric is measured on step k's test set.
    """
    frame = _results(source)
    metric = _check_metric(frame, metric)
    done = frame[(frame["state"] == "done") & frame[metric].notna()]
    names = [n for n in dict.fromkeys(done["name"]) if done.loc[done["name"] == n, "step"].nunique() > 1]
    if not names:
        raise ValueError("no finished experiment with more than one step to show as a chain")
    colors = dict(zip(names, _colors(len(names))))
    fig = _figure(8.5, 4.5)
    ax = fig.subplots()
    extent = []
    for name in names:
        rows = done[done["name"] == name]
        steps = sorted(rows["step"].unique())
        stats = [spread(rows.loc[rows["step"] == s, metric].astype(float)) for s in steps]
        ax.plot(steps, [s.mean for s in stats], marker="o", color=colors[name], label=_wrap(name))
        for step, s in zip(steps, stats):
            if s.count > 1:
                ax.vlines(step, s.mean - s.std, s.mean + s.std, color=colors[name], linewidth=1.5)
                extent += [s.mean - s.std, s.mean + s.std]
        ax.scatter(rows["step"], rows[metric].astype(float), color=colors[name], s=12, alpha=0.5, zorder=3)
        extent += rows[metric].astype(float).tolist()
    all_steps = sorted(done["step"].unique())
    ax.set_xticks(all_steps, [f"step {s}" for s in all_steps])
    ax.set_ylim(*_fit_axis(extent))
    ax.set_ylabel(metric)
    ax.set_title("transfer chains (mean ± std over seeds; points: seeds)", fontsize="medium")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


_NOISE_COLUMN = re.compile(r"^noise/(?P<task>.+)/(?P<level>[^/]+)/(?P<metric>[^/]+)$")


def noise_columns(frame, metric: str = "accuracy", task: str | None = None) -> dict[float, str]:
    """The robustness columns (``noise/<task>/<level>/<metric>``) of ``metric`` for ``task`` (default: the first task
    that has them), as ``{level: column}`` in ascending order of the level."""
    found: dict[str, dict[float, str]] = {}
    for column in frame.columns:
        match = _NOISE_COLUMN.match(str(column))
        if match and match["metric"] == metric:
            found.setdefault(match["task"], {})[float(match["level"])] = column
    if not found:
        raise ValueError(f"no robustness results of {metric!r} to plot: set TrainerConfig.noise_robustness, "
                         "e.g. [0.0, 0.1, 0.2, 0.3]")
    if task is None:
        task = next(iter(found))
    if task not in found:
        raise ValueError(f"no robustness results for task {task!r}; tasks: {', '.join(found)}")
    return dict(sorted(found[task].items()))


def robustness_plot(source: Any, metric: str = "accuracy", task: str | None = None):
    """``metric`` of each experiment's last step against the standard deviation of the Gaussian noise added to the
    test inputs (pixel units, ``TrainerConfig.noise_robustness``): one line per experiment, the mean over seeds
    with a band of ± one sample std, the seeds as points. ``task``: whose test set (default: the first).
    """
    frame = _results(source)
    columns = noise_columns(frame, metric, task)
    rows = last_steps(frame)
    rows = rows[rows[list(columns.values())].notna().any(axis=1)]
    if rows.empty:
        raise ValueError(f"no finished experiment has robustness results of {metric!r} to plot")
    names = list(dict.fromkeys(rows["name"]))
    colors = dict(zip(names, _colors(len(names))))
    levels = list(columns)
    fig = _figure(8.5, 4.5)
    ax = fig.subplots()
    extent = []
    for name in names:
        group = rows[rows["name"] == name]
        stats = [spread(group[columns[level]].astype(float)) for level in levels]
        means = [s.mean for s in stats]
        ax.plot(levels, means, marker="o", color=colors[name], label=_wrap(name))
        bands = [s.std if s.count > 1 else 0.0 for s in stats]
        if any(bands):
            ax.fill_between(levels, [m - b for m, b in zip(means, bands)], [m + b for m, b in zip(means, bands)],
                            color=colors[name], alpha=0.2, linewidth=0)
        for level in levels:
            values = group[columns[level]].astype(float).tolist()
            ax.scatter([level] * len(values), values, color=colors[name], s=10, alpha=0.5, zorder=3)
            extent += values
        extent += [m - b for m, b in zip(means, bands)] + [m + b for m, b in zip(means, bands)]
    ax.set_xticks(levels, [f"{level:g}" for level in levels])
    ax.set_ylim(*_fit_axis(extent))
    ax.set_xlabel("std of Gaussian noise on the test inputs (pixel units, clamped)")
    ax.set_ylabel(metric)
    ax.set_title("robustness of each experiment's last step (mean ± std over seeds; points: seeds)",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def plot(source: Any, path: str | os.PathLike, metric: str | None = None) -> Path:
    """Save :func:`transfer_comparison` to ``path`` (format from the suffix: .png, .svg, .pdf ...)."""
    path = Path(path)
    transfer_comparison(source, metric).savefig(path)
    return path


__all__ = ["chain_plot", "learning_curves", "noise_columns", "plot", "robustness_plot", "sweep_fields",
           "sweep_line_name", "sweep_plot", "transfer_comparison"]
