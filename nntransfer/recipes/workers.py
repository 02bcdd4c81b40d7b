"""Workers: train the pending rows of a plan through DataJoint's job reservation, in one or many processes."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from .plan import TRAINED, TRANSFERRED, Target, states

logger = logging.getLogger(__name__)


def reclaim_dead_reservations(targets: list[Target]) -> int:
    """Put jobs back in the queue whose worker died (its database connection is gone)."""
    from .. import db, tables

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


def work(targets: list[Target], poll: float = 1.0, timeout: float | None = None) -> dict:
    """Train pending targets until none is left that this or another live worker can train.

    Safe to run in many processes at once: DataJoint's job reservation hands each key to one worker.
    A step whose predecessor is still training is picked up as soon as the predecessor is done.
    """
    from .. import tables

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
        from .load import load_recipe

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
