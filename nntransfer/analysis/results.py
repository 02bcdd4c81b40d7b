"""Results of recipes and experiments: summary rows, tables, data frames and plots."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..recipes.plan import Target, plan, states


def summary(targets: list[Target]) -> list[dict]:
    """One row per target: name, seed, step, state, score and the test metrics the trainer reported."""
    current = states(targets, outputs=True)
    rows = []
    for t in targets:
        s = current[t]
        row = {"name": t.description.name, "seed": t.description.seed, "step": t.step, "state": s["state"],
               "score": s.get("score")}
        row.update(_test_metrics(s.get("output")))
        if s["state"] == "error":
            row["error"] = (s.get("error") or "")[:80]
        rows.append(row)
    return rows


def _test_metrics(output: Any) -> dict:
    """Flatten ``output["test"]`` (``{test_key: {metric: value}}``) into ``test/<key>/<metric>`` columns."""
    if not isinstance(output, dict) or not isinstance(output.get("test"), dict):
        return {}
    flat = {}
    for test_key, metrics in output["test"].items():
        if isinstance(metrics, dict):
            for metric, value in metrics.items():
                if isinstance(value, (int, float)):
                    flat[f"test/{test_key}/{metric}"] = value
        elif isinstance(metrics, (int, float)):
            flat[f"test/{test_key}"] = metrics
    return flat


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no experiments)"
    columns = list(dict.fromkeys(c for row in rows for c in row))

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(cell(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: str | os.PathLike, metric: str = "score") -> Path:
    """Bar plot of ``metric`` per experiment and step (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict = {}
    for r in rows:
        if r.get(metric) is not None:
            groups.setdefault(f"{r['name']} (step {r['step']})", []).append(r[metric])
    if not groups:
        raise ValueError(f"no finished experiment has a {metric!r} to plot")
    labels = list(groups)
    means = [float(np.mean(groups[label])) for label in labels]
    stds = [float(np.std(groups[label])) for label in labels]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} (mean ± std over seeds)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def results_frame(experiments: Any):
    """Summary rows of experiments (dict ``Description -> experiment``, or a recipe path) as a pandas DataFrame."""
    import pandas as pd

    from ..recipes.load import load_recipe, normalize

    if isinstance(experiments, (str, os.PathLike)):
        experiments = load_recipe(experiments)
    return pd.DataFrame(summary(plan(normalize(experiments))))


def compare(frame, metric: str = "score"):
    """Mean, std and count of ``metric`` per experiment name and step (finished runs only)."""
    done = frame[frame["state"] == "done"]
    return done.groupby(["name", "step"])[metric].agg(["mean", "std", "count"]).reset_index()


def comparison(rows: list[dict], metric: str | None = None) -> list[dict]:
    """The last step of each experiment name, ``metric`` (default: the first test metric, else score)
    as mean ± std over seeds."""
    import numpy as np

    done = [r for r in rows if r["state"] == "done"]
    if metric is None:
        tests = [c for r in done for c in r if c.startswith("test/") and c.endswith("/accuracy")]
        metric = tests[0] if tests else "score"
    last_step: dict = {}
    for r in done:
        last_step[r["name"]] = max(last_step.get(r["name"], 0), r["step"])
    groups: dict = {}
    for r in done:
        if r["step"] == last_step[r["name"]] and r.get(metric) is not None:
            groups.setdefault(r["name"], []).append(r[metric])
    return [{"name": name, metric: f"{np.mean(v):.4f} ± {np.std(v):.4f}", "seeds": len(v)}
            for name, v in groups.items()]
