"""YAML/JSON experiment files with the Scientific PyTorch Template's grid syntax.

A key ending in ``_`` holds a list of values to try; every combination becomes one experiment::

    name: lr_sweep
    dataset: {dataset_cls: digits, batch_size: 64}
    model: {type: lenet}
    trainer:
      max_iter: 5
      optimizer_options: {lr_: [0.1, 0.01]}     # two values ...
    seed_: [1, 2]                               # ... times two seeds = four experiments
    loss_weights: [1.0, 10.0]                   # a plain list is one value

A transfer experiment lists its ``steps`` (each with dataset/model/trainer). Each config section may
name its config class with ``class: package.module.ConfigClass`` (default: ImageDatasetConfig,
ModelConfig, TrainerConfig).
"""
from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

from .configs import DatasetConfig, ImageDatasetConfig, ModelConfig, TrainerConfig
from .configs.base import BaseConfig, resolve_import_path
from .configs.errors import ConfigError
from .experiment import Description, Experiment, TransferExperiment

_DEFAULT_CLASSES = {"dataset": ImageDatasetConfig, "model": ModelConfig, "trainer": TrainerConfig}
_BASE_CLASSES = {"dataset": DatasetConfig, "model": ModelConfig, "trainer": TrainerConfig}


def read(path: str | Path) -> dict:
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        doc = json.loads(text)
    else:
        import yaml

        doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return doc


def grid_axes(doc: Any, prefix: tuple = ()) -> list[tuple[tuple, list]]:
    """``[(path, values)]`` for every ``key_: [...]`` in the document (path without the underscore)."""
    axes = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(key, str) and key.endswith("_") and len(key) > 1:
                if not isinstance(value, list) or not value:
                    raise ConfigError(f"grid key {'.'.join(prefix + (key,))} needs a non-empty list of values")
                axes.append((prefix + (key[:-1],), value))
            else:
                axes.extend(grid_axes(value, prefix + (key,)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            axes.extend(grid_axes(value, prefix + (i,)))
    return axes


def expand(doc: dict) -> list[tuple[dict, dict]]:
    """All grid points: ``[(assignment {dotted path: value}, concrete document)]``."""
    axes = grid_axes(doc)
    points = []
    for values in itertools.product(*(v for _, v in axes)):
        concrete = copy.deepcopy(doc)
        for (path, _), value in zip(axes, values):
            node = concrete
            for part in path[:-1]:
                node = node[part]
            del node[f"{path[-1]}_"]
            node[path[-1]] = value
        points.append(({".".join(map(str, p)): v for (p, _), v in zip(axes, values)}, concrete))
    return points


def flatten(doc: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted paths (lists stay values)."""
    flat = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def overrides_from_file(path: str | Path) -> tuple[dict, dict]:
    """``(sets, grid)`` for ``apply_overrides`` from a file of nested overrides with grid keys."""
    doc = read(path)
    grid = {".".join(map(str, p)): values for p, values in grid_axes(doc)}
    sets = {}
    for point_path, value in flatten(doc).items():
        if not any(part.endswith("_") for part in point_path.split(".")):
            sets[point_path] = value
    return sets, grid


def _config(section: str, spec: dict | None) -> BaseConfig:
    spec = dict(spec or {})
    cls_path = spec.pop("class", None)
    cls = _DEFAULT_CLASSES[section]
    if cls_path is not None:
        found = resolve_import_path(cls_path, what=f"{section}.class")
        if not (isinstance(found, type) and issubclass(found, _BASE_CLASSES[section])):
            raise ConfigError(f"{section}.class={cls_path!r} is not a {section} config class")
        cls = found
    return cls(**spec)


def _experiment(spec: dict, seed: int) -> Experiment:
    unknown = set(spec) - {"dataset", "model", "trainer", "seed"}
    if unknown:
        raise ConfigError(f"unknown experiment section(s) {sorted(unknown)}; use dataset, model, trainer, seed")
    return Experiment(*(_config(s, spec.get(s)) for s in ("dataset", "model", "trainer")), spec.get("seed", seed))


def experiments_from_file(path: str | Path) -> dict[Description, Experiment | TransferExperiment]:
    """Experiments of a YAML/JSON file; one per grid point, named ``name[path=value,...]``."""
    doc = read(path)
    out = {}
    for assignment, concrete in expand(doc):
        name = concrete.pop("name", Path(path).stem)
        seed = concrete.pop("seed", 42)
        if "steps" in concrete:
            steps = concrete.pop("steps")
            if concrete:
                raise ConfigError(f"{path}: next to 'steps' only 'name' and 'seed' are allowed, not {sorted(concrete)}")
            exp = TransferExperiment([_experiment(step, seed) for step in steps])
        else:
            exp = _experiment(concrete, seed)
        label = ",".join(f"{k}={v}" for k, v in assignment.items())
        out[Description(f"{name}[{label}]" if label else name, seed)] = exp
    return out
