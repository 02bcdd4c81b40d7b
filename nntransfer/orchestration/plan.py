"""The plan: which table rows a set of experiments needs, filling the tables, and the state of each row."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.experiment import Description, Experiment, TransferExperiment

TRAINED = "TrainedModel"
TRANSFERRED = "TransferredTrainedModel"


@dataclass(frozen=True)
class Target:
    description: Description
    step: int
    table: str
    key: dict

    def __hash__(self):
        return hash((self.description, self.step, self.table))


def plan(experiments: dict) -> list[Target]:
    targets = []
    for desc, exp in experiments.items():
        if isinstance(exp, Experiment):
            targets.append(Target(desc, 0, TRAINED, exp.get_key()))
        else:
            targets.extend(Target(desc, level, TRANSFERRED, exp.get_restrictions(level)) for level in range(len(exp)))
    return targets


def fill_tables(experiments: dict) -> list[Target]:
    """Insert configs, seeds and transfer recipe rows (idempotent); returns the plan."""
    from ..store import db
    from .. import store as tables

    for exp in experiments.values():
        steps = [exp] if isinstance(exp, Experiment) else list(exp)
        for step in steps:
            for cfg in step.configs.values():
                cfg.validate_names()  # builders and registered names must resolve before anything is written
    tables.bind()
    with db.transaction():
        for exp in experiments.values():
            exp.add_to_table()
            if isinstance(exp, TransferExperiment):
                for level in range(len(exp)):
                    prev = exp.get_restrictions(level - 1) if level else None
                    tables.TrainedModelTransferRecipe().add_entry(exp.get_restrictions(level), prev)
    return plan(experiments)


# -- state of a plan ----------------------------------------------------------------------------
def states(targets: list[Target], outputs: bool = False, workers: bool = False) -> dict[Target, dict]:
    """``{target: {"state": done|error|reserved|pending|blocked, "score": ..., "error": ...}}``.

    With ``outputs=True`` finished targets also carry their ``output`` (fetched only when asked: it can be large);
    with ``workers=True`` reserved ones carry the ``gpu`` of the worker that trains them.
    """
    from .. import store as tables
    from ..store.jobs import worker_rows

    beats = worker_rows() if workers else {}

    out = {}
    for table_name in (TRAINED, TRANSFERRED):
        chosen = [t for t in targets if t.table == table_name]
        if not chosen:
            continue
        table = tables.table(table_name)
        keys = [t.key for t in chosen]
        attributes = ("score", "output") if outputs else ("score",)
        done = {_ident(r): r for r in (table & keys).proj(*attributes).to_dicts()}
        jobs = {_ident(r): r for r in (table.jobs & keys).proj("status", "error_message", "host", "pid").to_dicts()}
        for t in chosen:
            ident = _ident(t.key)
            if ident in done:
                out[t] = {"state": "done", "score": done[ident]["score"], "output": done[ident].get("output")}
            elif ident in jobs and jobs[ident]["status"] in ("error", "reserved"):
                job = jobs[ident]
                out[t] = {"state": job["status"], "error": job["error_message"], "host": job["host"], "pid": job["pid"],
                          "gpu": beats.get((job["host"], job["pid"]), {}).get("gpu", "") if job["status"] == "reserved"
                          else ""}
            else:
                out[t] = {"state": "pending"}
    # a step after a failed step cannot run until the error is cleared
    by_desc: dict = {}
    for t in targets:
        by_desc.setdefault(t.description, []).append(t)
    for chain in by_desc.values():
        failed = False
        for t in sorted(chain, key=lambda t: t.step):
            if failed and out[t]["state"] == "pending":
                out[t] = {"state": "blocked"}
            failed = failed or out[t]["state"] in ("error", "blocked")
    return out


def _ident(key: dict) -> tuple:
    names = ("transfer_step", "model_fn", "model_hash", "dataset_fn", "dataset_hash", "trainer_fn", "trainer_hash",
             "seed", "collapsed_history")
    return tuple(key.get(n) for n in names if n in key)


def clear_errors(targets: list[Target]) -> int:
    """Delete the error records (and retry counts) of these targets so that the next run trains them again."""
    from .. import store as tables
    from ..store.jobs import JobAttempt, job_hash

    count = 0
    for table_name in (TRAINED, TRANSFERRED):
        keys = [t.key for t in targets if t.table == table_name]
        if keys:
            table = tables.table(table_name)
            errors = table.jobs.errors & keys
            count += len(errors)
            errors.delete_quick()
            attempts = [{"job_table": table.table_name, "job_hash": job_hash(table.jobs._get_pk(k))} for k in keys]
            (JobAttempt & attempts).delete_quick()
    return count


def error_details(targets: list[Target]) -> list[tuple[Target, dict]]:
    """``[(target, job row with error_message, error_stack, host, completed_time)]`` of the failed targets."""
    from .. import store as tables

    out = []
    for target in targets:
        jobs = tables.table(target.table).jobs.errors & target.key
        for job in jobs.to_dicts():
            out.append((target, job))
    return out


def clear_checkpoints(targets: list[Target]) -> int:
    """Delete the checkpoints (rows and files) of these targets; returns how many were dropped."""
    from .. import store as tables
    from ..store.trained_model import clear_checkpoints as clear

    count = 0
    for table_name in (TRAINED, TRANSFERRED):
        keys = [t.key for t in targets if t.table == table_name]
        if keys:
            count += clear(tables.table(table_name).table_name, keys)
    return count
