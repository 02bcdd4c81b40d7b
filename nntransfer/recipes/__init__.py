"""Recipes and ``run()``: fill the tables for a set of experiments and train whatever is missing.

``load`` reads recipes and expands overrides and grids, ``plan`` turns experiments into table rows and
reports their state, ``workers`` trains them (one process or many, through DataJoint's job queue), and
``slurm`` submits workers to a cluster.
"""
from __future__ import annotations

from typing import Any

from .load import apply_overrides, expand, grid_points, load_recipe, normalize
from .plan import TRAINED, TRANSFERRED, Target, clear_errors, fill_tables, plan, states
from .workers import reclaim_dead_reservations, run_workers, work


def run(experiments: Any, workers: int = 1, quiet: bool = False) -> list[dict]:
    """Fill the tables for ``experiments`` and train everything missing; returns the summary rows.

    ``experiments``: dict ``Description -> Experiment | TransferExperiment`` (or a list, or one).
    Transfer steps run in order: step n+1 starts as soon as step n is trained.
    """
    experiments = normalize(experiments)
    targets = fill_tables(experiments)
    if workers <= 1:
        work(targets)
    else:
        run_workers(targets, workers)
    from ..analysis import format_table, summary

    rows = summary(targets)
    if not quiet:
        print(format_table(rows))
    return rows


__all__ = ["TRAINED", "TRANSFERRED", "Target", "apply_overrides", "clear_errors", "expand", "fill_tables",
           "grid_points", "load_recipe", "normalize", "plan", "reclaim_dead_reservations", "run", "run_workers",
           "states", "work"]
