"""Recipes and ``run()``: fill the tables for a set of experiments and train whatever is missing.

A recipe is a Python file that defines ``transfer_experiments`` and/or ``experiments``: dicts
``Description -> TransferExperiment | Experiment`` (lists are accepted too), or a YAML/JSON file
(see ``nntransfer.gridfiles``). Training uses DataJoint's job queue (``populate(reserve_jobs=True)``),
so any number of workers, local or on a cluster, can share the same plan.
"""
from __future__ import annotations

import contextlib
import logging
import os
import runpy
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .configs.errors import ConfigError
from .experiment import Description, Experiment, TransferExperiment

logger = logging.getLogger(__name__)

TRAINED = "TrainedModel"
TRANSFERRED = "TransferredTrainedModel"


# -- collecting experiments -------------------------------------------------------------------
def normalize(experiments: Any) -> dict[Description, Experiment | TransferExperiment]:
    """Accept a dict ``Description -> experiment``, a list, or a single experiment."""
    if isinstance(experiments, (Experiment, TransferExperiment)):
        experiments = [experiments]
    if isinstance(experiments, Mapping):
        items = list(experiments.items())
    elif isinstance(experiments, Iterable):
        items = [(None, exp) for exp in experiments]
    else:
        raise ConfigError(f"expected experiments (dict, list or one experiment), got {type(experiments).__name__}")
    out = {}
    for i, (desc, exp) in enumerate(items):
        if not isinstance(exp, (Experiment, TransferExperiment)):
            raise ConfigError(f"entry {desc or i} is a {type(exp).__name__}, not an Experiment or TransferExperiment")
        seed = exp.seed if isinstance(exp, Experiment) else exp[0].seed
        if desc is None:
            desc = Description(f"experiment_{i}", seed)
        elif not isinstance(desc, Description):
            desc = Description(*desc) if isinstance(desc, tuple) else Description(str(desc), seed)
        if desc in out:
            raise ConfigError(f"two experiments are described as {desc}")
        out[desc] = exp
    return out


def load_recipe(path: str | os.PathLike) -> dict[Description, Experiment | TransferExperiment]:
    """Experiments of a recipe file (Python, or YAML/JSON with grid syntax)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"recipe {path} does not exist")
    if path.suffix in (".yaml", ".yml", ".json"):
        from .gridfiles import experiments_from_file

        return experiments_from_file(path)
    namespace = runpy.run_path(str(path), run_name="nntransfer_recipe")
    found = {}
    for name in ("transfer_experiments", "experiments"):
        if name in namespace:
            for desc, exp in normalize(namespace[name]).items():
                if desc in found:
                    raise ConfigError(f"{path}: {desc} appears in both transfer_experiments and experiments")
                found[desc] = exp
    if not found:
        raise ConfigError(f"{path} defines neither `transfer_experiments` nor `experiments`")
    return found


def apply_overrides(experiments: dict, sets: dict[str, Any] | None = None, grid: dict[str, list] | None = None) -> dict:
    """``--set path=value`` on every experiment, then ``--grid path=v1,v2`` as a cross product.

    Grid points are named ``name[path=value,...]``; a ``seed`` axis also sets the Description's seed.
    """
    import itertools

    out = {}
    for desc, exp in experiments.items():
        if sets:
            exp = exp.replace(**sets)
        if not grid:
            out[desc] = exp
            continue
        axes = list(grid)
        for values in itertools.product(*(grid[a] for a in axes)):
            changes = dict(zip(axes, values))
            label = ",".join(f"{a}={v}" for a, v in changes.items())
            seed = changes.get("seed", desc.seed)
            out[Description(f"{desc.name}[{label}]", seed)] = exp.replace(**changes)
    return out


# -- the plan: which table rows a set of experiments needs ------------------------------------
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
    from . import db, tables

    for exp in experiments.values():
        steps = [exp] if isinstance(exp, Experiment) else list(exp)
        for step in steps:
            for cfg in step.configs.values():
                cfg.resolve_fn()  # every builder must import before anything is written
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
    from . import tables

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
    from . import tables

    count = 0
    for table_name in (TRAINED, TRANSFERRED):
        keys = [t.key for t in targets if t.table == table_name]
        if keys:
            errors = tables.table(table_name).jobs.errors & keys
            count += len(errors)
            errors.delete_quick()
    return count


def reclaim_dead_reservations(targets: list[Target]) -> int:
    """Put jobs back in the queue whose worker died (its database connection is gone)."""
    from . import db, tables

    conn = db.connection()
    if conn.adapter.backend == "postgresql":
        alive = {row[0] for row in conn.query("SELECT pid FROM pg_stat_activity").fetchall()}
    else:
        alive = {row[0] for row in conn.query("SELECT id FROM information_schema.processlist").fetchall()}
    count = 0
    for table_name in (TRAINED, TRANSFERRED):
        keys = [t.key for t in targets if t.table == table_name]
        if not keys:
            continue
        reserved = tables.table(table_name).jobs.reserved & keys
        for job in reserved.proj("connection_id").to_dicts():
            if job["connection_id"] not in alive:
                (tables.table(table_name).jobs & {k: v for k, v in job.items() if k != "connection_id"}).delete_quick()
                count += 1
    return count


# -- working ------------------------------------------------------------------------------------
def work(targets: list[Target], poll: float = 1.0, timeout: float | None = None) -> dict:
    """Train pending targets until none is left that this or another live worker can train.

    Safe to run in many processes at once: DataJoint's job reservation hands each key to one worker.
    A step whose predecessor is still training is picked up as soon as the predecessor is done.
    """
    from . import tables

    tables.bind()
    started = time.time()
    trained, errors = 0, []
    reclaim_dead_reservations(targets)
    while True:
        progressed = False
        for table_name in (TRAINED, TRANSFERRED):
            keys = [t.key for t in targets if t.table == table_name]
            if keys:
                result = tables.table(table_name).populate(keys, reserve_jobs=True, suppress_errors=True)
                trained += result["success_count"]
                errors += result["error_list"]
                progressed |= bool(result["success_count"] or result["error_list"])
        current = states(targets)
        open_work = [t for t, s in current.items() if s["state"] in ("pending", "reserved")]
        if not open_work:
            break
        if timeout is not None and time.time() - started > timeout:
            logger.warning("worker stops after %.0f s with %d targets open", timeout, len(open_work))
            break
        if not progressed:
            # others are training what is left (or its predecessors): wait for them
            if reclaim_dead_reservations(targets) == 0:
                time.sleep(poll)
    return {"trained": trained, "errors": errors}


def _worker_process(targets: list[Target], threads: int, poll: float, recipe: str | None) -> None:
    import torch

    torch.set_num_threads(threads)
    if recipe is not None:
        load_recipe(recipe)  # registers what the recipe defines (e.g. its main-loop modules)
    work(targets, poll=poll)


@contextlib.contextmanager
def _children_skip_main():
    """Start children without re-running ``__main__``.

    multiprocessing re-imports the parent's main script in every child; a script that calls ``run()`` at
    top level without an ``if __name__ == "__main__":`` guard would then start workers recursively.
    The children only need nntransfer and the plan, so hide the script while they start.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__spec__ = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def run_workers(targets: list[Target], workers: int, poll: float = 0.2, recipe: str | None = None) -> None:
    """Train with ``workers`` local processes sharing the database, each with its share of the cores.

    This process is one of them. The others come from a fork server that has torch and the table
    modules imported (fast to start, and safe: forking a process that already ran torch's thread pool,
    as this one may have, can deadlock). The fork server lives as long as this process, so later
    calls start their workers in a fraction of a second.
    """
    import multiprocessing as mp

    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "nntransfer.tables.trained_model", "nntransfer.tables.transfer"])
    procs = [ctx.Process(target=_worker_process, args=(targets, threads, poll, recipe), name=f"nntransfer-worker-{i}")
             for i in range(1, workers)]
    with _children_skip_main():
        for p in procs:
            p.start()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        work(targets, poll=poll)
    finally:
        torch.set_num_threads(previous_threads)
        for p in procs:
            p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"worker process(es) {', '.join(failed)} exited abnormally; see their output above")


def run(experiments: Any, workers: int = 1, quiet: bool = False) -> list[dict]:
    """Fill the tables for ``experiments`` and train everything missing; returns the summary rows.

    ``experiments``: dict ``Description -> Experiment | TransferExperiment`` (or a list, or one).
    Transfer steps run in order: step n+1 starts as soon as step n is trained.
    """
    experiments = normalize(experiments)
    targets = fill_tables(experiments)
    if workers <= 1:
        work(targets)
    else:
        run_workers(targets, workers)
    from .analysis import format_table, summary

    rows = summary(targets)
    if not quiet:
        print(format_table(rows))
    return rows
