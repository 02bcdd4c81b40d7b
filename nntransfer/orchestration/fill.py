"""Filling the tables: check every config once, then write seeds, configs and transfer recipe rows in one transaction.

This is also what ``cfg.add_to_table()`` and ``experiment.add_to_table()`` do (``nntransfer/__init__.py`` sets
:func:`add_to_table` as the core's table writer).
"""
from __future__ import annotations

from typing import Any

from ..configs.experiment import Experiment, TransferExperiment
from ..core.config import BaseConfig
from ..errors import ConfigError
from ..store import bind, db, insert_config, table
from .plan import Target, plan


def fill_tables(experiments: dict) -> list[Target]:
    """Check, then insert configs, seeds and transfer recipe rows (idempotent, all or nothing); returns the plan."""
    from ..runner.checks import check_experiments  # imports the builders (torch): only where tables are filled

    check_experiments(experiments.values())  # names and options resolve before anything is written
    bind()
    with db.transaction():
        for exp in experiments.values():
            _insert(exp)
    return plan(experiments)


def add_to_table(obj: Any) -> Any:
    """Check and insert one config (returns its key) or experiment (returns its key, or a chain's step keys)."""
    from ..runner.checks import check_config, check_experiments  # torch, as above

    if isinstance(obj, BaseConfig):
        check_config(obj)
        bind()
        return insert_config(obj)
    if isinstance(obj, (Experiment, TransferExperiment)):
        check_experiments([obj])
        bind()
        with db.transaction():
            _insert(obj)
        return obj.get_key() if isinstance(obj, Experiment) else [step.get_key() for step in obj]
    raise ConfigError(f"add_to_table takes a config or an experiment, got {type(obj).__name__}")


def _insert(exp: Experiment | TransferExperiment) -> None:
    steps = exp.steps
    for step in steps:
        table("Seed")().insert1({"seed": step.seed}, skip_duplicates=True)
        for cfg in step.configs.values():
            insert_config(cfg)
    if isinstance(exp, TransferExperiment):
        for level in range(len(exp)):
            previous = exp.get_restrictions(level - 1) if level else None
            table("TrainedModelTransferRecipe")().add_entry(exp.get_restrictions(level), previous)


__all__ = ["add_to_table", "fill_tables"]
