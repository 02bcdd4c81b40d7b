"""The plan: which table rows a set of experiments needs, and the state of each row.

A :class:`Target` is one step of a named experiment: the table it is trained into, its key, and the run
settings this plan trains it with (run fields of its configs: they come from the current recipe, CLI or API
call, not from whoever stored the config first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from ..configs.experiment import Description, Experiment
from ..core.keys import key_ident
from ..store import internals, table
from ..store.jobs import JobAttempt, dead_reservations, job_hash, worker_rows
from ..store.trained_model import clear_checkpoints as _clear_checkpoints

TRAINED = "TrainedModel"
TRANSFERRED = "TransferredTrainedModel"
TABLES = (TRAINED, TRANSFERRED)


@dataclass(frozen=True)
class Target:
    description: Description
    step: int
    table: str
    key: dict
    run_settings: dict = field(default_factory=dict, compare=False)  # config part -> {run field: value}

    def __hash__(self):
        return hash((self.description, self.step, self.table))

    @property
    def label(self) -> str:
        """How messages name it: ``name (seed s, step k)``."""
        if self.description is None:
            return f"{self.table} {key_ident(self.key)}"
        return f"{self.description.name} (seed {self.description.seed}, step {self.step})"


def plan(experiments: dict) -> list[Target]:
    """The targets of experiments (dict ``Description -> Experiment | TransferExperiment``), steps in order."""
    targets = []
    for desc, exp in experiments.items():
        table = TRAINED if isinstance(exp, Experiment) else TRANSFERRED
        steps = exp.steps
        for level, step in enumerate(steps):
            run_settings = {part: cfg.run_fields() for part, cfg in step.configs.items()}
            targets.append(Target(desc, level, table, exp.get_restrictions(level), run_settings))
    return targets


def by_table(targets: Iterable[Target]) -> Iterator[tuple[type, list[Target]]]:
    """``(table class, its targets)`` for each result table that has targets, in training order."""
    targets = list(targets)
    for name in TABLES:
        chosen = [t for t in targets if t.table == name]
        if chosen:
            yield table(name), chosen


# -- state of a plan ----------------------------------------------------------------------------
def states(targets: list[Target], outputs: bool = False, workers: bool = False) -> dict[Target, dict]:
    """``{target: {"state": done|error|reserved|pending|blocked, "score": ..., "error": ...}}``.

    With ``outputs=True`` finished targets also carry their ``output`` (fetched only when asked: it can be large);
    with ``workers=True`` reserved ones carry the ``gpu`` of the worker that trains them, and ``stale=True`` when
    that worker is gone (its process ended, or its heartbeat stopped): the next worker re-queues the job.
    """
    beats = worker_rows() if workers else {}
    out = {}
    for table, chosen in by_table(targets):
        keys = [t.key for t in chosen]
        attributes = ("score", "output") if outputs else ("score",)
        done = {key_ident(r): r for r in (table & keys).proj(*attributes).to_dicts()}
        jobs = {key_ident(r): r for r in (table.jobs & keys).proj("status", "error_message", "host", "pid").to_dicts()}
        dead = {key_ident(k) for k in dead_reservations(table, keys)} if workers else set()
        for t in chosen:
            ident = key_ident(t.key)
            if ident in done:
                out[t] = {"state": "done", "score": done[ident]["score"], "output": done[ident].get("output")}
            elif ident in jobs and jobs[ident]["status"] in ("error", "reserved"):
                job = jobs[ident]
                state = {"state": job["status"], "error": job["error_message"], "host": job["host"], "pid": job["pid"]}
                if job["status"] == "reserved" and workers:
                    beat = beats.get((job["host"], job["pid"]))
                    state.update(gpu=beat["gpu"] if beat else "", stale=ident in dead)
                out[t] = state
            else:
                out[t] = {"state": "pending"}
    # a step after a failed step cannot run until the error is cleared
    chains: dict = {}
    for t in targets:
        chains.setdefault(t.description, []).append(t)
    for chain in chains.values():
        failed = False
        for t in sorted(chain, key=lambda t: t.step):
            if failed and out[t]["state"] == "pending":
                out[t] = {"state": "blocked"}
            failed = failed or out[t]["state"] in ("error", "blocked")
    return out


def test_metrics(output: Any) -> dict:
    """``output["test"]`` (``{test_key: {metric: value}}``) as ``test/<key>/<metric>`` columns, preceded, when
    several tasks were trained (e.g. the sessions of a neural recipe), by ``test/<metric>``: the mean over those
    tasks, as the trainer averages its early-stopping metric (extra test sets such as rotations are left out)."""
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
    return {**_task_means(output), **flat}


def trained_tasks(output: dict) -> list[str]:
    """The tasks a step was trained and selected on: those of its validation results, else of its training
    history, else every test task."""
    validation = output.get("validation")
    if isinstance(validation, dict) and validation:
        return list(validation)
    tracker = output.get("tracker")
    training = tracker.get("log", {}).get("Training", {}) if isinstance(tracker, dict) else {}
    tasks = [task for task in training if task != "all"]
    return tasks or list(output.get("test") or {})


def _task_means(output: dict) -> dict:
    tasks = [t for t in trained_tasks(output) if isinstance(output["test"].get(t), dict)]
    if len(tasks) < 2:
        return {}
    means = {}
    for metric in dict.fromkeys(m for t in tasks for m in output["test"][t]):
        values = [output["test"][t].get(metric) for t in tasks]
        if all(isinstance(v, (int, float)) for v in values):
            means[f"test/{metric}"] = math.fsum(values) / len(values)
    return means


def clear_errors(targets: list[Target]) -> int:
    """Delete the error records (and retry counts) of these targets so that the next run trains them again."""
    count = 0
    for table, chosen in by_table(targets):
        keys = [t.key for t in chosen]
        errors = table.jobs.errors & keys
        count += len(errors)
        errors.delete_quick()
        attempts = [{"job_table": table.table_name, "job_hash": job_hash(internals.job_key(table.jobs, k))} for k in keys]
        (JobAttempt & attempts).delete_quick()
    return count


def error_details(targets: list[Target]) -> list[tuple[Target, dict]]:
    """``[(target, job row with error_message, error_stack, host, completed_time)]`` of the failed targets."""
    out = []
    for table, chosen in by_table(targets):
        for target in chosen:
            out.extend((target, job) for job in (table.jobs.errors & target.key).to_dicts())
    return out


def clear_checkpoints(targets: list[Target]) -> int:
    """Delete the checkpoints (rows and files) of these targets; returns how many were dropped."""
    return sum(_clear_checkpoints(table.table_name, [t.key for t in chosen]) for table, chosen in by_table(targets))


__all__ = ["TABLES", "TRAINED", "TRANSFERRED", "Target", "by_table", "clear_checkpoints", "clear_errors",
           "error_details", "plan", "states", "test_metrics", "trained_tasks"]
