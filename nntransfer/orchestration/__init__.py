"""Recipes and ``run()``: fill the tables for a set of experiments and train whatever is missing.

``load`` reads recipes and expands overrides and grids, ``plan`` turns experiments into table rows and
reports their state, ``workers`` trains them (one process or many, through DataJoint's job queue), and
``slurm`` submits workers to a cluster.
"""
from __future__ import annotations

from typing import Any, Sequence

from .recipes import apply_overrides, expand, grid_points, load_recipe, normalize
from .plan import TRAINED, TRANSFERRED, Target, clear_errors, fill_tables, plan, states
from .workers import (caller_code, import_user_code, importing_script, parse_gpus, reclaim_dead_reservations,
                      run_workers, stop_script_import, work)


def run(experiments: Any, workers: int = 1, quiet: bool = False, imports: Sequence[str] = (),
        gpus: Sequence[str] | str | None = None, max_retries: int = 0) -> list[dict]:
    """Fill the tables for ``experiments`` and train everything missing; returns the summary rows.

    ``experiments``: dict ``Description -> Experiment | TransferExperiment`` (or a list, or one).
    Transfer steps run in order: step n+1 starts as soon as step n is trained.
    ``workers > 1`` trains in that many local processes; each imports ``imports`` (modules or ``.py``
    files) and the script or module that called ``run()``, so models, losses, sources and modules
    registered there are known in every worker. ``gpus`` (e.g. ``"0,2"``; default all visible) spreads
    the workers over GPUs, one each, round-robin. ``max_retries``: retry failing jobs (not ConfigErrors).
    """
    if importing_script():  # a worker is importing the script that called run(): its work is the parent's
        stop_script_import()
    experiments = normalize(experiments)
    import_user_code(imports)  # before the names in the configs are checked: these may register them
    targets = fill_tables(experiments)
    if workers <= 1:
        work(targets, max_retries=max_retries)
    else:
        run_workers(targets, workers, imports=list(imports) + caller_code(), max_retries=max_retries,
                    gpus=parse_gpus(",".join(gpus) if isinstance(gpus, (list, tuple)) else gpus))
    from ..analysis import format_table, summary

    rows = summary(targets)
    if not quiet:
        print(format_table(rows))
    return rows


__all__ = ["TRAINED", "TRANSFERRED", "Target", "apply_overrides", "clear_errors", "expand", "fill_tables",
           "grid_points", "import_user_code", "load_recipe", "normalize", "plan", "reclaim_dead_reservations", "run", "run_workers",
           "states", "work"]
