"""The full check of configs before anything is written or trained: every builder resolves, every name a config
gives resolves to an implementation, and options fit what they are given to.

``BaseConfig.check_names`` does what needs no import (``status`` runs it); this module imports the builders and
the implementations (torch) and runs once per distinct config when the tables are filled.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Iterable

import torch

from ..configs import ImageDatasetConfig, ModelConfig, NeuralModelConfig, TrainerConfig
from ..configs.experiment import Experiment, TransferExperiment
from ..configs.registries import CORES, LOSSES, METRICS, MODELS, MODULES, SOURCES
from ..core.config import BaseConfig
from ..errors import ConfigError
from ..models.skeleton import skeleton
from ..trainer.losses import check_loss_options
from ..trainer.modules.base import check_module_options
from ..trainer.patterns import check_patterns


def check_config(cfg: BaseConfig) -> None:
    """ConfigError unless ``cfg``'s builder and every name and option it gives resolve (imports them)."""
    cfg.check_names()
    cfg.resolve_fn()
    for cls, check in _CHECKS:
        if isinstance(cfg, cls):
            check(cfg)


def check_experiments(experiments: Iterable[Experiment | TransferExperiment]) -> None:
    """:func:`check_config` for every distinct config of these experiments (each once), then the ``freeze`` and
    ``reset`` patterns of every step against its model (:func:`check_step_patterns`, each combination once)."""
    experiments = list(experiments)
    seen, steps = set(), set()
    for exp in experiments:
        for step in exp.steps:
            for cfg in step.configs.values():
                identity = (type(cfg), cfg.to_json())
                if identity not in seen:
                    seen.add(identity)
                    check_config(cfg)
    for exp in experiments:
        for step in exp.steps:
            # freeze/reset are TrainerConfig's; a trainer config of nnfabrik's kind (a BaseConfig) has neither
            if not isinstance(step.trainer, TrainerConfig) or not (step.trainer.freeze or step.trainer.reset):
                continue
            # what the names depend on: the model config and, for neural models, the sessions (one readout each)
            identity = (type(step.model), step.model.to_json(), tuple(getattr(step.dataset, "sessions", None) or ()),
                        tuple(step.trainer.freeze), tuple(step.trainer.reset))
            if identity not in steps:
                steps.add(identity)
                check_step_patterns(step)


def check_step_patterns(step: Experiment) -> None:
    """ConfigError if a ``freeze``/``reset`` pattern of the step's trainer names nothing in the step's model, listing
    the names there are. The model is built without data (:func:`nntransfer.models.skeleton.skeleton`: on the meta
    device); one that only its data can size is checked by the trainer when the job starts."""
    try:
        model = skeleton(step.model, step.dataset)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - it needs its data after all: the trainer checks when the job starts
        return
    if model is not None:
        name = f"{type(step.model).__name__}(type={step.model.type!r})" if isinstance(step.model, ModelConfig) \
            else type(step.model).__name__
        check_patterns(model, step.trainer.freeze, step.trainer.reset, name)


def _check_dataset(cfg: ImageDatasetConfig) -> None:
    if cfg.fn == ImageDatasetConfig.fn:  # another builder may read dataset_cls otherwise
        SOURCES.validate_name(cfg.dataset_cls)


def _check_model(cfg: ModelConfig) -> None:
    if type(cfg).fn == ModelConfig.fn and cfg.fn == ModelConfig.fn:  # another builder may read type otherwise
        MODELS.validate_name(cfg.type)


def _check_neural_model(cfg: NeuralModelConfig) -> None:
    if cfg.fn != NeuralModelConfig.fn:
        return
    if CORES.knows(cfg.type):
        CORES.validate_name(cfg.type)
        return
    try:
        MODELS.validate_name(cfg.type)  # a classifier cut at core_layer
    except ConfigError as err:
        raise ConfigError(f"NeuralModelConfig.type={cfg.type!r} is neither a neural core ({', '.join(CORES.names())}) "
                          f"nor a classification model: {err}") from None


def _check_trainer(cfg: TrainerConfig) -> None:
    extra = sorted(set(type(cfg).fields()) - set(TrainerConfig.fields()))
    if extra and cfg.fn == TrainerConfig.fn:
        raise ConfigError(
            f"{type(cfg).__name__} adds the fields {extra}, which nntransfer's trainer ({TrainerConfig.fn}) does not "
            "take: give the class its own fn, e.g. one that calls Trainer(model, dataloaders, seed, "
            f"{type(cfg).__name__}(**config), checkpoints=checkpoints, cb=cb).train(); options of main-loop modules "
            "belong in module_options")
    _check_optimizer(cfg)
    for name in cfg.loss_functions.values():
        check_loss_options(name, dict(cfg.loss_options.get(name, {})), LOSSES.get(name))
    for name in cfg.metrics:
        METRICS.validate_name(name)
    for name in cfg.main_loop_modules:
        MODULES.validate_name(name)
    check_module_options(cfg)


def _check_optimizer(cfg: TrainerConfig) -> None:
    """The optimizer exists, takes these options, and numbers are not given as strings (``lr="1e-3"``)."""
    cls = getattr(torch.optim, cfg.optimizer, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        names = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                 and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)]
        lower = {n.lower(): n for n in names}
        close = difflib.get_close_matches(cfg.optimizer.lower(), list(lower), n=1)
        hint = f"did you mean {lower[close[0]]!r}? " if close else ""
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r} in TrainerConfig.optimizer: {hint}use a "
                          "torch.optim class name such as SGD, Adam, AdamW")
    parameters = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    for name, value in cfg.optimizer_options.items():
        if name not in parameters or name == "params":
            known = [n for n in parameters if n != "params"]
            raise ConfigError(f"TrainerConfig.optimizer_options[{name!r}]: {cfg.optimizer} has no option "
                              f"{name!r}; its options: {', '.join(known)}")
        default = parameters[name].default
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and isinstance(value, str):
            raise ConfigError(f"TrainerConfig.optimizer_options[{name!r}] is the string {value!r}; "
                              f"{cfg.optimizer} takes a number there: write it without quotes")


# (config class, its check): applied to the configs of that class (the checks of a builder's fields only where the
# config keeps that builder: another one may read them otherwise; a trainer config's optimizer, losses, metrics and
# modules mean what TrainerConfig says whatever the trainer)
_CHECKS = ((ImageDatasetConfig, _check_dataset), (ModelConfig, _check_model), (NeuralModelConfig, _check_neural_model),
           (TrainerConfig, _check_trainer))

__all__ = ["check_config", "check_experiments", "check_step_patterns"]
