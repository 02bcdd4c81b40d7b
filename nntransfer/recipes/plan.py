"""The plan: which table rows a set of experiments needs, filling the tables, and the state of each row."""
from __future__ import annotations

from dataclasses import dataclass

from ..experiment import Description, Experiment, TransferExperiment

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
    from .. import db, tables

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
def states(targets: list[Target], outputs: bool = False) -> dict[Target, dict]:
    """``{target: {"state": done|error|reserved|pending|blocked, "score": ..., "error": ...}}``.

    With ``outputs=True`` finished targets also carry their ``output`` (fetched only when asked: it can be large).
    """
    from .. import tables

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
                out[t] = {"state": job["status"], "error": job["error_message"], "host": job["host"], "pid": job["pid"]}
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
    """Delete the error records of these targets so that the next run trains them again."""
    from .. import tables

    count = 0
    for table_name in (TRAINED, TRANSFERRED):
        keys = [t.key for t in targets if t.table == table_name]
        if keys:
            errors = tables.table(table_name).jobs.errors & keys
            count += len(errors)
            errors.delete_quick()
    return count
