"""Result commands of the CLI: ``results`` (tables, plots, the HTML report, TensorBoard) and ``clear``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def default_report_dir(recipe) -> Path:
    """Where ``run`` writes a recipe's report unless told otherwise: ``$NNTRANSFER_HOME/reports/<recipe name>``."""
    from ..store.db import home

    return home() / "reports" / Path(recipe).stem


def show_results(experiments: dict, args) -> int:
    """Print the results table and the comparison; write what the options ask for. Exit code 1 if a job failed."""
    from ..analysis import comparison, entries, format_table, plot, results_frame, summary, write_report
    from ..analysis.text import cell

    found = entries(experiments)  # states, outputs, provenance and configs, read once
    rows = summary(found)
    print(format_table(rows))
    compared = comparison(rows, args.metric)  # a --metric no finished step reports is a ConfigError here
    if len({r["name"] for r in rows}) > 1 and compared:
        print(f"\nComparison: {compared[0]['metric']} of each experiment's last step "
              "(mean, sample std with ddof=1, n seeds):")
        print(format_table([{"name": r["name"], "mean": r["mean"], "std": r["std"], "n": r["n"]} for r in compared]))
    report = args.report
    if report is None and args.default_report and not args.no_report:
        report = default_report_dir(args.recipe)
    if args.plot:
        print(f"plot written to {plot(results_frame(found), args.plot, metric=args.metric)}")
    if args.csv:
        results_frame(found).to_csv(args.csv, index=False)
        print(f"results written to {args.csv}")
    if report:
        try:
            index = write_report(found, report, title=Path(args.recipe).stem, metric=args.metric)
        except (OSError, ValueError) as err:
            print(f"nntransfer: the report could not be written to {report}: {err}", file=sys.stderr)
        else:
            print(f"report written to {index}")
    if args.tensorboard:
        print(tensorboard_command(found, args.recipe))
    failed = [r for r in rows if r["state"] in ("error", "blocked")]
    if failed:
        print(f"{len(failed)} job(s) failed or are blocked: `nntransfer status {args.recipe}` shows why; "
              f"e.g. {failed[0]['name']} (seed {cell(failed[0]['seed'])}, step {failed[0]['step']})")
    return 1 if failed else 0


def tensorboard_command(found, recipe) -> str:
    """Link each entry's event directory under ``runs/<recipe>/<name>/seed<seed>-step<step>``; the command."""
    from ..trainer.tensorboard import run_dir, runs_root

    view = runs_root() / Path(recipe).stem
    linked = 0
    for e in found:
        target = run_dir(dict(e.key))
        if not target.is_dir():
            continue  # not trained with tensorboard=True (yet)
        link = view / _safe(e.name) / f"seed{e.seed}-step{e.step}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
        linked += 1
    if not linked:
        return ("no TensorBoard logs for this recipe: train with trainer.tensorboard=True "
                "(e.g. --set trainer.tensorboard=true; it is not part of the key)")
    return f"{linked} run(s) linked; view them with:\n  tensorboard --logdir {view}"


def _safe(name: str) -> str:
    return name.replace(os.sep, "∕").replace("\0", "") or "_"


def add_result_options(p: argparse.ArgumentParser, report_by_default: bool) -> None:
    p.add_argument("--metric", default=None,
                   help="metric to compare and plot, e.g. score or test/img_classification/accuracy "
                        "(default: the first test accuracy, else score)")
    p.add_argument("--plot", metavar="FILE", help="save the comparison plot (.png, .svg or .pdf)")
    p.add_argument("--csv", metavar="FILE", help="save the results frame (one row per entry and step) as CSV")
    if report_by_default:
        p.add_argument("--report", metavar="DIR",
                       help="write the HTML report here (default: $NNTRANSFER_HOME/reports/<recipe name>)")
        p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    else:
        p.add_argument("--report", metavar="DIR", help="write figures and a self-contained index.html to DIR")
    p.set_defaults(default_report=report_by_default, no_report=False)
    p.add_argument("--tensorboard", action="store_true",
                   help="link the recipe's TensorBoard logs by name and print the `tensorboard --logdir` command")


def _results(args) -> int:
    from .recipes import _experiments

    return show_results(_experiments(args), args)


def _clear(args) -> int:
    from ..analysis import format_table
    from ..orchestration.clear import clear_results, plan_clearing
    from .recipes import targets

    clearing = plan_clearing(targets(args, fill=False), step=args.step, name=args.name)
    if not clearing.chosen:
        print("nothing to clear: no finished result matches")
        return 0
    print(f"{len(clearing.chosen)} result(s) to delete:")
    print(format_table([{"name": t.description.name, "seed": t.description.seed, "step": t.step}
                        for t in clearing.chosen]))
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
    p.add_argument("--name", metavar="PATTERN", help="only experiments whose name matches this glob, e.g. 'baseline*'")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.set_defaults(handler=_clear)
