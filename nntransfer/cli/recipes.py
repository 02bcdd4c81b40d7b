"""Recipe commands of the CLI: run, worker, status, clear-errors (results and clear: cli/analysis.py)."""
from __future__ import annotations

import argparse

from ..configs.errors import ConfigError


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
    from ..recipes.load import apply_overrides, load_recipe, overrides_from_file, parse_value, parse_values

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
    from ..recipes import fill_tables, plan

    experiments = _experiments(args)
    return fill_tables(experiments) if fill else plan(experiments)


def _run(args) -> int:
    from ..recipes import run_workers, work
    from .analysis import show_results

    planned = targets(args, fill=True)
    print(f"{len(planned)} training job(s) in the plan; training what is missing with {args.workers} worker(s)")
    if args.workers <= 1:
        work(planned)
    else:
        run_workers(planned, args.workers, recipe=str(args.recipe))
    return show_results(planned, args)


def _worker(args) -> int:
    from ..recipes import work

    planned = targets(args, fill=True)
    if not args.slurm:
        result = work(planned, poll=args.poll)
        print(f"worker done: {result['trained']} trained, {len(result['errors'])} error(s)")
        return 0
    from ..recipes.slurm import submit_workers

    jobs = submit_workers(planned, jobs=args.jobs, folder=args.folder, cluster=args.cluster,
                          partition=args.partition, gpus=args.gpus, cpus=args.cpus, time_min=args.time,
                          mem_gb=args.mem_gb)
    print("submitted:", " ".join(str(j.job_id) for j in jobs))
    if args.wait:
        for job in jobs:
            result = job.result()
            print(f"job {job.job_id}: {result['trained']} trained, {len(result['errors'])} error(s)")
    return 0


def _status(args) -> int:
    from ..analysis import format_table
    from ..recipes import states

    planned = targets(args, fill=False)
    current = states(planned)
    rows = [{"name": t.description.name, "seed": t.description.seed, "step": t.step, "state": current[t]["state"],
             "score": current[t].get("score"),
             "where": f"{current[t].get('host')}:{current[t].get('pid')}" if current[t]["state"] == "reserved" else "",
             "error": (current[t].get("error") or "")[:60]} for t in planned]
    print(format_table(rows))
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def _clear_errors(args) -> int:
    from ..recipes import clear_errors

    n = clear_errors(targets(args, fill=False))
    print(f"cleared {n} error(s); run the recipe again to retrain them")
    return 0


def recipe_options() -> argparse.ArgumentParser:
    """The options every recipe command takes (a parent parser): the recipe, --set, --grid, --config."""
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
    return common


def add_commands(sub) -> None:
    from .analysis import add_result_options

    common = recipe_options()

    p = sub.add_parser("run", parents=[common], help="fill the tables and train what is missing",
                       description="Fill the tables for a recipe and train every missing experiment, transfer "
                                   "steps in order. Prints the results table and writes the HTML report.")
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing the database")
    add_result_options(p, report_by_default=True)
    p.set_defaults(handler=_run)

    p = sub.add_parser("worker", parents=[common], help="train pending jobs of a recipe (locally or via Slurm)",
                       description="A worker that trains any pending job of the recipe until none is left. With "
                                   "--slurm, submits JOBS such workers through submitit instead.")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks for new work")
    p.add_argument("--slurm", action="store_true", help="submit workers with submitit (pip install nntransfer[slurm])")
    p.add_argument("--jobs", type=int, default=1, help="number of workers to submit")
    p.add_argument("--cluster", default=None, choices=["slurm", "local", "debug"],
                   help="submitit cluster (default: slurm when available, else local)")
    p.add_argument("--folder", default="nntransfer_jobs", help="folder for submitit logs")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per worker")
    p.add_argument("--cpus", type=int, default=4, help="CPU cores per worker")
    p.add_argument("--mem-gb", type=int, default=16, help="memory per worker in GB")
    p.add_argument("--time", type=int, default=24 * 60, help="time limit per worker in minutes")
    p.add_argument("--wait", action="store_true", help="wait for the submitted workers and report")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("status", parents=[common], help="state of every experiment of a recipe",
                       description="pending / reserved (training, with host:pid) / done / error / blocked per "
                                   "experiment and step, with scores.")
    p.set_defaults(handler=_status)

    p = sub.add_parser("clear-errors", parents=[common], help="forget failed jobs so they run again",
                       description="Delete the error records of a recipe's jobs; the next run retrains them.")
    p.set_defaults(handler=_clear_errors)

