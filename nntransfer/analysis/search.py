"""Searches as data, text and figures: the trials of a study as a data frame, its status as text, and Optuna's
matplotlib plots (optimisation history, parallel coordinates, slices, parameter importances, intermediate values)
for the report.

Optuna's plots use pyplot and set a style sheet; here they run inside ``matplotlib.rc_context()`` and their figures
are closed once saved, so the other plots and a notebook's settings stay as they were.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

from ..orchestration.plan import plan, states, test_metrics
from ..orchestration.recipes import load_recipe, normalize
from ..orchestration.search import (
    SearchStatus,
    load_study,
    recipe_snippet,
    search_status,
    set_overrides,
    studies_of,
    trial_records,
)
from .text import format_table

TRIAL_COLUMNS = ["study", "trial", "name", "state"]


def studies(source: Any) -> list[str]:
    """The study names ``source`` means: a study name, a list of them, a recipe file, or experiments."""
    if isinstance(source, str) and not Path(source).exists():
        return [source]
    if isinstance(source, (list, tuple)) and all(isinstance(s, str) for s in source):
        return list(source)
    experiments = load_recipe(source) if isinstance(source, (str, os.PathLike)) else normalize(source)
    return studies_of(experiments)


def search_frame(source: Any):
    """One row per trial of the studies of ``source`` (a study name, a recipe file, or experiments).

    Columns: ``study, trial, name, state`` (complete, pruned, running, waiting, failed, or retried: failed and
    queued again), the searched metric (e.g. ``score``: the validation score the trial was selected on), every
    searched path with its value, ``epochs_reported`` (evaluations Optuna heard of), ``trained`` (steps this trial
    trained; 0: reused a stored result), ``duration`` (seconds), the test metrics of its result (``test/...``,
    reported next to the search, never used to select) and ``error``.
    """
    import pandas as pd

    rows, paths, metrics = [], {}, {}
    for name in studies(source):
        spec, study = load_study(name)
        records = trial_records(spec, study)
        targets = plan({r.description: r.experiment for r in records})
        last = {t.description: t for t in targets if t.step == len(spec.experiment.steps) - 1}
        found = states(list(last.values()), outputs=True) if last else {}
        metrics[spec.metric] = None
        for r in records:
            target = last[r.description]
            tests = test_metrics(found[target].get("output")) if found[target]["state"] == "done" else {}
            paths.update(dict.fromkeys(r.values))
            row = {"study": name, "trial": r.number, "name": r.description.name, "state": r.state,
                   spec.metric: r.value, **r.values, "epochs_reported": len(r.intermediate),
                   "trained": r.user_attrs.get("trained"), "duration": r.duration, **tests,
                   "error": r.user_attrs.get("error", "")}
            rows.append(row)
    tests = list(dict.fromkeys(c for row in rows for c in row if c.startswith("test/")))
    columns = [*TRIAL_COLUMNS, *metrics, *paths, "epochs_reported", "trained", "duration", *tests, "error"]
    frame = pd.DataFrame(rows, columns=columns)
    for path in paths:  # config values as configured (lists stay lists, ints stay ints)
        frame[path] = pd.Series([row.get(path) for row in rows], index=frame.index, dtype=object)
    return frame


def format_status(status: SearchStatus, recipe: str | None = None) -> str:
    """The text ``nntransfer search --status`` prints: the trials by state, the best so far (its test metrics
    apart) and its configuration as ``--set`` overrides and as a recipe snippet."""
    import shlex

    counts = status.counts
    lines = [f"study {status.study} ({status.storage}): {status.direction} {status.metric}",
             f"trials: {counts['counted']} of {status.n_trials} started: {counts['complete']} complete, "
             f"{counts['pruned']} pruned, {counts['running']} running, {counts['waiting']} waiting, "
             f"{counts['failed']} failed" + (f" ({counts['retried']} interrupted and retried)"
                                             if counts["retried"] else "")]
    best = status.best
    if best is None:
        lines.append("no complete trial yet")
        return "\n".join(lines)
    lines.append(f"best trial {best.number}: {status.metric} = {best.value:.6g}")
    tests = _best_tests(status)
    if tests:
        shown = ", ".join(f"{k} = {v:.4g}" for k, v in tests.items())
        lines.append(f"  its test metrics (reported, not used to select): {shown}")
    lines.append("  configuration:")
    lines += [f"    {path} = {value!r}" for path, value in best.values.items()]
    overrides = " ".join(f"--set {shlex.quote(o)}" for o in set_overrides(best.values))
    lines.append(f"as overrides:\n  nntransfer run {shlex.quote(str(recipe or status.spec.recipe or 'RECIPE'))} "
                 f"{overrides}")
    lines.append("in a recipe:\n" + "\n".join(f"  {line}" for line in recipe_snippet(status.spec, best).splitlines()))
    return "\n".join(lines)


def search_line(study_name: str, recipe: str | os.PathLike) -> str:
    """One line on a study for ``nntransfer status``: its trials by state and its best value so far."""
    status = search_status(study_name)
    counts = status.counts
    best = (f"; best trial {status.best.number}: {status.metric} = {status.best.value:.4g}"
            if status.best is not None else "")
    return (f"search {study_name}: {counts['counted']} of {status.n_trials} trials started ({counts['complete']} "
            f"complete, {counts['pruned']} pruned, {counts['running']} running, {counts['failed']} failed){best}; "
            f"details: nntransfer search {recipe} --status")


def _best_tests(status: SearchStatus) -> dict:
    """The test metrics of the best trial's result, from the tables (the study keeps a copy)."""
    best = status.best
    last = [t for t in plan({best.description: best.experiment}) if t.step == len(best.experiment.steps) - 1]
    found = states(last, outputs=True)[last[0]]
    return test_metrics(found.get("output")) if found["state"] == "done" else dict(best.user_attrs.get("test", {}))


def trials_table(status: SearchStatus) -> str:
    """The trials as a text table (number, state, value, configuration)."""
    rows = [{"trial": r.number, "state": r.state, status.metric: r.value, **{p: _short(v) for p, v in r.values.items()}}
            for r in status.trials]
    return format_table(rows)


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


# -- figures -----------------------------------------------------------------------------------------
PLOTS = (
    ("optimization_history", "plot_optimization_history", "the searched metric of every trial and the best so far"),
    ("intermediate_values", "plot_intermediate_values", "validation during training of every trial (pruned trials "
                                                        "end early)"),
    ("parallel_coordinate", "plot_parallel_coordinate", "the configuration of every complete trial and its value"),
    ("slice", "plot_slice", "the searched metric against each searched value"),
    ("param_importances", "plot_param_importances", "how much each searched path explains the metric (fANOVA)"),
)


def search_figures(study_name: str, directory: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Save Optuna's plots of a study as PNGs in ``directory``; returns ``[(file or "", caption, note)]`` (a plot
    that cannot be drawn yet, e.g. importances before two complete trials, has no file and a note why)."""
    from optuna.visualization import matplotlib as optuna_plots

    spec, study = load_study(study_name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    out = []
    for slug, function, caption in PLOTS:
        filename = f"search_{_slug(study_name)}_{slug}.png"
        needed = 2 if slug == "param_importances" else 1
        if slug != "intermediate_values" and len(complete) < needed:
            out.append(("", caption, f"needs {needed} complete trial(s)"))
            continue
        if slug == "intermediate_values" and not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            out.append(("", caption, "no trial reported evaluations yet"))
            continue
        kwargs = {} if slug == "intermediate_values" else {"target_name": spec.metric}
        try:
            _save(functools.partial(getattr(optuna_plots, function), study, **kwargs), directory / filename,
                  width=3.4 * len(spec.space) if slug == "slice" else 0.0)  # a panel per path, long names
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            out.append(("", caption, str(err).splitlines()[0] if str(err) else type(err).__name__))
            continue
        out.append((filename, caption, ""))
    return out


def _save(draw, path: Path, width: float = 0.0) -> None:
    """Draw with Optuna (pyplot, a style sheet) without changing matplotlib's settings; save and close the figure."""
    import matplotlib
    import optuna

    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        import matplotlib.pyplot as plt

        axes = draw()
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = first.get_figure()
        try:
            if width > figure.get_size_inches()[0]:
                figure.set_size_inches(width, figure.get_size_inches()[1])
            figure.savefig(path, dpi=100, bbox_inches="tight")  # long parameter names stay inside the image
        finally:
            plt.close(figure)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def report_section(study_name: str, directory: str | os.PathLike, escape) -> list[str]:
    """The report's HTML for one study: status, Optuna's figures and a table of the trials."""
    status = search_status(study_name)
    counts = status.counts
    parts = [f"<h2>Search: {escape(study_name)}</h2>",
             f"<p class='note'>{escape(status.direction)} {escape(status.metric)} (validation) over "
             f"{len(status.spec.space)} path(s); {counts['counted']} of {status.n_trials} trials started: "
             f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['running']} running, "
             f"{counts['failed']} failed. Study storage: <code>{escape(status.storage)}</code>.</p>"]
    if status.best is not None:
        tests = _best_tests(status)
        shown = ", ".join(f"{k} = {v:.4g}" for k, v in tests.items())
        parts.append(f"<p>Best trial {status.best.number}: {escape(status.metric)} = {status.best.value:.6g}"
                     + (f"; its test metrics (reported, not used to select): {escape(shown)}" if shown else "")
                     + "</p><pre>" + escape(" ".join(f"--set {o}" for o in set_overrides(status.best.values)))
                     + "</pre>")
    for filename, caption, note in search_figures(study_name, directory):
        if filename:
            parts.append(f"<figure><img src='{escape(filename)}' alt='{escape(caption)}'>"
                         f"<figcaption>{escape(caption)}</figcaption></figure>")
        else:
            parts.append(f"<p class='note'>{escape(caption)}: {escape(note)}</p>")
    frame = search_frame(study_name)
    parts.append("<div class='scroll'>" + frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                                        border=0) + "</div>")
    return parts


__all__ = ["format_status", "report_section", "search_figures", "search_frame", "search_line", "studies",
           "trials_table"]
