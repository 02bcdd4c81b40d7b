"""Experiments: dataset + model + trainer + seed, chains of them (transfer experiments), and grids."""
from __future__ import annotations

import itertools
import json
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from ..core import display, persistence
from ..core.compat import make_hash
from ..core.config import BaseConfig, config_class, from_jsonable, parse_json, to_jsonable
from ..errors import ConfigError
from .dataset import DatasetConfig
from .model import ModelConfig
from .trainer import TrainerConfig

#: seeds are stored as int32 and seed numpy's generator (0 .. 2**32 - 1): the range both accept
SEED_RANGE = (0, 2**31 - 1)


class Description(NamedTuple):
    """The key recipes use for an experiment: a human-readable name and the seed."""

    name: str
    seed: int


_PARTS = {"dataset": DatasetConfig, "model": ModelConfig, "trainer": TrainerConfig}


def _config_to_dict(cfg: BaseConfig) -> dict:
    return {"__class__": f"{type(cfg).__module__}.{type(cfg).__qualname__}", "fn": cfg.fn, **cfg.to_dict()}


def _config_from_dict(data: dict, base: type[BaseConfig]) -> BaseConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"the {base.config_name} part must be a dict of fields, got {data!r:.100}")
    qual = data.get("__class__")
    if qual is not None and not isinstance(qual, str):
        raise ConfigError(f"__class__ must name a config class ('module.QualName'), got {qual!r:.100}")
    cls = config_class(qual) if qual else base
    if cls.config_name != base.config_name:
        raise ConfigError(f"{cls.__name__} is not a {base.config_name} config")
    return cls.from_dict(data)


def set_path(cfg: BaseConfig, path: list[str], value: Any) -> BaseConfig:
    """A copy of ``cfg`` with ``path`` (field, then dict keys) set to ``value``."""
    field_name, *rest = path
    if field_name not in cfg.fields():
        cfg.replace(**{field_name: value})  # raises ConfigError naming the closest field
    if not rest:
        return cfg.replace(**{field_name: value})
    container = cfg.to_dict()[field_name]
    if not isinstance(container, dict):
        raise ConfigError(f"{type(cfg).__name__}.{field_name} is not a dict; cannot set {'.'.join(path)}")
    node = container
    for part in rest[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part!r} is not a dict")
    node[rest[-1]] = value
    return cfg.replace(**{field_name: container})


class _Serializable:
    """JSON and equality on top of ``to_dict``/``from_dict``."""

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self.to_dict()), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(from_jsonable(parse_json(text)))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def _repr_html_(self) -> str:  # a table of the steps in notebooks
        return display.experiment_html(self)


class Experiment(_Serializable):
    """One training run: ``Experiment(dataset_cfg, model_cfg, trainer_cfg, seed)``."""

    def __init__(self, dataset: DatasetConfig, model: ModelConfig, trainer: TrainerConfig, seed: int = 42):
        for part, cfg in (("dataset", dataset), ("model", model), ("trainer", trainer)):
            # any config of that part: nntransfer's classes, or a BaseConfig with config_name=part for
            # nnfabrik-style functions that take exactly their own keyword arguments
            if not (isinstance(cfg, BaseConfig) and cfg.config_name == part):
                raise ConfigError(f"Experiment {part} must be a {_PARTS[part].__name__} (or a config with "
                                  f"config_name={part!r}), got {type(cfg).__name__}")
        check_seed(seed)
        self.dataset, self.model, self.trainer, self.seed = dataset, model, trainer, seed

    @property
    def steps(self) -> list["Experiment"]:
        """The steps it trains: itself (as a transfer experiment's are its experiments)."""
        return [self]

    @property
    def configs(self) -> dict[str, BaseConfig]:
        return {"dataset": self.dataset, "model": self.model, "trainer": self.trainer}

    def get_key(self) -> dict:
        """The TrainedModel key: dataset/model/trainer fn + hash, and the seed."""
        return {**self.dataset.get_key(), **self.model.get_key(), **self.trainer.get_key(), "seed": self.seed}

    def get_restrictions(self, level: int = 0) -> dict:
        """The key of its result row, as ``TransferExperiment.get_restrictions`` gives a step's (this is step 0)."""
        if level != 0:
            raise IndexError(f"level {level} out of range for a one-step Experiment")
        return self.get_key()

    def add_to_table(self) -> dict:
        """Check the configs, then insert seed and configs in one transaction (all or nothing); returns the key."""
        return persistence.add_to_table(self)

    def replace(self, **changes: Any) -> "Experiment":
        """Copy with changes by dotted path: ``replace(**{"trainer.max_iter": 3, "seed": 1})``."""
        parts = dict(self.configs)
        seed = self.seed
        for path, value in changes.items():  # keyword names: always strings
            head, *rest = path.split(".")
            if head.isascii() and head.isdigit() and rest:  # "0.trainer.x": a one-step experiment is its step 0
                if int(head) != 0:
                    raise ConfigError(f"cannot set {path!r}: a one-step experiment has no step {head}")
                head, *rest = rest
            if head == "seed" and not rest:
                seed = value
            elif head in parts and rest:
                parts[head] = set_path(parts[head], rest, value)
            else:
                raise ConfigError(
                    f"cannot set {path!r}: paths start with dataset., model., trainer. or are 'seed'"
                )
        return Experiment(parts["dataset"], parts["model"], parts["trainer"], seed)

    @classmethod
    def grid(cls, base: "Experiment", axes: dict[str, Iterable[Any]]) -> list["Experiment"]:
        """All combinations: ``Experiment.grid(base, {"trainer.optimizer_options.lr": [.1, .01], "seed": [1, 2]})``."""
        return [base.replace(**point) for point in grid_points(axes)]

    def to_dict(self) -> dict:
        return {**{part: _config_to_dict(cfg) for part, cfg in self.configs.items()}, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict) -> "Experiment":
        if not isinstance(data, dict) or not set(_PARTS) | {"seed"} <= set(data):
            raise ConfigError(f"an Experiment dict has dataset, model, trainer and seed; got {data!r:.200}")
        parts = {part: _config_from_dict(data[part], base) for part, base in _PARTS.items()}
        return cls(parts["dataset"], parts["model"], parts["trainer"], data["seed"])

    def __repr__(self) -> str:
        return f"Experiment({self.dataset!r}, {self.model!r}, {self.trainer!r}, seed={self.seed})"


class TransferExperiment(_Serializable):
    """A chain of experiments; step i starts from step i-1's trained parameters.

    Where ``trainer.data_transfer`` is set on a step, the data it generates (``output["transfer_data"]``)
    is handed to later steps' dataset loaders.
    """

    def __init__(self, experiments: list[Experiment]):
        experiments = list(experiments)
        if not experiments:
            raise ConfigError("TransferExperiment needs at least one Experiment")
        for i, exp in enumerate(experiments):
            if not isinstance(exp, Experiment):
                raise ConfigError(f"TransferExperiment step {i} must be an Experiment, got {type(exp).__name__}")
        self.experiments = experiments

    def __len__(self) -> int:
        return len(self.experiments)

    @property
    def steps(self) -> list[Experiment]:
        """Its experiments, in order."""
        return list(self.experiments)

    @property
    def seed(self) -> int:
        """The seed of the result it describes: its last step's (earlier steps may differ, e.g. a shared
        pretraining)."""
        return self.experiments[-1].seed

    def __getitem__(self, level: int) -> Experiment:
        return self.experiments[level]

    def __iter__(self):
        return iter(self.experiments)

    def collapsed_history(self, level: int) -> str:
        """Hash of the keys of all steps before ``level`` (equal for equal histories)."""
        self._check_level(level)
        return make_hash([exp.get_key() for exp in self.experiments[:level]])

    def get_restrictions(self, level: int = 0) -> dict:
        """The TransferredTrainedModel key of step ``level``."""
        self._check_level(level)
        return {
            **self.experiments[level].get_key(),
            "transfer_step": level,
            "collapsed_history": self.collapsed_history(level),
        }

    def _check_level(self, level: int) -> None:
        if not 0 <= level < len(self.experiments):
            raise IndexError(f"level {level} out of range for a {len(self)}-step TransferExperiment")

    def add_to_table(self) -> list[dict]:
        """Check every step, then insert them and the chain's recipe rows in one transaction; returns the step keys."""
        return persistence.add_to_table(self)

    def replace(self, **changes: Any) -> "TransferExperiment":
        """Apply dotted-path changes to every step, or to one step with a leading index (``"1.trainer.max_iter"``).

        A step's own path wins over the same path for every step, in whatever order they are given."""
        steps = list(self.experiments)
        # paths for every step first (False sorts before True), so that a step's own path is applied last
        for path, value in sorted(changes.items(), key=lambda change: _step_index(change[0]) is not None):
            index = _step_index(path)
            if index is None:
                steps = [step.replace(**{path: value}) for step in steps]
            elif index >= len(steps):
                raise ConfigError(f"cannot set {path!r}: this transfer experiment has steps 0..{len(steps) - 1}")
            else:
                steps[index] = steps[index].replace(**{path.partition(".")[2]: value})
        return TransferExperiment(steps)

    def to_dict(self) -> dict:
        return {"steps": [exp.to_dict() for exp in self.experiments]}

    @classmethod
    def from_dict(cls, data: dict) -> "TransferExperiment":
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise ConfigError(f"a TransferExperiment dict has a list of 'steps'; got {data!r:.200}")
        return cls([Experiment.from_dict(step) for step in data["steps"]])

    def __repr__(self) -> str:
        return f"TransferExperiment({self.experiments!r})"


def _step_index(path: str) -> int | None:
    """The step a path names with a leading index (``"1.trainer.max_iter"`` → 1); None for every step."""
    head = path.partition(".")[0]
    return int(head) if head.isascii() and head.isdigit() else None


def check_seed(seed: Any) -> None:
    """A seed is an int in :data:`SEED_RANGE` (a ConfigError naming the range otherwise)."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"Experiment seed must be an int, got {seed!r}")
    if not low <= seed <= high:
        raise ConfigError(f"Experiment seed={seed} is out of range: seeds are {low} .. {high} (stored as int32, and "
                          "numpy accepts no negative seed)")


# -- grids ------------------------------------------------------------------------------------------
def grid_points(axes: Mapping[str, Sequence]) -> list[dict[str, Any]]:
    """Every combination of the axes' values as ``{path: value}`` (the first axis varies slowest)."""
    names = list(axes)
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"grid axes are paths like 'trainer.max_iter', got {name!r}")
        if isinstance(axes[name], (str, bytes, Mapping)) or not isinstance(axes[name], Iterable):
            raise ConfigError(f"grid axis {name!r} needs a list of values, got {axes[name]!r}")
    values = [list(axes[name]) for name in names]
    for name, options in zip(names, values):
        if not options:
            raise ConfigError(f"grid axis {name!r} has no values")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def grid_label(point: Mapping[str, Any]) -> str:
    """``path=value,...`` of a grid point without its seed (seeds are replicates, not variants)."""
    return ",".join(f"{path}={value}" for path, value in point.items() if path != "seed")
