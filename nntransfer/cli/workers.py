"""Worker commands of the CLI: worker, status, errors, clear-errors, clear-checkpoints."""
from __future__ import annotations

from .common import (
    add_local_worker_options,
    add_slurm_options,
    recipe_options,
    report_submitted,
    slurm_options,
    targets,
    targets_and_trials,
    train_locally,
    worker_settings,
)


def _worker(args) -> int:
    from ..errors import ConfigError

    planned = targets(args, fill=True)
    if not args.slurm:
        train_locally(planned, args)
        return 0
    if args.gpus:
        raise ConfigError("--gpus chooses local GPUs; for Slurm jobs use --gpus-per-job N")
    from ..orchestration.plan import states
    from ..orchestration.slurm import submit_workers

    before = states(planned)
    jobs = submit_workers(planned, worker_settings(args), jobs=args.jobs, **slurm_options(args))
    return report_submitted(jobs, args, planned, before)


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def _status(args) -> int:
    from ..analysis import format_table
    from ..analysis.search import search_line
    from ..orchestration.plan import states

    planned, trials = targets_and_trials(args)
    current = states(planned, workers=True)
    rows = []
    for t in planned:
        s = current[t]
        if t.description in trials and trials[t.description].state == "pruned" and s["state"] != "done":
            s = {"state": "pruned"}  # stopped by its search's pruner; its job waits with its checkpoint
        state, where = s["state"], ""
        if state == "reserved" and s.get("stale"):  # its worker is gone: not training, whatever the row says
            state, where = "stale", f"{s.get('host')}:{s.get('pid')} gone; re-queued by the next worker"
        elif state in ("reserved", "error"):
            where = f"{s.get('host')}:{s.get('pid')}" if state == "reserved" else s.get("host") or ""
            if s.get("gpu"):
                where += f" gpu {s['gpu']}"
        error = _first_line(s.get("error"))
        kind, _, message = error.partition(": ")
        rows.append({"name": t.description.name, "seed": t.description.seed, "step": t.step, "state": state,
                     "score": s.get("score"), "where": where.strip(),
                     "error": f"{kind}: {message[:70]}" if error else ""})
    print(format_table(rows))
    counts: dict = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("error"):
        print(f"full tracebacks: nntransfer errors {args.recipe}")
    if counts.get("stale"):
        print(f"stale: reserved by a worker that is gone; `nntransfer run {args.recipe}` (or a worker) re-queues and "
              "resumes them from their last checkpoint")
    for study in dict.fromkeys(record.study for record in trials.values()):
        print(search_line(study, args.recipe))
    return 0


def _errors(args) -> int:
    from ..orchestration.plan import error_details

    details = error_details(targets(args, fill=False))
    if not details:
        print("no errors")
        return 0
    for target, job in details:
        print(f"== {target.description.name} (seed {target.description.seed}) step {target.step} "
              f"on {job['host']}, {job['completed_time']}")
        print(job["error_stack"] or job["error_message"])
    return 0


def _clear_errors(args) -> int:
    from ..orchestration.plan import clear_errors

    n = clear_errors(targets(args, fill=False))
    print(f"cleared {n} error(s); run the recipe again to retrain them")
    return 0


def _clear_checkpoints(args) -> int:
    from ..orchestration.plan import clear_checkpoints

    n = clear_checkpoints(targets(args, fill=False))
    print(f"dropped {n} checkpoint(s); the affected jobs start from scratch on the next run")
    return 0


def add_commands(sub) -> None:
    common = recipe_options()
    p = sub.add_parser("worker", parents=[common], help="train pending jobs of a recipe (locally or via Slurm)",
                       description="A worker that trains any pending job of the recipe until none is left "
                                   "(--workers N: N local processes). With --slurm, submits JOBS such workers "
                                   "through submitit instead. SIGTERM/Ctrl-C: checkpoint, release the job, exit 0.")
    add_local_worker_options(p)
    add_slurm_options(p)
    p.set_defaults(handler=_worker)

    p = sub.add_parser("status", parents=[common], help="state of every experiment of a recipe",
                       description="pending / reserved (training, with host:pid and GPU) / stale (reserved by a "
                                   "worker that is gone: re-queued by the next worker) / done / error (type, host, "
                                   "first line) / blocked per experiment and step, with scores.")
    p.set_defaults(handler=_status)

    p = sub.add_parser("errors", parents=[common], help="full tracebacks of a recipe's failed jobs",
                       description="The traceback of every failed job of the recipe, with host and time.")
    p.set_defaults(handler=_errors)

    p = sub.add_parser("clear-errors", parents=[common], help="forget failed jobs so they run again",
                       description="Delete the error records of a recipe's jobs; the next run retrains them.")
    p.set_defaults(handler=_clear_errors)

    p = sub.add_parser("clear-checkpoints", parents=[common], help="drop the checkpoints of a recipe's jobs",
                       description="Delete the checkpoints (rows and files) of the recipe's unfinished jobs, e.g. "
                                   "after a change that makes them unusable; those jobs start from scratch.")
    p.set_defaults(handler=_clear_checkpoints)
