"""Results as data frames: one row per trained entry and step, and the per-epoch history in long format.

Both frames take any of

* a recipe file (``"recipes/sweep.py"``, YAML/JSON too) or experiments (dict ``Description -> experiment``,
  a list, one experiment): rows in the recipe's order, with their names and seeds, pending ones too, then the
  trials of searches around them (``<name> trial <n>``; a pruned trial's state is ``pruned``);
* a DataJoint query of ``TrainedModel`` or ``TransferredTrainedModel``, e.g. ``TrainedModel & "seed = 1"``
  or the table class itself: every trained entry it holds. These rows are named by their comment (the
  configs' comments joined by ".") or, without one, by the start of their key hash.

The analysis reads the plan (which table rows a recipe needs) and the tables, never the workers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import datajoint as dj

from ..core.compat import make_hash
from ..core.config import BaseConfig, is_key_field
from ..core.keys import key_ident
from ..errors import ConfigError
from ..orchestration.plan import TRAINED, TRANSFERRED, Target, by_table, plan, states, test_metrics
from ..orchestration.recipes import load_recipe, normalize
from ..orchestration.search import trial_experiments
from ..store import table as store_table
from ..store.trained_model import PROVENANCE_COLUMNS
from .stats import spread

# modes of the trainer's tracker (nntransfer.trainer.trainer)
TRAINING, VALIDATION, TEST = "Training", "Validation", "Test"

HISTORY_COLUMNS = ["name", "seed", "step", "mode", "task", "metric", "epoch", "value", "final", "optimizer_steps"]


@dataclass
class Entry:
    """One trained (or planned) entry: a step of a named experiment, its state and what the tables hold."""

    name: str
    seed: int
    step: int
    table: str
    key: dict
    state: str = "pending"
    score: float | None = None
    output: Any = None
    error: str = ""
    configs: dict = field(default_factory=dict)  # dotted config field -> value (key fields only)
    comments: dict = field(default_factory=dict)  # "dataset" | "model" | "trainer" -> the config's comment
    provenance: dict = field(default_factory=dict)

    @property
    def key_hash(self) -> str:
        return make_hash(dict(self.key))


# -- collecting entries ---------------------------------------------------------------------------
def entries(source: Any) -> list[Entry]:
    """The entries of a recipe file, experiments, targets of a plan, or a query of a trained-model table."""
    if isinstance(source, list) and source and all(isinstance(e, Entry) for e in source):
        return source  # already collected (e.g. by write_report, for both frames)
    if _is_query(source):
        return _query_entries(source)
    if isinstance(source, list) and source and all(isinstance(t, Target) for t in source):
        return target_entries(source)
    experiments = load_recipe(source) if isinstance(source, (str, os.PathLike)) else normalize(source)
    trials, records = trial_experiments(experiments)  # the trials of searches around these experiments
    experiments = {**experiments, **trials}
    steps = {}
    for desc, exp in experiments.items():
        for level, step in enumerate(exp.steps):
            steps[(desc, level)] = step
    targets = plan(experiments)
    found = target_entries(targets)
    for target, entry in zip(targets, found):
        configs = steps[(target.description, target.step)].configs
        entry.configs = _flat_configs({part: _key_values(cfg) for part, cfg in configs.items()})
        entry.comments = {part: cfg.comment for part, cfg in configs.items()}
        record = records.get(target.description)
        if record is not None and record.state == "pruned" and entry.state != "done":
            entry.state = "pruned"  # stopped by the search's pruner: its job waits, released with its checkpoint
    return found


def target_entries(targets: list[Target]) -> list[Entry]:
    """Entries of a plan's targets with their state, score, output and provenance (configs not filled)."""
    current = states(targets, outputs=True)
    prov = {}
    for table, chosen in by_table(targets):
        keys = [t.key for t in chosen if current[t]["state"] == "done"]
        prov[table.__name__] = _by_ident(table, keys) if keys else {}
    out = []
    for t in targets:
        s = current[t]
        out.append(Entry(t.description.name, t.description.seed, t.step, t.table, dict(t.key), s["state"],
                         s.get("score"), s.get("output"), s.get("error") or "",
                         provenance=prov[t.table].get(key_ident(t.key), {})))
    return out


def _by_ident(table, keys) -> dict:
    return {key_ident(r): _provenance(r) for r in (table.Provenance & keys).to_dicts()}


def _provenance(row: dict) -> dict:
    found = {c: row[c] for c in PROVENANCE_COLUMNS}
    found["git_dirty"] = None if found["git_dirty"] is None else bool(found["git_dirty"])  # stored as 0/1
    return found


def _is_query(source: Any) -> bool:
    return isinstance(source, dj.expression.QueryExpression) or (
        isinstance(source, type) and issubclass(source, dj.Table))


def _query_entries(query) -> list[Entry]:
    if isinstance(query, type):
        query = query()
    for table_name in (TRANSFERRED, TRAINED):
        table = store_table(table_name)
        if isinstance(query, table):
            break
    else:
        raise TypeError("results_frame/history_frame take a recipe, experiments, or a query of TrainedModel or "
                        f"TransferredTrainedModel (e.g. TrainedModel & 'seed = 1'), not {type(query).__name__}")
    pk = table.primary_key
    configs, comments = {}, {}
    for part in ("dataset", "model", "trainer"):
        for row in (store_table(part.capitalize()) & query).to_dicts():
            ident = (part, row[f"{part}_fn"], row[f"{part}_hash"])
            configs[ident] = _stored_key_values(part, row[f"{part}_config"])
            comments[ident] = row.get(f"{part}_comment") or ""
    prov = {key_ident(r): _provenance(r) for r in (table.Provenance & query).to_dicts()}
    out = []
    for row in query.proj("score", "output", "comment").to_dicts(order_by=list(pk)):
        key = {a: row[a] for a in pk}
        entry = Entry(row["comment"] or f"{table_name}:{make_hash(key)[:8]}", int(row["seed"]),
                      int(row.get("transfer_step", 0)), table_name, key, "done", row["score"], row["output"])
        idents = {part: (part, row[f"{part}_fn"], row[f"{part}_hash"]) for part in ("dataset", "model", "trainer")}
        entry.configs = _flat_configs({part: configs.get(ident, {}) for part, ident in idents.items()})
        entry.comments = {part: comments.get(ident, "") for part, ident in idents.items()}
        entry.provenance = prov.get(key_ident(row), {})
        out.append(entry)
    return out


# -- configs as dotted columns --------------------------------------------------------------------
def _key_values(cfg) -> dict:
    keyed = set(cfg.key_fields())
    return {name: value for name, value in cfg.to_dict().items() if name in keyed}


def _run_field_names(part: str) -> set[str]:
    """Names of run fields (never hashed) declared by any config class of this part (``dataset`` ...)."""
    names, stack = {"comment"}, [BaseConfig]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(cls, "config_name", "") == part:
            names |= {f.name for f in cls.fields().values() if not is_key_field(f)}
    return names


def _stored_key_values(part: str, config: dict) -> dict:
    run_fields = _run_field_names(part)
    return {name: value for name, value in dict(config).items() if name not in run_fields}


def _flat_configs(parts: dict) -> dict:
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, dict):
            return  # an empty dict adds no column
        else:
            flat[prefix] = _hashable(value)

    for part, values in parts.items():
        walk(part, values)
    return flat


def _hashable(value):
    import numpy as np

    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def differing_configs(found: list[Entry]) -> list[str]:
    """Dotted config fields whose value is not the same in every entry, in first-seen order."""
    missing = object()
    names = list(dict.fromkeys(name for e in found for name in e.configs))
    return [n for n in names if len({repr(e.configs.get(n, missing)) for e in found}) > 1]


# -- frames ---------------------------------------------------------------------------------------
def robustness_metrics(output: Any) -> dict:
    """``output["robustness"]["noise"]`` (``TrainerConfig.noise_robustness``: ``{task: {level: {metric: value}}}``) as
    ``noise/<task>/<level>/<metric>`` columns, levels in the order tested."""
    robustness = output.get("robustness") if isinstance(output, dict) else None
    if not isinstance(robustness, dict) or not isinstance(robustness.get("noise"), dict):
        return {}
    flat = {}
    for task, levels in robustness["noise"].items():
        for level, metrics in levels.items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)):
                    flat[f"noise/{task}/{level}/{metric}"] = value
    return flat


def results_frame(source: Any):
    """One row per trained entry and step (pandas DataFrame).

    Columns: ``name, seed, step, state, score``, every test metric (``test/<task>/<metric>``, and
    ``test/<metric>``, the mean over the trained tasks, when there are several: :func:`test_metrics`), the test metrics
    under noise of the robustness evaluation (``noise/<task>/<level>/<metric>``, ``TrainerConfig.noise_robustness``),
    ``epochs, best_epoch, wall_time`` (seconds), ``dataset_comment`` (the dataset config's comment, which
    plots use to say what a step was trained and tested on), the config fields that differ between the rows (dotted
    names such as ``trainer.optimizer_options.lr``), the provenance (versions, ``git_commit``,
    ``git_dirty``, ``host``, ``device`` ...), ``error`` when a row failed, and ``table`` and ``key_hash``
    (the entry's table and the hash of its key, which names its TensorBoard directory).
    """
    import pandas as pd

    found = entries(source)
    differing = differing_configs(found)
    rows, test_columns, noise_columns = [], {}, {}
    for e in found:
        tests, noise = test_metrics(e.output), robustness_metrics(e.output)
        test_columns.update(dict.fromkeys(tests))
        noise_columns.update(dict.fromkeys(noise))
        metrics = {**tests, **noise}
        output = e.output if isinstance(e.output, dict) else {}
        row = {"name": e.name, "seed": e.seed, "step": e.step, "state": e.state, "score": e.score, **metrics,
               "epochs": output.get("epochs"), "best_epoch": output.get("best_epoch"),
               "wall_time": e.provenance.get("wall_time"), "dataset_comment": e.comments.get("dataset", "")}
        row.update({name: e.configs.get(name) for name in differing})
        row.update({c: e.provenance.get(c) for c in PROVENANCE_COLUMNS if c != "wall_time"})
        row.update(error=e.error, table=e.table, key_hash=e.key_hash)
        rows.append(row)
    columns = (["name", "seed", "step", "state", "score", *test_columns, *noise_columns, "epochs", "best_epoch",
                "wall_time", "dataset_comment", *differing, *(c for c in PROVENANCE_COLUMNS if c != "wall_time")]
               + (["error"] if any(e.error for e in found) else []) + ["table", "key_hash"])
    frame = pd.DataFrame(rows, columns=columns)
    for name in ("epochs", "best_epoch"):
        frame[name] = frame[name].astype("Int64")
    for name in differing:  # as configured: 3 stays an int and None stays None (not 3.0 and NaN)
        frame[name] = pd.Series([e.configs.get(name) for e in found], index=frame.index, dtype=object)
    return frame


def history_frame(source: Any):
    """The trainer's per-epoch history in long format:
    ``name, seed, step, mode, task, metric, epoch, value, final, optimizer_steps``.

    ``mode`` is Training, Validation or Test; the learning rate is ``task="all", metric="lr"``. A series
    with one value per evaluation gets its epochs and ``optimizer_steps`` (the optimizer steps taken when it was
    measured: with ``eval_every_steps`` an epoch can hold several evaluations); a series of another length (e.g.
    values logged per batch) gets NaN for both. The final passes after training (validation of the returned, by
    default restored-best, parameters, and the test) are rows with ``final=True`` at the last epoch: plot the
    history with ``final == False`` so that they do not show as a jump at its end. Entries whose trainer keeps no
    tracker history add no rows.
    """
    import pandas as pd

    rows = []
    for e in entries(source):
        tracker = e.output.get("tracker") if isinstance(e.output, dict) else None
        if not isinstance(tracker, dict):
            continue
        epochs, steps = tracker.get("epochs", {}), tracker.get("steps", {})
        for mode, tasks in tracker.get("log", {}).items():
            mode_epochs, mode_steps = list(epochs.get(mode, [])), list(steps.get(mode, []))
            for task, metrics in tasks.items():
                for metric, values in metrics.items():
                    values = list(values)
                    at = mode_epochs if len(mode_epochs) == len(values) else [math.nan] * len(values)
                    after = mode_steps if len(mode_steps) == len(values) else [math.nan] * len(values)
                    rows.extend((e.name, e.seed, e.step, mode, task, metric, ep, float(v), False, st)
                                for ep, v, st in zip(at, values, after))
        last = max((max(v) for v in epochs.values() if v), default=math.nan)
        last_steps_taken = (e.output.get("steps") if isinstance(e.output.get("steps"), int) else
                            max((max(v) for v in steps.values() if v), default=math.nan))
        for mode, tasks in tracker.get("final", {}).items():
            for task, metrics in tasks.items():
                rows.extend((e.name, e.seed, e.step, mode, task, metric, last, float(v), True, last_steps_taken)
                            for metric, v in metrics.items())
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


# -- summaries --------------------------------------------------------------------------------------
def summary(source: Any) -> list[dict]:
    """One row per entry for the command line: name, seed, step, state, score, test metrics (and error).
    ``source``: what :func:`entries` takes (targets of a plan, entries, experiments, a recipe file, a query)."""
    rows = []
    for e in entries(source):
        row = {"name": e.name, "seed": e.seed, "step": e.step, "state": e.state, "score": e.score}
        row.update(test_metrics(e.output))
        if e.state == "error":
            row["error"] = e.error[:80]
        rows.append(row)
    return rows


def default_metric(source: Any) -> str:
    """The metric a table or plot shows by default, among the metrics the last steps report (a transfer recipe's
    pretraining step may report others): a test accuracy, else another test metric (e.g. a neural recipe's
    correlation), else a test loss, else ``score``; the mean over the trained tasks (``test/<metric>``) before a
    single task's. So a neural recipe compares the mean test correlation over its sessions, the metric its
    early stopping uses (on the validation set).

    ``source``: a results frame, summary rows (dicts), or column names.
    """
    if hasattr(source, "columns"):  # a results frame: the columns its last steps fill
        last = last_steps(source)
        columns = [c for c in source.columns if len(last) == 0 or last[c].notna().any()]
    elif isinstance(source, list) and all(isinstance(r, dict) for r in source):  # summary rows
        columns = list(dict.fromkeys(c for r in _last_step_rows(source) for c, v in r.items() if v is not None))
    else:
        columns = list(source)
    tests = [c for c in columns if c.startswith("test/")]
    return min(tests, key=_metric_rank) if tests else "score"  # min keeps the first of equal rank


def _metric_rank(column: str) -> tuple[int, int]:
    metric = column.rsplit("/", 1)[-1]
    kind = 0 if metric == "accuracy" else 2 if metric == "loss" else 1
    return kind, 0 if column.count("/") == 1 else 1  # test/<metric> (mean over tasks) before test/<task>/<metric>


def resolve_metric(name: str, columns) -> str | None:
    """The column ``name`` means among ``columns``: itself, else ``test/<name>`` (the mean over the trained tasks),
    else the one ``test/<task>/<name>``; None if there is none. ``--metric correlation`` thus finds a neural
    recipe's mean test correlation, and ``--metric accuracy`` a classifier's single test accuracy. A name that
    several tasks report (and no mean covers) is a ConfigError listing them."""
    columns = list(columns)
    if name in columns:
        return name
    if f"test/{name}" in columns:
        return f"test/{name}"
    matches = [c for c in columns if c.startswith("test/") and c.endswith(f"/{name}")]
    if len(matches) > 1:
        raise ConfigError(f"metric {name!r} is reported by several tasks: {', '.join(matches)}; name one of them")
    return matches[0] if matches else None


def _last_step_rows(rows: list[dict]) -> list[dict]:
    """The finished rows of each experiment's last step."""
    last_step: dict = {}
    for r in rows:
        last_step[r["name"]] = max(last_step.get(r["name"], 0), r["step"])
    return [r for r in rows if r["state"] == "done" and r["step"] == last_step[r["name"]]]


def last_steps(frame):
    """The rows of each experiment's last step (finished ones)."""
    done = frame[frame["state"] == "done"]
    last = frame.groupby("name")["step"].transform("max")
    return done[done["step"] == last[done.index]]


def compare(frame, metric: str | None = None):
    """Mean, sample std (ddof=1) and count of ``metric`` per experiment name and step (finished runs); ``metric``
    as :func:`resolve_metric` reads it (``"correlation"``, ``"test/a/loss"`` ...)."""
    import pandas as pd

    metric = frame_metric(frame, metric)
    done = frame[frame["state"] == "done"]
    rows = []
    for (name, step), group in done.groupby(["name", "step"], sort=False):
        s = spread(group[metric])
        rows.append({"name": name, "step": step, "mean": s.mean, "std": s.std, "count": s.count})
    return pd.DataFrame(rows, columns=["name", "step", "mean", "std", "count"])


def frame_metric(frame, metric: str | None) -> str:
    """The column of a results frame that ``metric`` names (:func:`resolve_metric`; default:
    :func:`default_metric`), or a ConfigError listing the metrics the frame has."""
    if metric is None:
        return default_metric(frame)
    found = resolve_metric(metric, frame.columns)
    if found is None:
        numeric = [c for c in frame.columns if c == "score" or c.startswith("test/")]
        raise ConfigError(f"no metric {metric!r} in the results; metrics: {', '.join(numeric)}")
    return found


def comparison(rows: list[dict], metric: str | None = None) -> list[dict]:
    """The last step of each experiment: ``metric`` (default: :func:`default_metric`; short names as
    :func:`resolve_metric` reads them, e.g. ``"correlation"``) as mean, std, n."""
    last = _last_step_rows(rows)
    reported = list(dict.fromkeys(c for r in last for c, v in r.items()
                                  if v is not None and (c == "score" or "/" in c)))
    if metric is None:
        metric = default_metric(rows)
    elif last:
        found = resolve_metric(metric, reported)
        if found is None:
            raise ConfigError(f"no finished experiment reports the metric {metric!r}; metrics their last steps "
                              f"report: {', '.join(reported)}")
        metric = found
    groups: dict = {}
    for r in last:
        if r.get(metric) is not None:
            groups.setdefault(r["name"], []).append(r[metric])
    out = []
    for name, values in groups.items():
        s = spread(values)
        out.append({"name": name, "metric": metric, "mean": s.mean, "std": s.std, "n": s.count})
    return out


__all__ = ["Entry", "compare", "comparison", "default_metric", "differing_configs", "entries", "frame_metric",
           "history_frame", "last_steps", "resolve_metric", "results_frame", "robustness_metrics", "summary",
           "target_entries"]
