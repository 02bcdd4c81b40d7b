"""Recipe commands of the CLI: the options every recipe command shares, and ``run``.

Workers, status and errors are in ``workers.py``; results and clear in ``analysis.py``.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError


def _assignment(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected PATH=VALUE, got {text!r}")
    path, _, value = text.partition("=")
    return path.strip(), value


def _command_line(pairs: list[tuple[str, str]], option: str, parse) -> dict:
    """``--set``/``--grid`` pairs as ``{path: parsed}``; a path given twice is an error (not a silent last wins)."""
    out = {}
    for path, text in pairs:
        if path in out:
            raise ConfigError(f"{option} {path} is given twice; give it once (a grid lists all its values: "
                              f"{option} {path}=V1,V2,...)")
        out[path] = parse(text, f"{option} {path}={text}")
    return out


def _experiments(args: argparse.Namespace) -> dict:
    """The recipe's experiments with --config, then --set and --grid applied (the command line wins over the file)."""
    from ..orchestration.recipes import apply_overrides, load_recipe, overrides_from_file, parse_value, parse_values
    from ..orchestration.workers import import_user_code

    import_user_code(getattr(args, "imports", []))  # before the recipe: it may name what they register
    experiments = load_recipe(args.recipe)
    sets, grid = overrides_from_file(args.config) if args.config else ({}, {})
    cli_sets = _command_line(args.set, "--set", parse_value)
    cli_grid = _command_line(args.grid, "--grid", parse_values)
    both = sorted(set(cli_sets) & set(cli_grid))
    if both:
        raise ConfigError(f"{both[0]} is given with both --set and --grid; use one")
    for path in cli_sets:
        grid.pop(path, None)
    for path in cli_grid:
        sets.pop(path, None)
    sets.update(cli_sets)
    grid.update(cli_grid)
    return apply_overrides(experiments, sets, grid, report=print)


def targets(args, fill: bool):
    from ..orchestration import fill_tables, plan

    experiments = _experiments(args)
    return fill_tables(experiments) if fill else plan(experiments)


def train_locally(planned, args) -> bool:
    """Train ``planned`` in this process, or in ``--workers`` local processes (``--gpus``: one GPU each).
    Returns whether training stopped on request (SIGTERM/Ctrl-C: the job in hand was checkpointed and released)."""
    from ..orchestration import run_workers, work
    from ..orchestration.workers import parse_gpus
    from ..trainer.interrupt import stop_requested

    if args.workers == 1 and not args.gpus:
        result = work(planned, poll=args.poll, max_retries=args.max_retries)
        state = "stopped on request" if result["stopped"] else "done"
        print(f"worker {state}: {result['trained']} trained, {len(result['errors'])} error(s)")
        return result["stopped"]
    dead = run_workers(planned, args.workers, poll=args.poll, recipe=str(args.recipe), imports=args.imports,
                       gpus=parse_gpus(args.gpus), max_retries=args.max_retries)
    for line in dead:
        print(f"nntransfer: {line}", file=sys.stderr)
    stopped = stop_requested()
    print(f"{args.workers} worker(s) {'stopped on request' if stopped else 'done'}"
          f"{f' ({len(dead)} died)' if dead else ''}")
    return stopped


def _run(args) -> int:
    from ..orchestration import fill_tables
    from .analysis import show_results

    experiments = _experiments(args)
    planned = fill_tables(experiments)
    print(f"{len(planned)} training job(s) in the plan; training what is missing with {args.workers} worker(s)")
    stopped = train_locally(planned, args)
    code = show_results(experiments, args)
    if stopped:
        print("stopped on request: the job in hand was checkpointed and released; run again to go on")
        return 0
    return code


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_local_worker_options(p) -> None:
    p.add_argument("--workers", type=_at_least_one, default=1, help="local worker processes sharing the database")
    p.add_argument("--gpus", metavar="IDS", help="GPUs for the local workers, e.g. 0,2: worker i gets GPU "
                   "IDS[i %% len(IDS)] as its only visible device (default: every visible GPU, one per worker)")
    p.add_argument("--max-retries", type=int, default=0, help="retry a failing job this many times before "
                   "recording the error (ConfigErrors are never retried; default 0)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds an idle worker waits before it looks for new "
                   "work again (default 1)")


def recipe_options() -> argparse.ArgumentParser:
    """The options every recipe command takes (a parent parser): the recipe, --set, --grid, --config, --import."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("recipe", help="recipe file: Python defining transfer_experiments/experiments, or YAML/JSON")
    common.add_argument("--set", action="append", default=[], type=_assignment, metavar="PATH=VALUE",
                        help="override a setting of every experiment, e.g. trainer.max_iter=3 or 1.trainer.max_iter=3 "
                             "for step 1 only (repeatable)")
    common.add_argument("--grid", action="append", default=[], type=_assignment, metavar="PATH=V1,V2",
                        help="one experiment per value, all combinations, e.g. trainer.optimizer_options.lr=0.1,0.01 "
                             "or seed=1,2 (seed replicates); values are a YAML flow list without brackets: "
                             "'trainer.milestones=[10,20],[5]', \"dataset.comment='a, b',c\" (one --grid per path)")
    common.add_argument("--config", metavar="FILE", help="YAML/JSON overrides; keys ending in _ hold grid values")
    common.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this module (or .py file) first, in every worker: code that registers models, "
                             "losses, dataset sources or modules outside the recipe (repeatable)")
    return common


def add_commands(sub) -> None:
    from .analysis import add_result_options

    p = sub.add_parser("run", parents=[recipe_options()], help="fill the tables and train what is missing",
                       description="Fill the tables for a recipe and train every missing experiment, transfer "
                                   "steps in order. Prints the results table and writes the HTML report.")
    add_local_worker_options(p)
    add_result_options(p, report_by_default=True)
    p.set_defaults(handler=_run)
