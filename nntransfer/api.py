"""The functions users call from recipes and notebooks, above every layer: ``run`` (fill the tables and train
what is missing), ``train`` (in memory, no database) and the recipe helpers. ``from nntransfer import run``."""
from __future__ import annotations

from typing import Any, Sequence

from .analysis import format_table, summary
from .orchestration.fill import fill_tables
from .orchestration.recipes import apply_overrides, load_recipe, normalize
from .orchestration.workers import (
    WorkerSettings,
    caller_code,
    import_user_code,
    importing_script,
    stop_script_import,
    train_locally,
)
from .runner import train


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
    settings = WorkerSettings(workers=workers, gpus=gpus, max_retries=max_retries,
                              imports=tuple(imports) + tuple(caller_code()))
    train_locally(targets, settings)
    rows = summary(targets)
    if not quiet:
        print(format_table(rows))
    return rows


__all__ = ["apply_overrides", "load_recipe", "run", "train"]
