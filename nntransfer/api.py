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


def search(experiment: Any, space: Any, *, metric: str = "score", direction: str | None = None,
           n_trials: int | None = None, sampler: str = "tpe", pruner: Any = "median", study_name: str | None = None,
           workers: int = 1, name: str | None = None, gpus: Sequence[str] | str | None = None,
           imports: Sequence[str] = (), max_retries: int = 0, quiet: bool = False):
    """Hyperparameter search around ``experiment`` with Optuna; returns the study's
    :class:`~nntransfer.orchestration.search.SearchStatus` (counts, best trial, every trial).

    ``experiment``: an Experiment or TransferExperiment (or a dict ``Description -> experiment`` holding one, or
    ``name`` choosing one). ``space``: ``{path: distribution}`` with the paths ``--set`` takes
    (``"1.trainer.optimizer_options.lr"``: step 1 of a transfer experiment) and :func:`~nntransfer.loguniform`,
    :func:`~nntransfer.uniform`, :func:`~nntransfer.integer`, :func:`~nntransfer.choice`, or a YAML/JSON file of it.
    ``metric``: ``"score"`` (the validation score the trainer reports) or ``"validation/<task>/<objective>"``,
    never the test set; ``direction``: default from the metric. ``n_trials``: the study's total (a rerun continues
    it; default: its last budget, or every point of a grid). ``sampler``: tpe, random, grid or cmaes;
    ``pruner``: median, hyperband, none or an Optuna pruner. ``study_name``: default ``<name>-<key hash>``; the
    study lives in the results database, so workers anywhere join it. ``workers``: local processes searching
    together (each with its share of the cores; ``gpus`` one GPU each).
    """
    from .analysis.search import format_status
    from .orchestration.search import make_spec, run_search, search_status

    if importing_script():  # a worker is importing the script that called search(): its work is the parent's
        stop_script_import()
    import_user_code(imports)
    spec = make_spec(experiment, space, name=name, metric=metric, direction=direction, n_trials=n_trials,
                     sampler=sampler, pruner=pruner, study_name=study_name)
    settings = WorkerSettings(workers=workers, gpus=gpus, max_retries=max_retries,
                              imports=tuple(imports) + tuple(caller_code()))
    result = run_search(spec, settings)
    status = search_status(spec.study_name)
    status.run = result
    if not quiet:
        print(format_status(status))
    return status


__all__ = ["apply_overrides", "load_recipe", "run", "search", "train"]
