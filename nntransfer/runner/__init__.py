"""Building and training experiments and transfer chains in memory, with no database.

``train(experiment)`` builds data and model, trains each step of a chain in order, hands parameters and generated
data to later steps, and returns the results (scores, per-epoch history, test results, the trained models)::

    from nntransfer import train
    result = train(TransferExperiment([pretrain, finetune]))
    result.last.test["img_classification"]["accuracy"], result.last.model

The tables train through the same :func:`~nntransfer.runner.steps.train_step`, so a step trained here gives the
numbers the populated tables give for the same key and seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from ..configs.experiment import Description, Experiment, TransferExperiment
from ..core.keys import key_ident
from ..errors import ConfigError
from ..trainer import StopToken
from ..trainer.handover import copy_model
from .checks import check_config, check_experiments
from .steps import Handover, StepResult, StepSpec, build, starts_from_previous, train_step


@dataclass
class ChainResult:
    """The results of a transfer experiment's steps, in order; ``last`` is the result the chain is about."""

    steps: list[StepResult]

    @property
    def last(self) -> StepResult:
        return self.steps[-1]

    def __getitem__(self, step: int) -> StepResult:
        return self.steps[step]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[StepResult]:
        return iter(self.steps)


def train(experiments: Any, *, stop: StopToken | None = None, recipe=None):
    """Train experiments in memory (no database) and return their results.

    ``experiments``: an ``Experiment`` (returns its :class:`StepResult`), a ``TransferExperiment`` (returns a
    :class:`ChainResult`), or a dict ``Description -> experiment`` / a list of them (returns a dict of results,
    keyed like the input; a list by position). Steps shared by several chains (the same key, e.g. one pretraining)
    are trained once. Every config is checked before anything trains. SIGTERM/Ctrl-C during training stop the run
    after a checkpoint (``TrainingInterrupted``); ``stop`` lets other code ask the same.
    """
    if isinstance(experiments, (Experiment, TransferExperiment)):
        return train({None: experiments}, stop=stop, recipe=recipe)[None]
    if isinstance(experiments, Mapping):
        items = dict(experiments)
    elif isinstance(experiments, (list, tuple)):
        items = dict(enumerate(experiments))
    else:
        raise ConfigError(f"train takes an Experiment, a TransferExperiment, or a dict or list of them; got "
                          f"{type(experiments).__name__}")
    for name, exp in items.items():
        if not isinstance(exp, (Experiment, TransferExperiment)):
            raise ConfigError(f"{name!r}: expected an Experiment or TransferExperiment, got {type(exp).__name__}")
    check_experiments(items.values())
    done: dict[tuple, StepResult] = {}
    out = {}
    for name, exp in items.items():
        if isinstance(exp, Experiment):
            out[name] = _train_once(StepSpec.from_experiment(exp), Handover(), done, stop, recipe)
        else:
            out[name] = ChainResult(_train_chain(exp, done, stop, recipe))
    return out


def _train_chain(chain: TransferExperiment, done: dict, stop, recipe) -> list[StepResult]:
    results: list[StepResult] = []
    for level, step in enumerate(chain):
        spec = StepSpec.from_experiment(step, chain.get_restrictions(level))
        previous = results[-1] if results else None
        handover = Handover(
            model_state=previous.model_state if previous is not None and starts_from_previous(spec.trainer_config)
            else None,
            # the data of the nearest earlier step that generated some (as the tables hand it over)
            transfer_data=next((r.transfer_data for r in reversed(results) if r.transfer_data is not None), None),
            previous_model=copy_model(previous.model) if previous is not None else None)
        results.append(_train_once(spec, handover, done, stop, recipe))
    return results


def _train_once(spec: StepSpec, handover: Handover, done: dict, stop, recipe) -> StepResult:
    ident = key_ident(spec.key)
    if ident not in done:
        done[ident] = train_step(spec, handover, stop=stop, recipe=recipe)
    return done[ident]


__all__ = ["ChainResult", "Description", "Handover", "StepResult", "StepSpec", "build", "check_config",
           "check_experiments", "train", "train_step"]
