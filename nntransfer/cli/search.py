"""The ``search`` command: hyperparameter search around one experiment of a recipe (Optuna, on the results
database); ``--status`` shows a study's trials and its best configuration."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_local_worker_options,
    add_slurm_options,
    experiments,
    report_submitted,
    slurm_options,
    worker_settings,
)


def _search(args) -> int:
    from ..errors import ConfigError
    from ..store.studies import require_optuna

    require_optuna()  # before anything else: says how to install it
    found = experiments(args)
    if args.status:
        return _status(args, found)
    if not args.space:
        raise ConfigError("nntransfer search needs --space FILE (a YAML/JSON search space), or --status to see "
                          "the searches of this recipe")
    from ..orchestration.search import make_spec, run_search, submit_search

    spec = make_spec(found, args.space, name=args.name, metric=args.metric, direction=args.direction,
                     n_trials=args.trials, sampler=args.sampler, pruner=args.pruner, study_name=args.study,
                     recipe=str(args.recipe))
    settings = worker_settings(args)
    print(f"study {spec.study_name}: {spec.n_trials} trials, {spec.sampler} sampler, pruner {spec.pruner}, "
          f"{spec.direction} {spec.metric}")
    if args.slurm:
        if args.gpus:
            raise ConfigError("--gpus chooses local GPUs; for Slurm jobs use --gpus-per-job N")
        code = report_submitted(submit_search(spec, settings, jobs=args.jobs, **slurm_options(args)), args)
        if args.wait:  # the trials the jobs ran, and the best so far
            _show(spec.study_name, args)
        return code
    result = run_search(spec, settings)
    state = "stopped on request" if result.stopped else "done"
    if args.workers > 1:  # the other processes' counts are in the study's status below
        print(f"{args.workers} search workers {state}")
    else:
        print(f"search worker {state}: {result.trained} step(s) trained, {len(result.errors)} failed trial(s)")
    _show(spec.study_name, args)
    if args.report:
        _report(found, [spec.study_name], args)
    return 0


def _status(args, found: dict) -> int:
    from ..orchestration.search import studies_of

    names = [args.study] if args.study else studies_of(
        {d: e for d, e in found.items() if args.name is None or d.name == args.name})
    if not names:
        print(f"no search around the experiments of {args.recipe} yet: nntransfer search {args.recipe} --space FILE "
              "--trials N")
        return 0
    for name in names:
        _show(name, args)
    if args.report:
        _report(found, names, args)
    return 0


def _show(study_name: str, args) -> None:
    from ..analysis.search import format_status, trials_table
    from ..orchestration.search import search_status

    status = search_status(study_name)
    if args.status and status.trials:
        print(trials_table(status))
    print(format_status(status, args.recipe))


def _report(found: dict, studies: list[str], args) -> None:
    from ..analysis import write_report

    index = write_report(found, args.report, title=Path(args.recipe).stem, studies=studies)
    print(f"report written to {index}")


def add_commands(sub, recipe_options: argparse.ArgumentParser) -> None:
    from ..configs.space import PRUNERS, SAMPLERS

    p = sub.add_parser(
        "search", parents=[recipe_options], help="hyperparameter search around an experiment of a recipe (Optuna)",
        description="Search config paths of one experiment of the recipe over the space in --space (YAML/JSON: "
                    "path: {loguniform: [1e-4, 0.1]} | {uniform: [a, b]} | {int: [a, b]} | {choice: [...]}). "
                    "Every trial is an ordinary experiment in the tables (a configuration trained before is reused); "
                    "the Optuna study lives in the results database, so workers anywhere join it by name. Kill a "
                    "worker and start it again: the study goes on. Needs pip install 'nntransfer[search]'.")
    p.add_argument("--space", metavar="FILE", help="the search space (YAML or JSON)")
    p.add_argument("--trials", type=int, metavar="N", help="trials of the study in total, earlier runs included "
                   "(default: the study's last budget; a grid: all its points)")
    p.add_argument("--name", help="the experiment of the recipe to search around (when it has several)")
    p.add_argument("--metric", default="score", help="what trials are selected on: score (the validation score the "
                   "trainer reports; default) or validation/<task>/<objective>; never the test set")
    p.add_argument("--direction", choices=["maximize", "minimize"],
                   help="default: from the metric (loss: minimize; accuracy, correlation: maximize)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="default: tpe")
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="stop unpromising trials early from their validation during training (default: median)")
    p.add_argument("--study", metavar="NAME", help="the study's name (default: the experiment's name and key hash)")
    p.add_argument("--status", action="store_true", help="show the study's trials, the best so far and its "
                   "configuration as --set overrides and a recipe snippet; search nothing")
    p.add_argument("--report", metavar="DIR", help="write the HTML report with the search's plots and trials to DIR")
    add_local_worker_options(p)
    add_slurm_options(p)
    p.set_defaults(handler=_search)
