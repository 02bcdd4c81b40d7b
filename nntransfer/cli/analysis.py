"""Result commands of the CLI: ``results`` (tables, plots, the HTML report, TensorBoard) and ``clear``."""
from __future__ import annotations

import argparse
import sys

from .common import add_result_options, experiments, show_results, targets


def _results(args) -> int:
    return show_results(experiments(args), args)


def _clear(args) -> int:
    from ..analysis import format_table
    from ..errors import ConfigError
    from ..orchestration.clear import clear_results, matching_names, plan_clearing

    planned = targets(args, fill=False)
    if args.name is not None and not matching_names(planned, args.name):
        names = list(dict.fromkeys(t.description.name for t in planned))
        raise ConfigError(f"--name {args.name!r} is no experiment name of {args.recipe} and matches none as a glob; "
                          f"its names: {', '.join(names)}")
    clearing = plan_clearing(planned, step=args.step, name=args.name)
    if not clearing.chosen:
        print("nothing to clear: no finished result matches")
        return 0
    print(f"{len(clearing.chosen)} result(s) to delete:")
    print(format_table([{"name": t.description.name, "seed": t.description.seed, "step": t.step}
                        for t in clearing.chosen]))
    if clearing.shared:
        names = sorted({t.description.name for t in clearing.shared})
        print(f"the same result row(s) belong to {len(names)} other experiment name(s) of this recipe (same "
              "configuration and seed: one row each), which become pending too:")
        print(format_table([{"name": t.description.name, "seed": t.description.seed, "step": t.step}
                            for t in clearing.shared]))
    if clearing.later:
        print(f"and {len(clearing.later)} later step(s) trained from them (in this or other recipes), which "
              "would otherwise keep results of parameters that no longer exist:")
        print(format_table([{"step": k["transfer_step"], "seed": k["seed"], "dataset_hash": k["dataset_hash"],
                             "trainer_hash": k["trainer_hash"]} for k in clearing.later]))
    if not args.yes:
        if not sys.stdin.isatty():
            print("nntransfer: not deleting without confirmation: pass --yes", file=sys.stderr)
            return 2
        if input(f"Delete these {len(clearing)} result(s)? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    n = clear_results(clearing)
    print(f"deleted {n} result(s); `nntransfer run {args.recipe}` trains them again")
    return 0


def add_commands(sub, recipe_options: argparse.ArgumentParser) -> None:
    p = sub.add_parser("results", parents=[recipe_options], help="scores, comparisons, plots and the report of a recipe",
                       description="Scores and test metrics of every experiment of a recipe, the comparison of "
                                   "their last steps (mean, sample std, n), and on request a plot, a CSV, the "
                                   "HTML report and the TensorBoard command.")
    add_result_options(p, report_by_default=False)
    p.set_defaults(handler=_results)

    p = sub.add_parser("clear", parents=[recipe_options], help="delete results so that the next run retrains them",
                       description="Delete finished results of a recipe (all, one step, or names matching a "
                                   "pattern) and the later transfer steps trained from them, so that the next "
                                   "run trains them again. Asks before deleting unless --yes.")
    p.add_argument("--step", type=int, help="only this step of each experiment (0 is the first)")
    p.add_argument("--name", metavar="PATTERN",
                   help="only this experiment, or those whose name matches this glob, e.g. 'baseline*' (a name the "
                        "recipe has is taken literally: grid names contain [...])")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.set_defaults(handler=_clear)
