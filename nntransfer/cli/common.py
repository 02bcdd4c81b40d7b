"""What the recipe commands share: the recipe options, reading a recipe with its overrides, the local workers, and
printing a recipe's results (``run`` prints them after training, ``results`` on its own)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..core.settings import home
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


def experiments(args: argparse.Namespace) -> dict:
    """The recipe's experiments with --config, then --set and --grid applied (the command line wins over the file)."""
    from ..orchestration.recipes import (
        apply_overrides,
        load_recipe,
        overrides_from_file,
        parse_value,
        parse_values,
        recipe_folder_on_path,
    )
    from ..orchestration.workers import import_user_code

    if args.config and not Path(args.config).is_file():
        raise ConfigError(f"--config {args.config}: no such file")
    if Path(args.recipe).is_file():
        recipe_folder_on_path(args.recipe)  # as for a script: --import may name a package next to the recipe
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
    """The recipe's plan; ``fill``: check the configs and fill the tables first (imports the implementations)."""
    found = experiments(args)
    if fill:
        from ..orchestration.fill import fill_tables

        return fill_tables(found)
    from ..orchestration.plan import plan

    for exp in found.values():  # the checks that need no import: a misspelt name is not "pending"
        for step in exp.steps:
            for cfg in step.configs.values():
                cfg.check_names()
    return plan(found)


def targets_and_trials(args) -> tuple[list, dict]:
    """The recipe's plan followed by the trials of searches around its experiments (``status`` shows them), and the
    trials' records by description (no import of the implementations)."""
    from ..orchestration.plan import plan
    from ..orchestration.search import trial_experiments

    found = experiments(args)
    for exp in found.values():  # the checks that need no import: a misspelt name is not "pending"
        for step in exp.steps:
            for cfg in step.configs.values():
                cfg.check_names()
    trials, records = trial_experiments(found)
    return plan({**found, **trials}), records


def worker_settings(args):
    """The local workers' settings from the command line (:class:`~nntransfer.orchestration.workers.WorkerSettings`)."""
    from ..orchestration.workers import WorkerSettings

    return WorkerSettings(workers=args.workers, gpus=args.gpus, poll=args.poll, max_retries=args.max_retries,
                          recipe=str(args.recipe), imports=tuple(args.imports))


def plan_line(found: dict, planned, workers: int) -> str:
    """What ``run`` is about to do, in jobs: a step shared by several experiments (the same key) is one job."""
    from ..core.keys import key_ident
    from ..orchestration.plan import states

    current = states(planned)
    jobs: dict = {}
    for t in planned:
        jobs.setdefault((t.table, key_ident(t.key)), current[t]["state"])
    count = {state: sum(1 for s in jobs.values() if s == state) for state in set(jobs.values())}
    shared = " (steps with the same key are one job)" if len(jobs) < len(planned) else ""
    parts = [f"{count.get('done', 0)} done", f"{count.get('pending', 0)} to train"]
    if count.get("reserved"):
        parts.append(f"{count['reserved']} in training elsewhere")
    if count.get("error") or count.get("blocked"):
        parts.append(f"{count.get('error', 0)} failed earlier and {count.get('blocked', 0)} after them "
                     "(`nntransfer clear-errors` retries them)")
    who = f"{workers} workers" if workers > 1 else "1 worker"
    return (f"{len(found)} experiment(s) with {len(planned)} step(s): {len(jobs)} training job(s){shared}; "
            f"{', '.join(parts)}; training with {who}")


def train_locally(planned, args) -> bool:
    """Train ``planned`` in this process, or in ``--workers`` local processes (``--gpus``: one GPU each), and say
    what happened. Returns whether training stopped on request (SIGTERM/Ctrl-C: the job in hand was checkpointed
    and released)."""
    from ..orchestration.workers import train_locally as train

    result = train(planned, worker_settings(args))
    for line in result.dead:
        print(f"nntransfer: {line}", file=sys.stderr)
    who = f"{args.workers} workers" if args.workers > 1 else "worker"
    state = "stopped on request" if result.stopped else "done"
    died = f"; {len(result.dead)} worker process(es) died" if result.dead else ""
    print(f"{who} {state}: {result.trained} job(s) trained, {len(result.errors)} failed{died}")
    return result.stopped


def add_slurm_options(p) -> None:
    """The options of commands that submit workers to Slurm (``worker --slurm``, ``search --slurm``)."""
    p.add_argument("--slurm", action="store_true", help="submit workers with submitit (pip install nntransfer[slurm])")
    p.add_argument("--jobs", type=_at_least_one, default=1, help="number of Slurm workers to submit")
    p.add_argument("--cluster", default=None, choices=["slurm", "local", "debug"],
                   help="submitit cluster (default: slurm when available, else local)")
    p.add_argument("--folder", default="nntransfer_jobs", help="folder for submitit logs")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--gpus-per-job", type=int, default=0, help="GPUs per Slurm job")
    p.add_argument("--cpus", type=int, default=4, help="CPU cores per Slurm job")
    p.add_argument("--mem-gb", type=int, default=16, help="memory per Slurm job in GB")
    p.add_argument("--time", type=int, default=24 * 60, help="time limit per Slurm job in minutes")
    p.add_argument("--allow-local-store", action="store_true",
                   help="submit even though the 'nntransfer' store is the local default (only if every node "
                        "shares this machine's $NNTRANSFER_HOME)")
    p.add_argument("--signal-delay", type=int, default=90, metavar="S",
                   help="seconds before the time limit at which Slurm warns a job (USR2): it checkpoints and is "
                        "requeued (default 90)")
    p.add_argument("--max-requeues", type=int, default=3, help="how often a job that reaches its time limit is "
                                                               "requeued (default 3)")
    p.add_argument("--single-node", action="store_true",
                   help="every Slurm node is this machine: the jobs use its embedded database and default store")
    p.add_argument("--wait", action="store_true",
                   help="wait until every submitted job has finished for good (requeues included), then report")
    p.add_argument("--wait-timeout", type=float, default=None, metavar="MIN",
                   help="with --wait: stop waiting after MIN minutes (the jobs go on)")
    p.add_argument("--poll-slurm", type=float, default=10.0, metavar="S",
                   help="with --wait: seconds between looks at squeue (default 10)")


def slurm_options(args) -> dict:
    """The keyword arguments of ``submit_workers`` from the Slurm options."""
    return dict(folder=args.folder, cluster=args.cluster, partition=args.partition, gpus=args.gpus_per_job,
                cpus=args.cpus, time_min=args.time, mem_gb=args.mem_gb, allow_local_store=args.allow_local_store,
                signal_delay_s=args.signal_delay, max_requeues=args.max_requeues, single_node=args.single_node)


def report_submitted(jobs, args, planned=(), before=None) -> int:
    """Say what was submitted and where its logs are; with ``--wait`` follow the jobs until each has finished for good
    (requeues included) and report what they trained of ``planned`` (none planned, as for a search: only the jobs'
    ends). Returns the command's exit code."""
    from ..orchestration.slurm import EXPERIMENT_INDEX, is_slurm_job, wait_for_workers

    print("submitted:", " ".join(str(j.job_id) for j in jobs))
    for job in jobs:
        print(f"job {job.job_id}: log {job.paths.stderr}")
    on_slurm = bool(jobs) and is_slurm_job(jobs[0])
    if on_slurm:
        print(f"which job trains which experiment: {jobs[0].paths.folder / EXPERIMENT_INDEX}; progress: "
              f"nntransfer status {args.recipe}")
    if not args.wait:
        return 0
    if not on_slurm:  # submitit's local executor: its result is the one attempt's
        for job in jobs:
            result = job.result()
            print(f"job {job.job_id}: {result['trained']} trained, {len(result['errors'])} error(s)"
                  + (" (stopped)" if result.get("stopped") else ""))
        return 0
    waited = wait_for_workers(jobs, list(planned), before, poll=args.poll_slurm,
                              timeout=None if args.wait_timeout is None else args.wait_timeout * 60)
    for job_id, state in waited.jobs.items():
        print(f"job {job_id}: {state}, log {waited.logs[job_id]}")
    if not planned:  # a search: what its jobs trained is in the study, which the caller shows
        print("stopped waiting" if waited.timed_out else "all jobs finished")
        return 1 if waited.timed_out else 0
    print(f"{'stopped waiting' if waited.timed_out else 'all jobs finished'}: {waited.trained} trained, "
          f"{len(waited.errors)} error(s), {len(waited.open)} not done")
    for label in waited.errors:
        print(f"error: {label} (nntransfer errors {args.recipe})")
    if waited.open and not waited.timed_out:
        print(f"{len(waited.open)} experiment(s) are still pending (cancelled jobs release theirs): submit workers "
              "again to train them")
    return 1 if waited.errors or waited.open or waited.timed_out else 0


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


def default_report_dir(recipe) -> Path:
    """Where ``run`` writes a recipe's report unless told otherwise: ``$NNTRANSFER_HOME/reports/<recipe name>``."""
    return home() / "reports" / Path(recipe).stem


def show_results(experiments: dict, args) -> int:
    """Print the results table and the comparison; write what the options ask for. Exit code 1 if a job failed."""
    from ..analysis import comparison, entries, format_table, plot, results_frame, summary, write_report
    from ..analysis.search import studies as search_studies
    from ..analysis.text import cell

    found = entries(experiments)  # states, outputs, provenance and configs, read once
    rows = summary(found)
    compared = comparison(rows, args.metric)  # a --metric no finished step reports: a ConfigError before any output
    print(format_table(rows))
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
            index = write_report(found, report, title=Path(args.recipe).stem, metric=args.metric,
                                 studies=search_studies(experiments))
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



__all__ = ["add_local_worker_options", "add_result_options", "add_slurm_options", "experiments", "plan_line",
           "recipe_options", "report_submitted", "show_results", "slurm_options", "targets", "targets_and_trials",
           "train_locally", "worker_settings"]
