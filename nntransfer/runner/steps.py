"""One training step: what it is built from (:class:`StepSpec`), what earlier steps hand it (:class:`Handover`),
building its data and model, training it, and what comes out (:class:`StepResult`).

The database-free :func:`nntransfer.runner.train` and the tables' ``make_compute`` both train through
:func:`train_step`, so a result is the same whichever way it was made.
"""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..configs.experiment import Experiment
from ..core.registry import resolve_import_path
from ..errors import ConfigError
from ..trainer import StopToken
from ..trainer.handover import PARAMETERS, Handover
from . import provenance
from .signals import stop_on_signals
from .transfer import generate_transfer_data, load_transferred_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepSpec:
    """The builders (import paths) and their configs (plain dicts, as stored in the tables) of one step, its seed,
    and the key its result is recorded under (the trainer's ``uid``)."""

    key: dict
    dataset_fn: str
    dataset_config: dict
    model_fn: str
    model_config: dict
    trainer_fn: str
    trainer_config: dict

    @property
    def seed(self) -> int:
        return int(self.key["seed"])

    @classmethod
    def from_experiment(cls, exp: Experiment, key: dict | None = None) -> "StepSpec":
        """The spec of an experiment (``key``: its result key, by default ``exp.get_key()``)."""
        configs = {}
        for part, cfg in exp.configs.items():
            config = cfg.to_dict()
            config.pop("comment")  # stored beside the config, never given to the builder
            configs[part] = (cfg.fn, config)
        return cls(dict(key or exp.get_key()), *configs["dataset"], *configs["model"], *configs["trainer"])

    def with_run_settings(self, settings: dict[str, dict] | None) -> "StepSpec":
        """The spec with run fields (``{"dataset": {...}, "trainer": {...}, ...}``) replaced: settings that cannot
        change a result (progress bars, TensorBoard, loader workers, checkpoint cadence, ...), which come from
        whoever runs the step now rather than from whoever first stored the config."""
        if not settings:
            return self
        changes = {f"{part}_config": {**getattr(self, f"{part}_config"), **values}
                   for part, values in settings.items() if values}
        return replace(self, **changes)


@dataclass
class StepResult:
    """What training a step produced. ``output`` is the trainer's (tracker history, final validation and test results,
    epochs, environment); ``model`` holds the returned parameters (by default the restored best)."""

    key: dict
    score: float
    output: Any
    model_state: dict
    transfer_data: dict | None = None
    provenance: dict = field(default_factory=dict)
    model: Any = None
    dataloaders: dict | None = None

    @property
    def history(self) -> dict:
        """Per-pass values: ``history["Validation"]["img_classification"]["accuracy"] == [...]``."""
        return self.output.get("tracker", {}).get("log", {}) if isinstance(self.output, dict) else {}

    @property
    def test(self) -> dict:
        """Final test results per task: ``test["img_classification"]["accuracy"]``."""
        return self.output.get("test", {}) if isinstance(self.output, dict) else {}

    @property
    def validation(self) -> dict:
        return self.output.get("validation", {}) if isinstance(self.output, dict) else {}


def build(spec: StepSpec, handover: Handover | None = None, *, transfer_strict: bool | None = None):
    """Dataloaders and model of a step as its training starts (the previous step's parameters loaded)."""
    dataloaders, model, _ = _build(spec, handover or Handover(), transfer_strict)
    return dataloaders, model


def _build(spec: StepSpec, handover: Handover, transfer_strict: bool | None = None):
    """:func:`build`, and the names of the state entries loaded from the previous step's parameters. The dataset
    loader gets the per-example transfer data only (the per-parameter section is for the trainer's modules)."""
    loader = resolve_import_path(spec.dataset_fn, what="dataset_fn")
    per_example = handover.per_example_data()
    extra = {"transfer_data": per_example} if per_example is not None else {}
    dataloaders = loader(seed=spec.seed, **spec.dataset_config, **extra)
    model = resolve_import_path(spec.model_fn, what="model_fn")(dataloaders, seed=spec.seed, **spec.model_config)
    transferred: tuple[str, ...] = ()
    if handover.model_state is not None:
        strict = spec.trainer_config.get("transfer_strict", True) if transfer_strict is None else transfer_strict
        skipped = set(load_transferred_state(model, handover.model_state, strict=strict))
        transferred = tuple(name for name in model.state_dict() if name not in skipped)
    return dataloaders, model, transferred


def starts_from_previous(trainer_config: dict) -> bool:
    """Whether a transfer step starts from the previous step's parameters (``transfer_parameters``)."""
    return bool(trainer_config.get("transfer_parameters", True))


def train_step(spec: StepSpec, handover: Handover | None = None, *, checkpoints=None, cb: Callable | None = None,
               stop: StopToken | None = None, keep_transfer_data: bool = True, recipe=None) -> StepResult:
    """Build and train one step, the way nnfabrik calls a trainer (keyword arguments, ``uid`` = the key, ``cb``).

    Only trainers that declare ``checkpoints``/``stop``/``handover`` get them (``handover``: what earlier steps gave,
    with ``transferred`` filled in, for main-loop modules such as L2SP or EWC). SIGTERM/SIGINT during training ask
    ``stop`` to stop (the trainer checkpoints and raises ``TrainingInterrupted``). With ``keep_transfer_data`` and
    the trainer config's ``data_transfer``, the transfer data the step generates comes back in the result: the
    trainer's ``output["transfer_data"]`` (its per-example sections, else the logits of
    :func:`~nntransfer.runner.transfer.generate_transfer_data`); per-parameter data its modules produced (EWC's
    Fisher information, ...) comes back whatever ``data_transfer`` says (see :func:`_step_transfer_data`).
    ``recipe``: the file the step came from, for its provenance.
    """
    handover = handover or Handover()
    dataloaders, model, transferred = _build(spec, handover)
    handover = replace(handover, transferred=transferred)
    trainer = resolve_import_path(spec.trainer_fn, what="trainer_fn")
    stop = stop or StopToken()
    extra = {name: value for name, value in (("checkpoints", checkpoints), ("stop", stop), ("handover", handover))
             if value is not None and _takes_keyword(trainer, name)}
    started = time.perf_counter()
    with stop_on_signals(stop):
        score, output, model_state = trainer(model=model, dataloaders=dataloaders, seed=spec.seed, uid=dict(spec.key),
                                             cb=cb, **extra, **spec.trainer_config)
    wall_time = time.perf_counter() - started
    model.load_state_dict(model_state)  # the returned parameters (the trainer may have trained a copy)
    transfer_data = None
    data_transfer = bool(spec.trainer_config.get("data_transfer"))
    if data_transfer and not isinstance(output, dict):
        raise ConfigError(f"data_transfer=True needs a trainer that returns a dict output; {spec.trainer_fn} "
                          f"returned a {type(output).__name__}")
    if keep_transfer_data and isinstance(output, dict) and (data_transfer or output.get("transfer_data")):
        output = dict(output)
        transfer_data = _step_transfer_data(output.pop("transfer_data", None), data_transfer, handover, model,
                                            dataloaders, spec.trainer_config.get("transfer_layers") or ())
    return StepResult(dict(spec.key), float(score), output, model_state, transfer_data,
                      provenance.collect(model, wall_time, recipe), model, dataloaders)


def _step_transfer_data(own: dict | None, data_transfer: bool, handover: Handover, model, dataloaders,
                        layers=()) -> dict | None:
    """What a step hands to later steps. Per example: with ``data_transfer``, the trainer's per-example sections,
    else the model's logits and the outputs of ``layers`` (``transfer_layers``;
    :func:`~nntransfer.runner.transfer.generate_transfer_data`); without it, in a step whose
    modules produced per-parameter data, the per-example data it received, passed on (so the nearest earlier step's
    logits still reach later steps). Per parameter: the trainer's ``"parameters"`` section (its modules' data)."""
    own = own or {}
    parameters = own.get(PARAMETERS)
    if data_transfer:
        per_example = {name: block for name, block in own.items() if name != PARAMETERS}
        per_example = per_example or generate_transfer_data(model, dataloaders, layers=layers)
    elif parameters:
        per_example = handover.per_example_data() or {}
    else:
        return None
    return {**per_example, PARAMETERS: parameters} if parameters else per_example


def _takes_keyword(fn, name: str) -> bool:
    """Whether ``fn`` declares a parameter ``name`` (a ``**kwargs`` catch-all does not count)."""
    try:
        parameter = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


__all__ = ["Handover", "StepResult", "StepSpec", "build", "starts_from_previous", "train_step"]
