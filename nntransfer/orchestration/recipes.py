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
``seed`` axis is not part of the name: it makes seed replicates of the same named experiment, and it replaces
the seeds a recipe sets itself (a recipe that loops over seeds gives the same experiment once per seed).

A recipe's folder is put on ``sys.path`` before it runs, as Python does for a script: a package next to the recipe
(``mypackage/`` beside ``recipe.py``) imports, in the recipe, in ``--import`` and in every worker.
"""
from __future__ import annotations

import functools
import os
import runpy
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..configs import DatasetConfig, ImageDatasetConfig, ModelConfig, TrainerConfig
from ..configs.experiment import Description, Experiment, TransferExperiment, grid_label, grid_points
from ..core.config import BaseConfig, parse_json
from ..core.registry import resolve_import_path
from ..errors import ConfigError

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
        if desc is None:
            desc = Description(f"experiment_{i}", exp.seed)
        elif not isinstance(desc, Description):
            desc = Description(*desc) if isinstance(desc, tuple) else Description(str(desc), exp.seed)
        check_description(desc, exp)
        if desc in out:
            raise ConfigError(f"two experiments are described as {desc}")
        out[desc] = exp
    return out


def check_description(desc: Description, exp: Experiment | TransferExperiment) -> None:
    """The seed lives in one place: a description's seed is its experiment's (a transfer experiment's last step's)."""
    if not isinstance(desc.name, str) or not desc.name:
        raise ConfigError(f"{desc}: an experiment's name is a non-empty string")
    if desc.seed != exp.seed or isinstance(desc.seed, bool):
        what = "its experiment" if isinstance(exp, Experiment) else "its transfer experiment's last step"
        raise ConfigError(f"{desc} describes an experiment whose seed is {exp.seed}: the seed of {what} is the one "
                          f"that counts; make them equal (e.g. Description({desc.name!r}, exp.seed)), or grid "
                          "over 'seed' to get replicates")


def _steps(exp: Experiment | TransferExperiment) -> int:
    return len(exp) if isinstance(exp, TransferExperiment) else 1


def step_of(path: str) -> int | None:
    """The step a path addresses (``"1.trainer.max_iter"`` -> 1), or None for every step."""
    head = path.split(".", 1)[0]
    return int(head) if head.isascii() and head.isdigit() else None


def _has_step(exp, path: str) -> bool:
    step = step_of(path)
    return step is None or step < _steps(exp)


def _report_steps(paths: Iterable[str], counts: Mapping[str, int], total: int, what: str, report) -> None:
    """Step-addressed paths apply to the experiments that have that step: say how many, fail if none."""
    for path in paths:
        step = step_of(path)
        if step is None:
            continue
        if counts.get(path, 0) == 0:
            raise ConfigError(f"{what} {path}: none of the {total} experiment(s) has a step {step}")
        if report is not None:
            report(f"{what} {path}: changed {counts[path]} of {total} experiment(s) (those with a step {step})")


def recipe_folder_on_path(recipe: str | os.PathLike) -> None:
    """Put the recipe's folder first on ``sys.path`` (once), as Python does for a script: modules and packages next
    to the recipe import, in the recipe itself, in ``--import`` modules and in the configs' import paths."""
    folder = str(Path(recipe).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)


def load_recipe(path: str | os.PathLike) -> Experiments:
    """Experiments of a recipe file (Python, or YAML/JSON with grid syntax).

    An exception the recipe raises (a ``SyntaxError``, a ``NameError``, a config's ``ConfigError``, ...) becomes a
    ``ConfigError`` that names the recipe's file and line and quotes the line (:func:`user_code_error`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist" if not path.exists() else f"recipe {path} is not a file")
    recipe_folder_on_path(path)
    if path.suffix in (".yaml", ".yml", ".json"):
        return experiments_from_file(path)
    try:
        namespace = runpy.run_path(str(path), run_name="nntransfer_recipe")
    except Exception as err:  # noqa: BLE001 - whatever the recipe raises is reported at its line
        raise user_code_error(err, path) from err
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


# -- errors in user code -----------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _library_folders() -> tuple[str, ...]:
    """Folders whose files are not the user's: the standard library, installed packages, nntransfer itself."""
    paths = sysconfig.get_paths()
    folders = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    folders.add(str(Path(__file__).resolve().parents[1]))
    return tuple(os.path.join(os.path.realpath(f), "") for f in folders)


def _is_user_file(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    return not os.path.realpath(filename).startswith(_library_folders())


def _quoted(text: str | None) -> str:
    return f"\n    {text.strip()}" if text and text.strip() else ""


def user_code_error(err: BaseException, path: str | os.PathLike | None = None) -> ConfigError:
    """A ConfigError for an exception raised while running the user's file ``path`` (a recipe, an imported file):
    ``file:line`` of the user's code where it happened, the error (type and message), and that line.

    The place is the innermost frame in the user's own files (not the standard library, installed packages or
    nntransfer): for a ``NameError`` in the recipe, the recipe's line; for one in a module the recipe imports, that
    module's line, followed by the recipe's line that led there. A ``SyntaxError`` names the line it is about.
    ``path`` None: user code imported by module name (``--import mypackage.models``).
    """
    path = os.path.realpath(path) if path is not None else None
    what = str(err) if isinstance(err, ConfigError) else f"{type(err).__name__}: {err}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if _is_user_file(f.filename)]
    if isinstance(err, SyntaxError) and err.filename and not err.filename.startswith("<"):
        what = f"{type(err).__name__}: {err.msg}"
        filename, line, text = err.filename, err.lineno, err.text
    elif frames:
        filename, line, text = frames[-1].filename, frames[-1].lineno, frames[-1].line
        frames = frames[:-1]
    else:
        return ConfigError(f"{path}: {what}" if path else what)
    message = f"{filename}:{line}: {what}{_quoted(text)}"
    if path is not None and os.path.realpath(filename) != path:
        own = [f for f in frames if os.path.realpath(f.filename) == path]
        if own:
            message += f"\n  reached from {own[-1].filename}:{own[-1].lineno}{_quoted(own[-1].line)}"
    return ConfigError(message)


def expand(experiments: Experiments, grid: Mapping[str, Sequence] | None, report=None) -> Experiments:
    """One experiment per grid point and experiment, named ``name[path=value,...]``.

    An axis addressed to a step (``1.trainer.max_iter``) varies only the experiments that have that step;
    the others appear once. Seeds are replicates: a ``seed`` axis keeps the name and sets the description's
    seed (the experiment's).
    """
    if not grid:
        return dict(experiments)
    grid_points(grid)  # validates every axis once
    out, counts, replaced = {}, {}, set()
    for desc, exp in experiments.items():
        axes = {path: values for path, values in grid.items() if _has_step(exp, path)}
        for path in axes:
            counts[path] = counts.get(path, 0) + 1
        for point in grid_points(axes):
            label = grid_label(point)
            varied = exp.replace(**point)
            new = Description(f"{desc.name}[{label}]" if label else desc.name, varied.seed)
            if new in out:
                if out[new] != varied:
                    raise ConfigError(_grid_collision(new, grid))
                replaced.add(desc)  # a seed replicate of the recipe, made again by the seed axis: the same experiment
                continue
            out[new] = varied
    if replaced and report is not None:
        seeds = sorted({d.seed for d in experiments if any(d.name == r.name for r in replaced)})
        report(f"--grid seed: replaces the recipe's own seeds ({', '.join(map(str, seeds))}) of "
               f"{len({d.name for d in replaced})} experiment name(s)")
    _report_steps(grid, counts, len(experiments), "--grid", report)
    return out


def _grid_collision(desc: Description, grid: Mapping[str, Sequence]) -> str:
    if "seed" in grid:
        return (f"the grid makes two different experiments named {desc}: the recipe's experiments named "
                f"{desc.name!r} differ in more than their seed, so the seed axis cannot replace their seeds; drop "
                "--grid seed (the recipe sets the seeds) or give those experiments different names")
    return f"the grid makes two different experiments named {desc}; give the recipe's experiments different names"


def apply_overrides(experiments: Experiments, sets: Mapping[str, Any] | None = None,
                    grid: Mapping[str, Sequence] | None = None, report=None) -> Experiments:
    """``--set path=value`` on every experiment, then ``--grid path=v1,v2`` as a cross product.

    A path with a leading step index (``1.trainer.max_iter``) changes the experiments that have that step;
    ``report(message)`` is told how many (a ConfigError if none has it).
    """
    sets = dict(sets or {})
    out, counts = {}, {}
    for desc, exp in experiments.items():
        mine = {path: value for path, value in sets.items() if _has_step(exp, path)}
        for path in mine:
            counts[path] = counts.get(path, 0) + 1
        changed = exp.replace(**mine) if mine else exp
        new = Description(desc.name, changed.seed)
        if new in out:
            if out[new] == changed:  # e.g. --set seed=5 on a recipe's seed replicates: one experiment
                continue
            raise ConfigError(f"after the overrides two different experiments are described as {new}")
        out[new] = changed
    _report_steps(sets, counts, len(experiments), "--set", report)
    return expand(out, grid, report)


# -- YAML: one reader for files, --set and --grid ----------------------------------------------
_YAML_12_RESOLVERS = [  # YAML 1.2 core schema: 1e-3 is a number, yes/no/on/off and dates stay strings, 010 is 10
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
]
_yaml_loader = None


def _loader():
    """A safe YAML loader with the YAML 1.2 core schema's numbers and booleans, and no duplicate keys.

    PyYAML follows YAML 1.1, where ``1e-3`` is a string, ``no`` is False and ``010`` is 8.
    """
    global _yaml_loader
    if _yaml_loader is not None:
        return _yaml_loader
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    raise yaml.constructor.ConstructorError(None, None, f"a {type(key).__name__} cannot be a key",
                                                            key_node.start_mark)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    def construct_int(loader, node):
        text = loader.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)

    kept = {"tag:yaml.org,2002:null"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag in kept]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for tag, pattern, first in _YAML_12_RESOLVERS:
        Loader.add_implicit_resolver(tag, re.compile(pattern), list(first))
    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    _yaml_loader = Loader
    return Loader


def load_yaml(text: str, source: str = "YAML") -> Any:
    """Parse YAML with :func:`_loader`; a ConfigError names ``source``, the line and the column."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{source}{where}: {problem}") from None


def parse_value(text: str, source: str = "value") -> Any:
    """A ``--set`` value: a YAML scalar or flow collection (``3``, ``1e-3``, ``[10, 20]``, ``{a: 1}``, ``'1'``)."""
    return load_yaml(text, source)


def parse_values(text: str, source: str = "values") -> list:
    """``--grid`` values: a comma-separated YAML flow list without its brackets.

    ``0.1,0.01`` -> ``[0.1, 0.01]``; ``[10,20],[5]`` -> two lists; ``'a, b',c`` -> two strings (quote a string
    that contains a comma).
    """
    values = load_yaml(f"[{text}]", source)
    if not values:
        raise ConfigError(f"{source}: no values; write PATH=V1,V2,...")
    return values


# -- YAML / JSON files --------------------------------------------------------------------------
_DEFAULT_CLASSES = {"dataset": ImageDatasetConfig, "model": ModelConfig, "trainer": TrainerConfig}
_BASE_CLASSES = {"dataset": DatasetConfig, "model": ModelConfig, "trainer": TrainerConfig}


def read(path: str | Path) -> dict:
    """A YAML or JSON file's top-level mapping; syntax errors name the file and the line."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        try:
            doc = parse_json(text)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    else:
        doc = load_yaml(text, str(path))
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
                if key[:-1] in doc:
                    raise ConfigError(f"both {key[:-1]!r} and the grid key {key!r} are given; keep one")
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
    if spec is not None and not isinstance(spec, dict):
        raise ConfigError(f"{section} must be a mapping of fields, got {spec!r:.100}")
    spec = dict(spec or {})
    bad = [k for k in spec if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{section}: field names are strings, got {bad[0]!r}")
    cls_path = spec.pop("class", None)
    cls = _DEFAULT_CLASSES[section]
    if cls_path is not None:
        found = resolve_import_path(cls_path, what=f"{section}.class")
        if not (isinstance(found, type) and issubclass(found, _BASE_CLASSES[section])):
            raise ConfigError(f"{section}.class={cls_path!r} is not a {section} config class")
        cls = found
    return cls(**spec)


def _experiment(spec: dict, seed: int) -> Experiment:
    if not isinstance(spec, dict):
        raise ConfigError(f"an experiment (or step) is a mapping with dataset, model, trainer, seed; got {spec!r:.100}")
    unknown = set(spec) - {"dataset", "model", "trainer", "seed"}
    if unknown:
        raise ConfigError(f"unknown experiment section(s) {sorted(map(str, unknown))}; use dataset, model, "
                          "trainer, seed")
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
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: name must be a non-empty string, got {name!r:.100}")
    if "steps" in concrete:
        steps = concrete.pop("steps")
        if concrete:
            raise ConfigError(f"{path}: next to 'steps' only 'name' and 'seed' are allowed, not "
                              f"{sorted(map(str, concrete))}")
        if not isinstance(steps, list):
            raise ConfigError(f"{path}: steps must be a list of experiments, got {steps!r:.100}")
        base: Experiment | TransferExperiment = TransferExperiment([_experiment(step, seed) for step in steps])
    else:
        base = _experiment(concrete, seed)
    return expand({Description(name, base.seed): base}, axes)


__all__ = ["apply_overrides", "check_description", "expand", "experiments_from_file", "grid_label", "grid_points",
           "load_recipe", "load_yaml", "normalize", "overrides_from_file", "parse_value", "parse_values",
           "recipe_folder_on_path", "step_of", "user_code_error"]
