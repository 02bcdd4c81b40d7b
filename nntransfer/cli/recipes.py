"""Recipe commands of the CLI: run and results (workers, status and errors are in ``workers.py``)."""
from __future__ import annotations

import argparse
import sys


def _parse_value(text: str):
    """CLI values are YAML scalars/lists: ``3`` -> int, ``0.1`` -> float, ``[1,2]`` -> list, ``adam`` -> str."""
    import yaml

    return yaml.safe_load(text)


def _assignment(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected PATH=VALUE, got {text!r}")
    path, _, value = text.partition("=")
    return path.strip(), value


def _experiments(args: argparse.Namespace) -> dict:
    from ..recipes.load import apply_overrides, load_recipe, overrides_from_file
    from ..recipes.workers import import_user_code

    import_user_code(getattr(args, "imports", []))  # before the recipe: it may name what they register
    experiments = load_recipe(args.recipe)
    sets, grid = {}, {}
    if args.config:
        sets, grid = overrides_from_file(args.config)
    sets.update({path: _parse_value(value) for path, value in args.set})
    for path, values in args.grid:
        grid[path] = [_parse_value(v) for v in values.split(",")]
    return apply_overrides(experiments, sets, grid)


def _targets(args, fill: bool):
    from ..recipes import fill_tables, plan

    experiments = _experiments(args)
    return fill_tables(experiments) if fill else plan(experiments)


def _run(args) -> int:
    from ..analysis import comparison, format_table, plot, summary
    from ..recipes import run_workers, work
    from ..recipes.workers import parse_gpus

    targets = _targets(args, fill=True)
    print(f"{len(targets)} training job(s) in the plan; training what is missing with {args.workers} worker(s)")
    stopped = False
    if args.workers <= 1:
        stopped = work(targets, max_retries=args.max_retries)["stopped"]
    else:
        for line in run_workers(targets, args.workers, recipe=str(args.recipe), imports=args.imports,
                                gpus=parse_gpus(args.gpus), max_retries=args.max_retries):
            print(f"nntransfer: {line}", file=sys.stderr)
    rows = summary(targets)
    print(format_table(rows))
    if len({r["name"] for r in rows}) > 1:
        print("\nComparison (last step of each experiment, mean ± std over seeds):")
        print(format_table(comparison(rows)))
    if args.plot:
        print(f"plot written to {plot(rows, args.plot)}")
    if stopped:
        print("stopped on request: the job in hand was checkpointed and released; run again to go on")
        return 0
    return 1 if any(r["state"] in ("error", "blocked") for r in rows) else 0


def _results(args) -> int:
    from ..analysis import format_table, plot, summary

    rows = summary(_targets(args, fill=False))
    print(format_table(rows))
    if args.plot:
        print(f"plot written to {plot(rows, args.plot, metric=args.metric)}")
    return 0


def add_local_worker_options(p) -> None:
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing the database")
    p.add_argument("--gpus", metavar="IDS", help="GPUs for the local workers, e.g. 0,2: worker i gets GPU "
                   "IDS[i %% len(IDS)] as its only visible device (default: every visible GPU, one per worker)")
    p.add_argument("--max-retries", type=int, default=0, help="retry a failing job this many times before "
                   "recording the error (ConfigErrors are never retried; default 0)")


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("recipe", help="recipe file: Python defining transfer_experiments/experiments, or YAML/JSON")
    common.add_argument("--set", action="append", default=[], type=_assignment, metavar="PATH=VALUE",
                        help="override a setting of every experiment, e.g. trainer.max_iter=3 or 1.trainer.max_iter=3 "
                             "for step 1 only (repeatable)")
    common.add_argument("--grid", action="append", default=[], type=_assignment, metavar="PATH=V1,V2",
                        help="one experiment per value, all combinations, e.g. trainer.optimizer_options.lr=0.1,0.01 "
                             "or seed=1,2 (repeatable)")
    common.add_argument("--config", metavar="FILE", help="YAML/JSON overrides; keys ending in _ hold grid values")
    common.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this module (or .py file) first, in every worker: code that registers models, "
                             "losses, dataset sources or modules outside the recipe (repeatable)")
    return common


def add_commands(sub) -> None:
    common = common_options()

    p = sub.add_parser("run", parents=[common], help="fill the tables and train what is missing",
                       description="Fill the tables for a recipe and train every missing experiment, transfer "
                                   "steps in order. Prints the results table.")
    add_local_worker_options(p)
    p.add_argument("--plot", metavar="FILE", help="also save a bar plot of the scores")
    p.set_defaults(handler=_run)

    p = sub.add_parser("results", parents=[common], help="scores and test metrics of a recipe",
                       description="Scores and test metrics of every finished experiment of a recipe.")
    p.add_argument("--plot", metavar="FILE", help="save a bar plot (mean ± std over seeds)")
    p.add_argument("--metric", default="score",
                   help="column to plot, e.g. test/img_classification/accuracy (default: score)")
    p.set_defaults(handler=_results)
