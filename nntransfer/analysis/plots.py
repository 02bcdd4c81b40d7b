"""Plots of results. Each returns a matplotlib ``Figure`` and never touches pyplot or the global backend.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot state), so a notebook's inline plots and
any backend a program chose stay as they were. Save one with ``fig.savefig("curves.png")`` (PNG, SVG,
PDF ...); in a notebook, show one by leaving it as a cell's last value (after ``%matplotlib inline``).

Every plot summarises seeds the same way (:mod:`nntransfer.analysis.stats`): the mean, a band or bar of
± one sample standard deviation (ddof=1; none for a single seed), and the individual seeds as points.
Plots take a results frame (:func:`~nntransfer.analysis.results_frame`) or a history frame
(:func:`~nntransfer.analysis.history_frame`), or anything those accept (a recipe, experiments, a query).

**Variants and colours.** An experiment named ``family[path=value,...]`` (a grid point) belongs to the variant
family ``family`` (:func:`variant_family`). Every figure draws a family in one colour, taken from one mapping
(:func:`variant_colors`): pass the same ``colors=`` to every figure of a document, as the report does, and a
family has the same colour everywhere. Grid points of a family are told apart by panel (the comparison and the
learning curves make one panel per grid setting) or by position (the sweep plot's x axis), never by colour.
"""
from __future__ import annotations

import math
import os
import re
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..configs.dataset import DatasetConfig
from ..errors import ConfigError
from .frames import (TRAINING, VALIDATION, default_metric, frame_metric, history_frame, last_steps, resolve_metric,
                     results_frame)
from .stats import spread

LABEL_WIDTH = 32  # characters per line of a wrapped experiment name
PANEL_COLUMNS = 4  # small multiples per row
MODE_STYLES = {VALIDATION: "-", TRAINING: "--", "Test": ":"}  # learning curves: the pass is the line style
MIXED_COLOR = "0.55"  # grey: a bar shared by experiments of several families (e.g. one pretraining step)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


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


# -- variants and their colours ---------------------------------------------------------------------
_GRID_LABEL = re.compile(r"^(.*)\[(.*)\]$")
_GRID_ENTRY = re.compile(r",(?=[\w.]+=)")  # entries of a grid label: "a=1,b.c=[1, 2]" -> "a=1", "b.c=[1, 2]"


def variant_family(name: str) -> str:
    """An experiment's variant family: its name without the grid label (``"transfer[lr=0.1]"`` -> ``"transfer"``)."""
    match = _GRID_LABEL.match(str(name))
    return match.group(1) if match else str(name)


def grid_setting(name: str) -> str:
    """The grid label of an experiment's name (``"transfer[lr=0.1]"`` -> ``"lr=0.1"``), or ``""``."""
    match = _GRID_LABEL.match(str(name))
    return match.group(2) if match else ""


def variant_colors(names: Iterable[str]) -> dict[str, tuple]:
    """One colour per variant family of ``names``, in first-seen order (matplotlib's ``tab10``; ``tab20`` for more
    than 10 families, repeating after 20). The one mapping every figure takes as ``colors=``."""
    from matplotlib import colormaps

    families = list(dict.fromkeys(variant_family(n) for n in names))
    cmap = colormaps["tab10" if len(families) <= 10 else "tab20"]
    return {family: cmap(i % cmap.N) for i, family in enumerate(families)}


def _colors_for(names: Iterable[str], colors: Mapping[str, Any] | None) -> Mapping[str, Any]:
    names = list(names)
    if colors is None:
        return variant_colors(names)
    missing = sorted({variant_family(n) for n in names} - set(colors))
    if missing:
        raise ConfigError(f"colors has no colour for the variant famil{'ies' if len(missing) > 1 else 'y'} "
                          f"{', '.join(map(repr, missing))}; make the mapping with variant_colors(<all names>)")
    return colors


def _seed_offsets(n: int, width: float = 0.12) -> list[float]:
    return [(k - (n - 1) / 2) * width for k in range(n)]


def _value_axis(ax, extent: tuple[list[float], list[float]], horizontal: bool) -> None:
    """Limits of a bar chart's value axis: always from 0 (a bar's length is its value) to the values (means and
    seeds) and their ± std lines. A std line is cut at 0 when every value lies on the other side: an accuracy's
    axis does not go below 0 because a mean's spread does."""
    values, spans = ([v for v in part if v is not None and math.isfinite(v)] for part in extent)
    lo = min([0.0, *values]) if min(values, default=0.0) >= 0 else min([0.0, *values, *spans])
    hi = max([0.0, *values]) if max(values, default=0.0) <= 0 else max([0.0, *values, *spans])
    margin = (hi - lo) * 0.04 or 1.0
    limits = (lo - margin if lo < 0 else 0.0, hi + margin if hi > 0 else 0.0)
    (ax.set_xlim if horizontal else ax.set_ylim)(*limits)


def _fit_axis(values: list[float], pad: float = 0.08) -> tuple[float, float]:
    """Limits of a line plot's value axis around the data (not from zero: a line's height is read against its
    neighbours, so small differences stay visible)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    margin = (hi - lo) * pad if hi > lo else max(abs(hi) * 0.05, 0.01)
    return lo - margin, hi + margin


def _bars(ax, labels: list[str], groups: list[list[float]], colors: list) -> tuple[list[float], list[float]]:
    """Horizontal bars from 0 (mean), a black line for ± one sample std, the seeds as points; first on top.
    Returns the values drawn (means and seeds) and the ends of the std lines (for the axis limits)."""
    values_drawn, spans = [], []
    for i, (values, color) in enumerate(zip(groups, colors)):
        s = spread(values)
        y = len(groups) - 1 - i
        ax.barh(y, s.mean, height=0.6, color=color, alpha=0.55, edgecolor=color)
        if s.count > 1:
            ax.hlines(y, s.mean - s.std, s.mean + s.std, color="black", linewidth=1.5)
            spans += [s.mean - s.std, s.mean + s.std]
        ax.scatter(values, [y + o for o in _seed_offsets(len(values))], color=color, edgecolor="black", s=22,
                   zorder=3)
        values_drawn += [s.mean, *values]
    ax.set_yticks(range(len(groups)), [_wrap(label) for label in reversed(labels)], fontsize="small")
    ax.set_ylim(-0.6, len(groups) - 0.4)
    ax.grid(axis="x", alpha=0.3)
    ax.axvline(0, color="black", linewidth=0.8)
    return values_drawn, spans


# -- comparisons ----------------------------------------------------------------------------------
def transfer_comparison(source: Any, metric: str | None = None, colors: Mapping[str, Any] | None = None):
    """The final ``metric`` of each experiment's last step: a bar from 0 per experiment (mean), a line for ± one
    sample std, and every seed as a point, in its variant family's colour.

    Experiments that are grid points (``family[examples_per_class=3]``) are grouped by their grid setting: one
    panel per setting, one bar per family in it, sharing the value axis. Default metric: the test metric the
    results table shows (:func:`default_metric`); short names work (``"correlation"``, ``"accuracy"``).
    """
    frame = _results(source)
    metric = frame_metric(frame, metric)
    rows = last_steps(frame)
    rows = rows[rows[metric].notna()]
    if rows.empty:
        raise ValueError(f"no finished experiment has a {metric!r} to plot")
    names = list(dict.fromkeys(rows["name"]))
    colors = _colors_for(frame["name"], colors)
    settings = list(dict.fromkeys(grid_setting(n) for n in names))
    faceted = len(settings) > 1
    panels = [(s, [n for n in names if grid_setting(n) == s]) for s in settings] if faceted else [("", names)]
    lines = [sum(len(_wrap(variant_family(n) if faceted else n).splitlines()) for n in ns) for _, ns in panels]
    fig = _figure(9.0, 0.9 + sum(0.45 * len(ns) + 0.15 * extra + (0.45 if faceted else 0.0)
                                 for (_, ns), extra in zip(panels, lines)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [len(ns) + 0.6 for _, ns in panels]})[:, 0]
    extent: tuple[list, list] = ([], [])
    for ax, (setting, panel_names) in zip(axes, panels):
        values = [rows.loc[rows["name"] == n, metric].astype(float).tolist() for n in panel_names]
        labels = [variant_family(n) for n in panel_names] if faceted else panel_names
        drawn, spans = _bars(ax, labels, values, [colors[variant_family(n)] for n in panel_names])
        extent[0].extend(drawn)
        extent[1].extend(spans)
        if faceted:
            ax.set_title(setting or "(no grid setting)", fontsize="medium", loc="left")
    for ax in axes:
        _value_axis(ax, extent, horizontal=True)
    axes[-1].set_xlabel(metric)
    fig.suptitle(f"{metric} of each experiment's last step\nbar: mean (from 0); line: ± sample std; points: seeds",
                 fontsize="medium")
    return fig


def sweep_line_name(name: str, x: str) -> str:
    """``name`` without the grid entry of ``x``: ``"transfer[examples_per_class=3]"`` -> ``"transfer"``.

    Grid points are named ``name[path=value,...]``; an entry belongs to ``x`` when one path is a dotted
    suffix of the other (``examples_per_class`` and ``dataset.examples_per_class``).
    """
    match = _GRID_LABEL.match(name)
    if not match:
        return name
    base, label = match.groups()
    kept = [e for e in _GRID_ENTRY.split(label) if not _same_path(e.partition("=")[0], x)]
    return f"{base}[{','.join(kept)}]" if kept else base


def _grid_text(name: str, x: str) -> str | None:
    """How ``name``'s grid label writes the value of ``x`` (``"all"`` in ``"...[examples_per_class=all]"``)."""
    for entry in _GRID_ENTRY.split(grid_setting(name)):
        path, _, text = entry.partition("=")
        if _same_path(path, x):
            return text
    return None


def _same_path(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def sweep_fields(frame) -> list[str]:
    """Config columns that some grid label of the names sweeps over (candidates for :func:`sweep_plot`)."""
    config_columns = [c for c in frame.columns if c.split(".")[0] in ("dataset", "model", "trainer")]
    paths = set()
    for name in frame["name"]:
        paths |= {e.partition("=")[0] for e in _GRID_ENTRY.split(grid_setting(name)) if e}
    return [c for c in config_columns if any(_same_path(c, p) for p in paths)]


def _order(values) -> list:
    """Sweep values in order: numbers ascending, then the rest (None, strings ...) as they come."""
    unique = list(dict.fromkeys(values))
    numbers = sorted(v for v in unique if isinstance(v, (int, float)) and not isinstance(v, bool))
    return numbers + [v for v in unique if v not in numbers]


def _tick_label(value, x: str, written: set) -> str:
    """A sweep value as the grid labels write it (``all``), else as itself; a per-class limit of None is all."""
    if len(written) == 1:
        return next(iter(written))
    if value is None and x.endswith("examples_per_class"):
        return "all"
    return str(value)


def sweep_plot(source: Any, x: str, metric: str | None = None, by: str | None = None,
               colors: Mapping[str, Any] | None = None):
    """``metric`` of each experiment's last step against the swept config field ``x`` (a dotted column such
    as ``dataset.examples_per_class``): one line per other setting, mean ± one sample std, seeds as points.

    Lines are named by ``by`` (a column) or, by default, by the experiment name without the grid entry
    of ``x`` (:func:`sweep_line_name`), and drawn in their variant family's colour (lines of one family that
    differ in other grid entries get different line styles). Numeric sweeps use a log axis when they span a
    factor of 10 or more; others (or ones with ``None``, shown as the grid labels write it, e.g. ``all``) are
    placed in order, evenly spaced. The value axis is fitted to the data (points and intervals, no bars).
    """
    frame = _results(source)
    metric = frame_metric(frame, metric)
    if x not in frame.columns:
        raise ValueError(f"no config column {x!r} to sweep over; config columns that differ: "
                         f"{', '.join(c for c in frame.columns if c.split('.')[0] in ('dataset', 'model', 'trainer'))}")
    rows = last_steps(frame)
    rows = rows[rows[metric].notna()]
    if rows.empty:
        raise ValueError(f"no finished experiment has a {metric!r} to plot")
    xs_all = [_plain(v) for v in rows[x]]
    order = _order(xs_all)
    written: dict = {}
    for name, value in zip(rows["name"], xs_all):
        text = _grid_text(name, x)
        if text is not None:
            written.setdefault(value, set()).add(text)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in order)
    position = {v: (float(v) if numeric else i) for i, v in enumerate(order)}
    line_of = rows[by].astype(str).tolist() if by else [sweep_line_name(n, x) for n in rows["name"]]
    lines = list(dict.fromkeys(line_of))
    colors = variant_colors(lines) if by else _colors_for(frame["name"], colors)
    styles, used = {}, {}
    for line in lines:  # the n-th line of a family gets the n-th style
        family = variant_family(line)
        styles[line] = ["-", "--", ":", "-."][used.get(family, 0) % 4]
        used[family] = used.get(family, 0) + 1
    log_axis = numeric and min(order) > 0 and max(order) / min(order) >= 10
    fig = _figure(8.5, 4.5)
    ax = fig.subplots()
    values = rows[metric].astype(float).tolist()
    for k, line in enumerate(lines):
        color = colors[variant_family(line)]
        points: dict = {}
        for lv, xv, v in zip(line_of, xs_all, values):
            if lv == line:
                points.setdefault(xv, []).append(v)
        ordered = [v for v in order if v in points]
        stats = [spread(points[v]) for v in ordered]
        dodge = _seed_offsets(len(lines), 0.06)[k]  # lines side by side at each x, so intervals do not hide
        px = [_dodged(position[v], dodge, numeric, log_axis) for v in ordered]
        ax.plot(px, [s.mean for s in stats], marker="o", color=color, linestyle=styles[line], label=_wrap(line))
        for p, s in zip(px, stats):
            if s.count > 1:
                ax.vlines(p, s.mean - s.std, s.mean + s.std, color=color, linewidth=1.5)
        seeds_x = [_dodged(position[xv], dodge, numeric, log_axis) for lv, xv in zip(line_of, xs_all) if lv == line]
        seeds_y = [v for lv, v in zip(line_of, values) if lv == line]
        ax.scatter(seeds_x, seeds_y, color=color, s=12, alpha=0.5, zorder=3)
    if log_axis:
        ax.set_xscale("log")
    ax.set_xticks([position[v] for v in order], [_tick_label(v, x, written.get(v, set())) for v in order])
    ax.minorticks_off()
    ax.margins(y=0.08)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title("mean ± sample std over seeds; points: seeds", fontsize="medium")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def _dodged(position: float, offset: float, numeric: bool, log_axis: bool) -> float:
    """``position`` moved by ``offset`` of the space between evenly spaced values (a factor on a log axis)."""
    if log_axis:
        return position * 10 ** (offset * 0.25)
    if numeric:  # a linear numeric axis: a fraction of a step is not known; keep the points where they are
        return position
    return position + offset


def _plain(value):
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
    except TypeError:
        pass
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, tuple)) else value


# -- transfer chains ------------------------------------------------------------------------------
def chain_plot(source: Any, metric: str | None = None, colors: Mapping[str, Any] | None = None):
    """What each step of the transfer experiments reached, one panel per step, each on that step's own test set.

    A panel's title names the step's data (the dataset config's comment, or the dataset fields that set the
    step apart) and its value axis the step's metric: ``metric`` where the step reports it, else the step's own
    default (a neural step after a classification step: correlation after accuracy). Bars start at 0 (mean,
    ± one sample std, seeds as points). Experiments that share a step (the same trained entries, e.g. one
    pretraining) share its bar, in grey when they belong to several variant families. Steps are not joined by
    lines: step k and step k+1 measure different things.
    """
    frame = _results(source)
    if metric is not None:
        frame_metric(frame, metric)  # a name no step reports is an error, not a silent default
    done = frame[frame["state"] == "done"]
    chains = [n for n in dict.fromkeys(done["name"]) if done.loc[done["name"] == n, "step"].nunique() > 1]
    if not chains:
        raise ValueError("no finished experiment with more than one step to show as a chain")
    colors = _colors_for(frame["name"], colors)
    done = done[done["name"].isin(chains)]
    steps = sorted(done["step"].unique())
    panels = []
    for step in steps:
        rows = done[done["step"] == step]
        step_metric = _step_metric(rows, metric)
        rows = rows[rows[step_metric].notna()]
        if not rows.empty:
            panels.append((step, step_metric, rows, _shared_bars(rows)))
    height = max(len(bars) for *_, bars in panels)
    fig = _figure(min(4.6 * len(panels) + 1.0, 20.0), 1.6 + 0.55 * height)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (step, step_metric, rows, bars) in zip(axes, panels):
        labels, groups, bar_colors = [], [], []
        for members in bars:
            families = list(dict.fromkeys(variant_family(n) for n in members))
            values = rows.loc[rows["name"] == members[0], step_metric].astype(float).tolist()
            labels.append(members[0] if len(members) == 1 else
                          f"{families[0]} (×{len(members)})" if len(families) == 1 else
                          f"shared by {len(members)}: {'; '.join(families)}")
            groups.append(values)
            bar_colors.append(colors[families[0]] if len(families) == 1 else MIXED_COLOR)
        extent = _bars(ax, labels, groups, bar_colors)
        _value_axis(ax, extent, horizontal=True)
        label = step_data_label(rows, done)
        ax.set_title(_wrap(f"step {step}: {label}" if label else f"step {step}", 40), fontsize="medium", loc="left")
        ax.set_xlabel(step_metric)
    fig.suptitle("transfer chains: each step on its own test set\nbar: mean (from 0); line: ± sample std; "
                 "points: seeds", fontsize="medium")
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


def robustness_plot(source: Any, metric: str = "accuracy", task: str | None = None,
                    colors: Mapping[str, Any] | None = None):
    """``metric`` of each experiment's last step against the standard deviation of the Gaussian noise added to the
    test inputs (pixel units, ``TrainerConfig.noise_robustness``): one line per experiment, the mean over seeds
    with a band of ± one sample std, the seeds as points. ``task``: whose test set (default: the first); ``colors``:
    a colour per experiment name (default: :func:`variant_colors`, one per variant family, as in every figure).
    """
    frame = _results(source)
    columns = noise_columns(frame, metric, task)
    rows = last_steps(frame)
    rows = rows[rows[list(columns.values())].notna().any(axis=1)]
    if rows.empty:
        raise ValueError(f"no finished experiment has robustness results of {metric!r} to plot")
    names = list(dict.fromkeys(rows["name"]))
    colors = _colors_for(names, colors)
    levels = list(columns)
    fig = _figure(8.5, 4.5)
    ax = fig.subplots()
    extent = []
    for name in names:
        group = rows[rows["name"] == name]
        stats = [spread(group[columns[level]].astype(float)) for level in levels]
        means = [s.mean for s in stats]
        ax.plot(levels, means, marker="o", color=colors[variant_family(name)], label=_wrap(name))
        bands = [s.std if s.count > 1 else 0.0 for s in stats]
        if any(bands):
            ax.fill_between(levels, [m - b for m, b in zip(means, bands)], [m + b for m, b in zip(means, bands)],
                            color=colors[variant_family(name)], alpha=0.2, linewidth=0)
        for level in levels:
            values = group[columns[level]].astype(float).tolist()
            ax.scatter([level] * len(values), values, color=colors[variant_family(name)], s=10, alpha=0.5, zorder=3)
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


def _step_metric(rows, metric: str | None) -> str:
    """``metric`` if this step's rows report it, else their default metric."""
    reported = [c for c in rows.columns if (c == "score" or c.startswith("test/")) and rows[c].notna().any()]
    if metric is not None:
        found = resolve_metric(metric, reported)
        if found is not None:
            return found
    return default_metric(reported)


def _shared_bars(rows) -> list[list[str]]:
    """Experiment names grouped by the trained entries they have at this step (the same keys: one bar)."""
    by_entries: dict = {}
    for name in dict.fromkeys(rows["name"]):
        mine = rows[rows["name"] == name]
        ident = frozenset(mine["key_hash"]) if "key_hash" in rows.columns else name
        by_entries.setdefault(ident, []).append(name)
    return list(by_entries.values())


def step_data_label(rows, all_rows) -> str:
    """What a step was trained and tested on: the dataset comment its rows share, or the words their comments
    begin with (``digits 5-9`` of ``digits 5-9, 3 per class`` and ``digits 5-9, all per class``), else the dataset
    fields whose value is the same in all of them and differs elsewhere in ``all_rows``
    (``filter_classes=[5, 6, 7, 8, 9]``; loader settings such as the batch size and the validation split left out)."""
    comments = list(dict.fromkeys(c for c in rows.get("dataset_comment", []) if isinstance(c, str) and c))
    if len(comments) == 1:
        return comments[0]
    if comments:
        words = [c.split() for c in comments]
        common = []
        for column in zip(*words):
            if len(set(column)) > 1:
                break
            common.append(column[0])
        shared = " ".join(common).rstrip(",;:-– ")
        if shared:
            return shared
    loader_settings = {f"dataset.{name}" for name in DatasetConfig.fields()}  # batch size, split: not what the data is
    fields = []
    for column in (c for c in rows.columns if c.startswith("dataset.") and c not in loader_settings):
        here = {repr(_plain(v)) for v in rows[column]}
        everywhere = {repr(_plain(v)) for v in all_rows[column]}
        if len(here) == 1 and len(everywhere) > 1:
            value = _plain(rows[column].iloc[0])
            fields.append(f"{column.removeprefix('dataset.')}={list(value) if isinstance(value, tuple) else value}")
    return ", ".join(fields)


# -- learning curves ------------------------------------------------------------------------------
def learning_curves(source: Any, metrics: Sequence[str] | None = None,
                    modes: Sequence[str] = (TRAINING, VALIDATION), steps: str | int = "last",
                    colors: Mapping[str, Any] | None = None, x: str | None = None):
    """Per-epoch curves as small multiples: one row of panels per metric, one panel per grid setting (experiments
    named ``family[setting]``; else one per variant family), one line per family in its colour, the pass as the
    line style (validation solid, training dashed). Lines are the mean over seeds with a band of ± one sample std;
    panels of a metric share their value axis.

    ``metrics``: default ``loss`` and every metric the trainer tracked (``accuracy``, ``correlation`` ...). A step
    trained on several tasks (a neural recipe's sessions) is drawn as the mean over its tasks per epoch, like its
    early-stopping metric. ``steps``: ``"last"`` (each experiment's last step), ``"all"`` (a panel per step too) or a
    step number. ``x``: ``"epoch"`` or ``"optimizer_steps"``; by default optimizer steps where some run evaluated
    several times per epoch (``eval_every_steps``), else epochs. The final evaluation of the restored best
    parameters is not drawn as a jump.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    history = _history(source)
    tracked = history[history["mode"].isin(modes) & history["epoch"].notna() & ~history["final"].astype(bool)
                      & (history["task"] != "all")]
    if metrics is None:
        metrics = ["loss", *(m for m in dict.fromkeys(tracked["metric"]) if m not in ("loss", "regularizer", "lr"))]
    history = tracked[tracked["metric"].isin(metrics)]
    if history.empty:
        raise ValueError(f"no per-epoch history of {list(metrics)} in modes {list(modes)} to plot "
                         "(only nntransfer's trainer records one)")
    if steps == "last":
        history = history[history["step"] == history.groupby("name")["step"].transform("max")]
    elif steps != "all":
        history = history[history["step"] == int(steps)]
    colors = _colors_for(history["name"], colors)
    if x is None:
        x = "optimizer_steps" if _several_per_epoch(history) else "epoch"
    elif x not in ("epoch", "optimizer_steps"):
        raise ConfigError(f"learning_curves(x={x!r}): x is 'epoch' or 'optimizer_steps'")
    history = history[history[x].notna()]
    # one value per seed, pass and x: the mean over the tasks (a repeated epoch of outputs stored before the final
    # passes were kept apart is the restored-best evaluation: the first value is the one measured in training)
    history = history.drop_duplicates(["name", "seed", "step", "mode", "task", "metric", x], keep="first")
    history = history.groupby(["name", "seed", "step", "mode", "metric", x], as_index=False, sort=False).agg(
        value=("value", "mean"), tasks=("task", "nunique"))
    names = list(dict.fromkeys(history["name"]))
    by_setting = any(grid_setting(n) for n in names)
    multi_step = steps == "all" and history["step"].nunique() > 1

    def facet(name: str, step: int) -> str:
        label = (grid_setting(name) or "(no grid setting)") if by_setting else variant_family(name)
        return f"{label} · step {step}" if multi_step else label

    history = history.assign(facet=[facet(n, s) for n, s in zip(history["name"], history["step"])])
    facets = list(dict.fromkeys(history["facet"]))
    present = [m for m in metrics if m in set(history["metric"])]
    columns = min(len(facets), PANEL_COLUMNS)
    facet_rows = math.ceil(len(facets) / columns)
    fig = _figure(3.4 * columns + 2.8, 2.6 * len(present) * facet_rows + 0.8)
    axes = fig.subplots(len(present) * facet_rows, columns, squeeze=False)
    several_tasks = int(history["tasks"].max()) > 1
    for m, metric in enumerate(present):
        first = None
        for f, facet_name in enumerate(facets):
            ax = axes[m * facet_rows + f // columns][f % columns]
            if first is None:
                first = ax
            else:
                ax.sharey(first)
            part = history[(history["metric"] == metric) & (history["facet"] == facet_name)]
            for name in dict.fromkeys(part["name"]):
                for mode in modes:
                    _curve(ax, part[(part["name"] == name) & (part["mode"] == mode)], x,
                           colors[variant_family(name)], MODE_STYLES.get(mode, "-."))
            ax.set_title(_wrap(facet_name, 36), fontsize="small")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if f % columns == 0:
                ax.set_ylabel(f"{metric} (mean over tasks)" if several_tasks else metric)
            ax.set_xlabel("optimizer steps" if x == "optimizer_steps" else "epoch")
        for f in range(len(facets), facet_rows * columns):  # empty places in the last row of panels
            axes[m * facet_rows + f // columns][f % columns].set_visible(False)
    families = list(dict.fromkeys(variant_family(n) for n in names))
    handles = [Line2D([], [], color=colors[fam], linewidth=2.5, label=_wrap(fam)) for fam in families]
    handles += [Line2D([], [], color="black", linestyle=MODE_STYLES.get(mode, "-."), label=mode.lower())
                for mode in modes]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small",
               title="mean ± sample std over seeds", title_fontsize="small")
    return fig


def _several_per_epoch(history) -> bool:
    """Whether some run evaluated more than once in an epoch (its epochs repeat where its optimizer steps do not)."""
    if history["optimizer_steps"].isna().any():
        return False
    series = history.groupby(["name", "seed", "step", "mode", "task", "metric"], sort=False)
    return bool((series["epoch"].nunique() < series["optimizer_steps"].nunique()).any())


def _curve(ax, series, x: str, color, linestyle: str) -> None:
    if series.empty:
        return
    epochs, means, lows, highs = [], [], [], []
    for epoch, group in series.groupby(x):
        s = spread(group["value"])
        band = s.std if s.count > 1 else 0.0
        epochs.append(epoch)
        means.append(s.mean)
        lows.append(s.mean - band)
        highs.append(s.mean + band)
    ax.plot(epochs, means, color=color, linestyle=linestyle, linewidth=1.5)
    if any(h > lo for lo, h in zip(lows, highs)):
        ax.fill_between(epochs, lows, highs, color=color, alpha=0.15, linewidth=0)


def plot(source: Any, path: str | os.PathLike, metric: str | None = None) -> Path:
    """Save :func:`transfer_comparison` to ``path`` (format from the suffix: .png, .svg, .pdf ...)."""
    path = Path(path)
    transfer_comparison(source, metric).savefig(path)
    return path


__all__ = ["chain_plot", "grid_setting", "learning_curves", "noise_columns", "plot", "robustness_plot", "step_data_label",
           "sweep_fields", "sweep_line_name", "sweep_plot", "transfer_comparison", "variant_colors", "variant_family"]
