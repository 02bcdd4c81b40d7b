"""The ``run`` command: fill the tables for a recipe, train what is missing, show the results."""
from __future__ import annotations

from .common import (
    add_local_worker_options,
    add_result_options,
    experiments,
    plan_line,
    recipe_options,
    show_results,
    train_locally,
)


def _run(args) -> int:
    from ..orchestration.fill import fill_tables

    found = experiments(args)
    planned = fill_tables(found)
    print(plan_line(found, planned, args.workers))
    stopped = train_locally(planned, args)
    code = show_results(found, args)
    if stopped:
        print("stopped on request: the job in hand was checkpointed and released; run again to go on")
        return 0
    return code


def add_commands(sub) -> None:
    p = sub.add_parser("run", parents=[recipe_options()], help="fill the tables and train what is missing",
                       description="Fill the tables for a recipe and train every missing experiment, transfer "
                                   "steps in order. Prints the results table and writes the HTML report.")
    add_local_worker_options(p)
    add_result_options(p, report_by_default=True)
    p.set_defaults(handler=_run)
