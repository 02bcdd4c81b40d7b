"""Reading recipes and expanding them: recipe files, ``--set`` overrides and grids (one implementation).

A recipe is a Python file that defines ``transfer_experiments`` and/or ``experiments``: dicts
``Description -> TransferExperiment | Experiment`` (lists are accepted too), or a YAML/JSON file with the
Scientific PyTorch Template's grid syntax: a key ending in ``_`` holds a list of values to try, and every
combination becomes one experiment::

    name: lr_sweep
    dataset: {dataset_cls: digits, batch_size: 64}
    model: {type: lenet}
    trainer:
      max_iter: 5
      optimizer_options: {lr_: [0.1, 0.01]}     # two values ...
    seed_: [1, 2]                               # ... times two seeds = four experiments
    loss_weights: [1.0, 10.0]                   # a plain list is one value

A transfer experiment lists its ``steps`` (each with dataset/model/trainer). Each config section may
name its config class with ``class: package.module:ConfigClass`` (default: ImageDatasetConfig,
ModelConfig, TrainerConfig).

Grids from the CLI (``--grid``), from YAML/JSON files and from ``Experiment.grid`` all go through
:func:`grid_points` and ``replace`` by dotted path. A grid point is named ``name[path=value,...]``; the
``seed`` axis is not part of the name: it makes seed replicates of the same named experiment.
"""
from __future__ import annotations

import itertools
import json
import os
import runpy
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import provenance
from ..configs import DatasetConfig, ImageDatasetConfig, ModelConfig, TrainerConfig
from ..configs.base import BaseConfig
from ..configs.errors import ConfigError
from ..experiment import Description, Experiment, TransferExperiment
from ..registry import resolve_import_path

Experiments = dict  # Description -> Experiment | TransferExperiment


# -- collecting experiments -------------------------------------------------------------------
def normalize(experiments: Any) -> Experiments:
    """Accept a dict ``Description -> experiment``, a list, or a single experiment."""
    if isinstance(experiments, (Experiment, TransferExperiment)):
        experiments = [experiments]
    if isinstance(experiments, Mapping):
        items = list(experiments.items())
    elif isinstance(experiments, Iterable):
        items = [(None, exp) for exp in experiments]
    else:
        raise ConfigError(f"expected experiments (dict, list or one experiment), got {type(experiments).__name__}")
    out = {}
    for i, (desc, exp) in enumerate(items):
        if not isinstance(exp, (Experiment, TransferExperiment)):
            raise ConfigError(f"entry {desc or i} is a {type(exp).__name__}, not an Experiment or TransferExperiment")
        seed = exp.seed if isinstance(exp, Experiment) else exp[0].seed
        if desc is None:
            desc = Description(f"experiment_{i}", seed)
        elif not isinstance(desc, Description):
            desc = Description(*desc) if isinstance(desc, tuple) else Description(str(desc), seed)
        if desc in out:
            raise ConfigError(f"two experiments are described as {desc}")
        out[desc] = exp
    return out


def load_recipe(path: str | os.PathLike) -> Experiments:
    """Experiments of a recipe file (Python, or YAML/JSON with grid syntax)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"recipe {path} does not exist")
    provenance.note_recipe(path)  # results trained in this process record the recipe's git commit
    if path.suffix in (".yaml", ".yml", ".json"):
        return experiments_from_file(path)
    namespace = runpy.run_path(str(path), run_name="nntransfer_recipe")
    found = {}
    for name in ("transfer_experiments", "experiments"):
        if name in namespace:
            for desc, exp in normalize(namespace[name]).items():
                if desc in found:
                    raise ConfigError(f"{path}: {desc} appears in both transfer_experiments and experiments")
                found[desc] = exp
    if not found:
        raise ConfigError(f"{path} defines neither `transfer_experiments` nor `experiments`")
    return found


# -- the one grid implementation --------------------------------------------------------------
def grid_points(axes: Mapping[str, Sequence]) -> list[dict[str, Any]]:
    """Every combination of the axes' values as ``{path: value}`` (the first axis varies slowest)."""
    names = list(axes)
    for name in names:
        if isinstance(axes[name], (str, bytes)) or not isinstance(axes[name], Iterable):
            raise ConfigError(f"grid axis {name!r} needs a list of values, got {axes[name]!r}")
    values = [list(axes[name]) for name in names]
    for name, options in zip(names, values):
        if not options:
            raise ConfigError(f"grid axis {name!r} has no values")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def grid_label(point: Mapping[str, Any]) -> str:
    """``path=value,...`` of a grid point without its seed (seeds are replicates, not variants)."""
    return ",".join(f"{path}={value}" for path, value in point.items() if path != "seed")


def expand(experiments: Experiments, grid: Mapping[str, Sequence] | None) -> Experiments:
    """One experiment per grid point and experiment, named ``name[path=value,...]``."""
    if not grid:
        return dict(experiments)
    points = grid_points(grid)
    out = {}
    for desc, exp in experiments.items():
        for point in points:
            label = grid_label(point)
            name = f"{desc.name}[{label}]" if label else desc.name
            new = Description(name, point.get("seed", desc.seed))
            if new in out:
                raise ConfigError(f"the grid makes two experiments named {new}")
            out[new] = exp.replace(**point)
    return out


def apply_overrides(experiments: Experiments, sets: Mapping[str, Any] | None = None,
                    grid: Mapping[str, Sequence] | None = None) -> Experiments:
    """``--set path=value`` on every experiment, then ``--grid path=v1,v2`` as a cross product."""
    out = {desc: exp.replace(**sets) if sets else exp for desc, exp in experiments.items()}
    if sets and "seed" in sets:
        out = {Description(desc.name, sets["seed"]): exp for desc, exp in out.items()}
    return expand(out, grid)


# -- YAML / JSON files --------------------------------------------------------------------------
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
                    raise ConfigError(f"grid key {'.'.join(map(str, prefix + (key,)))} needs a non-empty list of values")
                axes.append((prefix + (key[:-1],), value))
            else:
                axes.extend(grid_axes(value, prefix + (key,)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            axes.extend(grid_axes(value, prefix + (i,)))
    return axes


def _without_grid_keys(doc: Any) -> Any:
    """The document with every ``key_: [v0, ...]`` replaced by ``key: v0`` (the grid's first point)."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            if isinstance(key, str) and key.endswith("_") and len(key) > 1:
                out[key[:-1]] = value[0]
            else:
                out[key] = _without_grid_keys(value)
        return out
    if isinstance(doc, list):
        return [_without_grid_keys(v) for v in doc]
    return doc


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
    """``(sets, grid)`` for :func:`apply_overrides` from a file of nested overrides with grid keys."""
    doc = read(path)
    grid = {".".join(map(str, p)): values for p, values in grid_axes(doc)}
    sets = {p: v for p, v in flatten(doc).items() if not any(part.endswith("_") for part in p.split("."))}
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


def _experiment_path(doc_path: tuple, path: Path) -> str:
    """A grid key's place in the document as an ``Experiment.replace`` path (``steps.1.x`` -> ``1.x``)."""
    parts = [str(p) for p in doc_path]
    if parts[0] == "steps" and len(parts) > 2:
        parts = parts[1:]
    if parts[-1] == "class" or parts[0] == "name":
        raise ConfigError(f"{path}: grids over {'.'.join(parts)} are not supported; write one file per variant")
    return ".".join(parts)


def experiments_from_file(path: str | Path) -> Experiments:
    """Experiments of a YAML/JSON file; one per grid point, named ``name[path=value,...]``."""
    path = Path(path)
    doc = read(path)
    axes = {_experiment_path(p, path): values for p, values in grid_axes(doc)}
    concrete = _without_grid_keys(doc)
    name = concrete.pop("name", path.stem)
    seed = concrete.pop("seed", 42)
    if "steps" in concrete:
        steps = concrete.pop("steps")
        if concrete:
            raise ConfigError(f"{path}: next to 'steps' only 'name' and 'seed' are allowed, not {sorted(concrete)}")
        base: Experiment | TransferExperiment = TransferExperiment([_experiment(step, seed) for step in steps])
    else:
        base = _experiment(concrete, seed)
    return expand({Description(name, seed): base}, axes)


__all__ = ["apply_overrides", "expand", "experiments_from_file", "grid_label", "grid_points", "load_recipe",
           "normalize", "overrides_from_file"]
