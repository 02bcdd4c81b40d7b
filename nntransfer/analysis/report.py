"""An HTML report of a recipe's results: tables and figures in one folder, opened from disk.

``write_report(source, directory)`` writes PNG figures and an ``index.html`` that references them by
relative path and carries its own styles: no server, no network, no scripts. It holds the comparison
of the experiments (mean ± sample std, n), the comparison plot, a sweep plot for every config field that
the experiment names sweep over (grid labels ``name[field=value]``), the chain view of transfer
experiments, learning curves, the robustness evaluation (metric against test-time noise level, corruption test
sets), the results table, the provenance of the results (one line per distinct set of versions, commit, host and
device), any errors, and a section per search around the experiments (Optuna's plots and a table of the trials).
Every figure draws a variant family in the same colour.
"""
from __future__ import annotations

import datetime
import html
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .frames import entries, frame_metric, history_frame, last_steps, results_frame
from .plots import (chain_plot, learning_curves, robustness_plot, sweep_fields, sweep_line_name, sweep_plot,
                    transfer_comparison, variant_colors)
from .search import report_section as search_section
from .search import studies as search_studies
from .stats import format_spread, spread

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; } .note { color: #666; font-size: 0.9rem; }
.scroll { overflow-x: auto; } code { background: #f4f4f4; padding: 0 0.2rem; }
"""

PROVENANCE_COLUMNS = ["name", "seed", "step", "nntransfer_version", "torch_version", "torchvision_version",
                      "datajoint_version", "numpy_version", "git_commit", "git_dirty", "host", "device", "wall_time"]
# what made a result (the rows that share all of these are one line of the provenance table)
PROVENANCE_GROUP = PROVENANCE_COLUMNS[3:-1]


def write_report(source: Any, directory: str | os.PathLike, title: str | None = None,
                 metric: str | None = None, studies: Sequence[str] | None = None) -> Path:
    """Write figures and ``index.html`` for ``source`` (a recipe, experiments or a query) into ``directory``.

    Returns the path of ``index.html``. ``metric`` defaults to the test metric the results table shows.
    ``studies``: searches to add a section for (Optuna's plots and a table of the trials); default: the studies
    that search around the experiments of a recipe or experiments ``source``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if title is None:
        title = Path(source).stem if isinstance(source, (str, os.PathLike)) else "nntransfer results"
    found = entries(source)
    frame = results_frame(found)
    history = history_frame(found)
    metric = frame_metric(frame, metric)
    colors = variant_colors(frame["name"])  # one colour per variant family in every figure
    sections = [f"<h1>{_e(title)}</h1>",
                f"<p class='note'>Written {datetime.datetime.now():%Y-%m-%d %H:%M} by nntransfer. "
                f"Spread: mean ± sample standard deviation (ddof=1) over seeds, with the count n.</p>"]
    sections += _comparison_section(frame, metric)
    figures = []
    figures.append(_figure(directory, "comparison.png", lambda: transfer_comparison(frame, metric, colors),
                           f"{metric} of each experiment's last step"))
    for field in sweep_fields(frame):
        rows = last_steps(frame)
        lines = {sweep_line_name(n, field) for n in rows["name"]}
        if len(lines) < len(set(rows["name"])):  # some line has more than one point: a real sweep
            figures.append(_figure(directory, f"sweep_{_slug(field)}.png",
                                   lambda f=field: sweep_plot(frame, f, metric, colors=colors),
                                   f"{metric} against {field}"))
    if (frame[frame["state"] == "done"].groupby("name")["step"].nunique() > 1).any():
        figures.append(_figure(directory, "chain.png", lambda: chain_plot(frame, metric, colors),
                               "each step of the transfer experiments, on its own test set"))
    if not history.empty:
        figures.append(_figure(directory, "learning_curves.png", lambda: learning_curves(history, colors=colors),
                               "learning curves of each experiment's last step"))
    sections.append("<h2>Figures</h2>")
    sections += figures
    sections += _robustness_section(directory, frame, found, colors)
    sections.append("<h2>Results</h2>")
    shown = [c for c in frame.columns if c not in PROVENANCE_COLUMNS[3:] and c not in ("recipe", "git_repository",
                                                                                         "python_version", "table")]
    sections.append(_table(frame[shown]))
    sections.append("<h2>Provenance</h2>")
    sections.append(_provenance(frame))
    if "error" in frame.columns and frame["error"].astype(bool).any():
        sections.append("<h2>Errors</h2>")
        failed = frame[frame["error"].astype(bool)][["name", "seed", "step", "error"]]
        sections.append(_table(failed))
    if studies is None and isinstance(source, (str, os.PathLike, Mapping)):  # a recipe or experiments
        studies = search_studies(source)
    for study in studies or ():
        sections += search_section(study, directory, _e)
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")
    index = directory / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _comparison_section(frame, metric: str) -> list[str]:
    rows = last_steps(frame)
    if rows.empty or metric not in rows.columns:
        return ["<p class='note'>No experiment has finished yet.</p>"]
    data = [(name, format_spread(spread(group[metric]))) for name, group in rows.groupby("name", sort=False)]
    body = "".join(f"<tr><td>{_e(n)}</td><td>{_e(v)}</td></tr>" for n, v in data)
    return ["<h2>Comparison</h2>",
            f"<table><tr><th>experiment (last step)</th><th>{_e(metric)}</th></tr>{body}</table>"]


def _robustness_section(directory: Path, frame, found, colors) -> list[str]:
    """The robustness evaluation (``TrainerConfig.noise_robustness``): a plot of test accuracy (else the first metric)
    against the noise level per task, and the corruption test sets of the last steps (mean ± std over seeds)."""
    out = []
    metrics = list(dict.fromkeys(str(c).rsplit("/", 1)[-1] for c in frame.columns if str(c).startswith("noise/")))
    if metrics:
        metric = "accuracy" if "accuracy" in metrics else metrics[0]
        tasks = list(dict.fromkeys(str(c).split("/")[1] for c in frame.columns if str(c).startswith("noise/")))
        for task in tasks:
            label = f" ({task})" if len(tasks) > 1 else ""
            out.append(_figure(directory, f"robustness_{_slug(task)}.png",
                               lambda t=task: robustness_plot(frame, metric, t, colors=colors),
                               f"{metric} of each experiment's last step under Gaussian noise on the test inputs"
                               f"{label}"))
    corrupted = list(dict.fromkeys(name for e in found if isinstance(e.output, dict)
                                   for name in ((e.output.get("robustness") or {}).get("corruptions") or {})))
    rows = last_steps(frame)
    columns = [c for name in corrupted for c in frame.columns if str(c).startswith(f"test/{name}/")]
    if columns and not rows.empty:
        header = "".join(f"<th>{_e(c[len('test/'):])}</th>" for c in columns)
        body = "".join(f"<tr><td>{_e(name)}</td>" + "".join(
            f"<td>{_e(format_spread(spread(group[c])))}</td>" for c in columns) + "</tr>"
                       for name, group in rows.groupby("name", sort=False))
        out.append(f"<p class='note'>Corruption test sets (last steps; mean ± sample std over seeds)</p>"
                   f"<div class='scroll'><table><tr><th>experiment</th>{header}</tr>{body}</table></div>")
    return (["<h2>Robustness</h2>"] + out) if out else []


def _figure(directory: Path, filename: str, make, caption: str) -> str:
    try:
        fig = make()
    except ValueError as err:  # nothing of this kind to plot (e.g. no history): say so in the report
        return f"<p class='note'>{_e(caption)}: {_e(err)}</p>"
    fig.savefig(directory / filename, dpi=100)
    return (f"<figure><img src='{_e(filename)}' alt='{_e(caption)}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _provenance(frame) -> str:
    """One line per distinct provenance (versions, commit, host, device): how many results (trained entries) it
    made, of which experiments, and their total wall time; results not trained yet have none."""
    import pandas as pd

    done = frame[frame["state"] == "done"] if "state" in frame.columns else frame
    if "key_hash" in done.columns:  # a step shared by several experiments (one pretraining) is one result
        done = done.drop_duplicates("key_hash")
    group = [c for c in PROVENANCE_GROUP if c in done.columns]
    if done.empty or not group:
        return "<p class='note'>No finished result yet.</p>"
    lines = []
    keys = done[group].astype(object).where(done[group].notna(), None)  # NaN and None alike: one group
    idents = pd.Series([tuple(r) for r in keys.itertuples(index=False)], index=done.index)
    for ident in dict.fromkeys(idents):
        rows = done[[i == ident for i in idents]]  # not idents == ident: pandas would compare a tuple by element
        line = dict(zip(group, ident))
        if isinstance(line.get("git_commit"), str):
            line["git_commit"] = line["git_commit"][:10]
        names = list(dict.fromkeys(rows["name"]))
        line["results"] = len(rows)
        line["experiments"] = ", ".join(names[:6]) + (f" … ({len(names)} in all)" if len(names) > 6 else "")
        if "wall_time" in rows.columns:
            line["wall_time (s, total)"] = float(pd.to_numeric(rows["wall_time"], errors="coerce").sum())
        lines.append(line)
    return _table(pd.DataFrame(lines))


def _table(frame) -> str:
    return "<div class='scroll'>" + frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4f}",
                                                  border=0) + "</div>"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


__all__ = ["write_report"]
