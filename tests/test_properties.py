"""Property-based tests (hypothesis): whatever comes in, only a result or a ConfigError comes out (issue 10 item 17).

Random dicts, JSON and YAML go into config construction, ``from_dict``/``from_json``, ``--set``/``--grid``
parsing and YAML recipes. What is accepted is checked too: a config holds the values it was given, JSON round trips
give equal configs with equal keys, a grid of one value is a --set of it, a recipe grid gives one experiment per
point. No database is used.
"""
import json
import math
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nntransfer import Experiment, TransferExperiment
from nntransfer.configs import BaseConfig, ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.configs.experiment import grid_points
from nntransfer.orchestration.recipes import (apply_overrides, experiments_from_file, parse_value, parse_values,
                                             step_of)

# 60 examples per property keep the file at a few seconds; NNTRANSFER_HYPOTHESIS_EXAMPLES=2000 searches deeper
FAST = settings(max_examples=int(os.environ.get("NNTRANSFER_HYPOTHESIS_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLASSES = [ImageDatasetConfig, ModelConfig, TrainerConfig]
FIELDS = sorted({name for cls in CLASSES for name in cls.fields()})

scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True, allow_infinity=True) \
    | st.text(max_size=8) | st.sampled_from(["1", "0.01", "1e-3", "True", "None", "", "lenet", "Adam", "digits"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                      | st.dictionaries(st.text(max_size=5) | st.integers(0, 3), inner, max_size=3), max_leaves=8)
keys = st.sampled_from(FIELDS) | st.text(max_size=10)
config_dicts = st.dictionaries(keys, values, max_size=6)


def only_config_errors(fn, /, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        return None


def round_trips(cfg: BaseConfig) -> None:
    back = type(cfg).from_json(cfg.to_json())
    assert back == cfg and back.get_key() == cfg.get_key()
    assert BaseConfig.from_json(cfg.to_json()) == cfg


def keys_of(thing):
    """The table keys a config, an experiment or a transfer experiment (one per step) stands for."""
    if isinstance(thing, TransferExperiment):
        return [thing.get_restrictions(level) for level in range(len(thing))]
    return thing.get_key()


def same_value(given, held) -> bool:
    """``held`` is ``given`` as a config keeps it: equal values, where tuples and lists are one kind of sequence
    (1 == 1.0 and -0.0 == 0.0 as in Python; the key tests in test_configs.py check what hashes alike)."""
    if isinstance(given, (list, tuple)):
        return isinstance(held, (list, tuple)) and len(given) == len(held) and all(map(same_value, given, held))
    if isinstance(given, dict):
        return isinstance(held, dict) and given.keys() == held.keys() and all(same_value(v, held[k])
                                                                             for k, v in given.items())
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (given, held))
    if not (type(given) is type(held) or numbers):
        return False
    both_nan = numbers and math.isnan(given) and math.isnan(held)
    return given == held or both_nan


@FAST
@given(cls=st.sampled_from(CLASSES), data=config_dicts)
def test_random_dicts_build_a_config_or_raise_config_error(cls, data):
    cfg = only_config_errors(cls, **data)
    if cfg is not None:
        for name, value in data.items():  # accepted: every field holds what it was given
            assert same_value(value, getattr(cfg, name)), (name, value, getattr(cfg, name))
        assert cfg.get_key() == cls(**cfg.to_dict()).get_key()  # what it holds builds the same config
        assert set(cfg.get_key()) == {f"{cfg.config_name}_fn", f"{cfg.config_name}_hash"}
        shown = cfg.describe()
        assert all(name in shown for name in data)
        round_trips(cfg)
    from_dict = only_config_errors(cls.from_dict, data)
    assert (from_dict is None) == (cfg is None) and (cfg is None or from_dict == cfg)


def like(default):
    """Values of the default's type (most of them valid), so that accepted configs are common, not rare."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(0, 1000)
    if isinstance(default, float):
        return st.floats(0, 10, allow_subnormal=False)
    if isinstance(default, str):
        return st.just(default) | st.text(max_size=6)
    if default is None:
        return st.none() | st.integers(1, 100) | st.floats(0, 1)
    return st.just(default)


def typed_dicts(cls):
    defaults = cls().to_dict()
    return st.fixed_dictionaries({}, optional={name: like(value) for name, value in defaults.items()})


@FAST
@given(case=st.sampled_from(CLASSES).flatmap(lambda cls: st.tuples(
    st.just(cls), st.dictionaries(st.sampled_from(FIELDS), values, max_size=4) | typed_dicts(cls))))
def test_valid_configs_survive_json_with_equal_keys(case):
    cls, data = case
    data = {k: v for k, v in data.items() if k in cls.fields()}
    cfg = only_config_errors(cls, **data)
    if cfg is not None:
        for name, value in data.items():  # accepted: every field holds what it was given
            assert same_value(value, getattr(cfg, name)), (name, value, getattr(cfg, name))
        assert cls(**cfg.to_dict()).get_key() == cfg.get_key()
        round_trips(cfg)
        text = json.dumps(json.loads(cfg.to_json()))  # through any JSON tool
        assert cls.from_json(text).get_key() == cfg.get_key()


json_docs = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.sampled_from(
                             ["__class__", "__tuple__", "__items__", "fn", "seed", "steps", "dataset", "trainer"]),
                             inner, max_size=4), max_leaves=10)


@FAST
@given(doc=json_docs, text=st.text(max_size=30))
def test_from_json_of_anything_gives_a_config_or_config_error(doc, text):
    for cls in (TrainerConfig, BaseConfig, Experiment, TransferExperiment):
        for payload in (json.dumps(doc), text):
            loaded = only_config_errors(cls.from_json, payload)
            if loaded is not None:  # accepted: an object of that class that survives its own JSON
                assert isinstance(loaded, cls), (cls, type(loaded))
                back = type(loaded).from_json(loaded.to_json())
                assert back == loaded and keys_of(back) == keys_of(loaded)


def test_a_payload_naming_no_config_class_is_refused_by_the_base_class():
    with pytest.raises(ConfigError, match="names no config class"):
        BaseConfig.from_json("{}")
    with pytest.raises(ConfigError, match="unknown config class"):
        BaseConfig.from_json('{"__class__": "nntransfer.core.config.BaseConfig"}')


def plain_yaml_data(value) -> bool:
    """What a --set value may be: YAML's plain data (no dates, sets or bytes from explicit tags)."""
    if isinstance(value, list):
        return all(map(plain_yaml_data, value))
    if isinstance(value, dict):
        return all(plain_yaml_data(k) and plain_yaml_data(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


# plain YAML tokens: no flow indicators, comments, mappings, block sequences or line breaks
SIMPLE = "".join(chr(c) for c in range(0x20, 0x7f) if chr(c) not in ",[]{}#:-?&*!|>%@`\n")


@FAST
@given(text=st.text(max_size=20) | st.text(SIMPLE, max_size=12)
       | st.sampled_from(["1e-3", "010", "0x1F", "0o17", ".inf", "-.inf", ".nan", "yes", "off", "~", "null", "'1'",
                          '"a, b"', "True", "FALSE", "2001-12-14", "!!binary aGk=", "!!set {a}", "1_000"]))
def test_set_and_grid_values_parse_or_raise_config_error(text):
    value = only_config_errors(parse_value, text)
    values = only_config_errors(parse_values, text)
    assert values is None or (isinstance(values, list) and values)
    explicit_tag = "!" in text  # e.g. !!binary gives bytes: a config refuses them with a ConfigError
    for accepted in ([] if value is None else [value]) + (values or []):
        assert explicit_tag or plain_yaml_data(accepted), (text, accepted)
        only_config_errors(TrainerConfig, optimizer_options={"lr": 0.1, "x": accepted})
    if value is not None and values is not None and set(text) <= set(SIMPLE):
        # a grid of one value is the --set of that value (NaN aside, which equals nothing)
        assert repr(values) == repr([value]), (text, value, values)


def base_experiment():
    return Experiment(ImageDatasetConfig(), ModelConfig(), TrainerConfig(), 1)


paths = st.sampled_from(["trainer.max_iter", "trainer.optimizer_options.lr", "dataset.batch_size", "seed",
                         "1.trainer.max_iter", "0.model.type", "trainer.optimizer_options", "model", "x.y",
                         "trainer.module_options.M.std", "trainer."]) | st.text(max_size=12)


# values a run would set: most of them valid, so that the accepted overrides are checked often
typed_sets = st.fixed_dictionaries({}, optional={
    "trainer.max_iter": st.integers(1, 50), "dataset.batch_size": st.integers(1, 512), "seed": st.integers(0, 99),
    "trainer.optimizer_options.lr": st.floats(1e-5, 1), "1.trainer.max_iter": st.integers(1, 5),
    "model.type": st.sampled_from(["lenet", "mlp", "lenett"])})
typed_grids = st.fixed_dictionaries({}, optional={
    "trainer.max_iter": st.lists(st.integers(1, 50), min_size=1, max_size=3),
    "seed": st.lists(st.integers(0, 99), min_size=1, max_size=3),
    "1.trainer.patience": st.lists(st.integers(1, 9), min_size=1, max_size=2)})


typed_sets_paths = {"trainer.max_iter", "dataset.batch_size", "trainer.optimizer_options.lr", "1.trainer.max_iter",
                    "model.type"}


def frozen_keys(exp):
    keys = keys_of(exp)
    return tuple(tuple(sorted(k.items())) for k in (keys if isinstance(keys, list) else [keys]))


def step_specific(path, *overrides) -> set[int]:
    """The steps whose own path (``N.<path>``) one of these overrides sets: there it decides, not ``path``."""
    return {int(p.split(".", 1)[0]) for given in overrides for p in given
            if p.split(".", 1)[0].isdigit() and p.split(".", 1)[1] == path}


def step_path(path: str) -> str:
    """``1.trainer.max_iter`` -> ``trainer.max_iter`` (the path for every step); a path without a step as it is."""
    head, _, rest = path.partition(".")
    return rest if head.isdigit() else path


def held_at(exp, path, skip=()):
    """The value ``path`` (``[step.]section.field[.key...]``) addresses in every step it addresses (but ``skip``)."""
    parts = path.split(".")
    steps = list(enumerate(exp.steps if isinstance(exp, TransferExperiment) else [exp]))
    if parts[0].isdigit():
        steps, parts = steps[int(parts[0]):int(parts[0]) + 1], parts[1:]
    held = []
    for index, step in steps:
        if index in skip:
            continue
        value = getattr(step.configs[parts[0]], parts[1])
        for key in parts[2:]:
            value = value[key]
        held.append(value)
    return held


@FAST
@given(sets=st.dictionaries(paths, values, max_size=3) | typed_sets,
       grid=st.dictionaries(paths, st.lists(values, max_size=3) | values, max_size=2) | typed_grids)
def test_overrides_give_experiments_or_config_error(sets, grid):
    from nntransfer import Description

    experiments = {Description("a", 1): base_experiment(),
                   Description("b", 1): TransferExperiment([base_experiment(), base_experiment()])}
    out = only_config_errors(apply_overrides, experiments, sets, grid)
    if out is None:
        return
    if grid and all(step_of(path) is None for path in grid):
        # accepted: one experiment per distinct grid point and experiment (equal points make one experiment)
        with_sets = apply_overrides(experiments, sets)  # the --set part alone (checked on its own below)
        wanted = {frozen_keys(exp.replace(**point)) for exp in with_sets.values() for point in grid_points(grid)}
        assert {frozen_keys(exp) for exp in out.values()} == wanted
        assert len(out) <= len(experiments) * math.prod(len(values) for values in grid.values())
    for desc, exp in out.items():
        assert desc.seed == exp.seed
        back = type(exp).from_json(exp.to_json())
        assert back == exp and keys_of(back) == keys_of(exp)
        for path, value in sets.items():  # accepted: a --set lands in every step it addresses
            if path == "seed" and "seed" not in grid:
                assert exp.seed == value
            elif path in typed_sets_paths and path not in grid and step_path(path) not in grid:
                # a step's own --set or grid value wins over the path for every step; the grid comes after --set
                held = held_at(exp, path, skip=step_specific(path, sets, grid))
                assert all(same_value(value, h) for h in held), (path, value, exp)
        for path, values in grid.items():  # within a grid point too, a step's own value wins
            if path in typed_sets_paths | {"1.trainer.patience"}:
                held = held_at(exp, path, skip=step_specific(path, grid))
                assert all(any(same_value(v, h) for v in values) for h in held), path


@FAST
@given(doc=json_docs | st.fixed_dictionaries({"name": st.text(max_size=5), "trainer": st.dictionaries(
    st.sampled_from(["max_iter", "max_iter_", "optimizer_options", "lr_"]), values, max_size=2),
    "seed_": st.lists(values, max_size=2)}), raw=st.text(max_size=40))
def test_yaml_recipes_give_experiments_or_config_error(tmp_path_factory, doc, raw):
    folder = tmp_path_factory.mktemp("recipes")
    (folder / "doc.yaml").write_text(yaml.safe_dump(doc))
    (folder / "raw.yaml").write_text(raw)
    (folder / "doc.json").write_text(json.dumps(doc))
    for name in ("doc.yaml", "raw.yaml", "doc.json"):
        found = only_config_errors(experiments_from_file, folder / name)
        for desc, exp in (found or {}).items():  # accepted: named experiments with the seed they run with
            assert isinstance(exp, (Experiment, TransferExperiment)) and desc.seed == exp.seed
            assert isinstance(desc.name, str) and desc.name
        if found is not None and name == "doc.yaml" and isinstance(doc, dict) and "seed_" in doc:
            # a grid document: one experiment per distinct point of the seed and trainer axes, every seed in it
            axes = [doc["seed_"]] + [v for k, v in doc["trainer"].items() if k.endswith("_")]
            assert len(found) <= math.prod(len(values) for values in axes)
            assert {exp.seed for exp in found.values()} == set(doc["seed_"])


@pytest.mark.parametrize("cfg", [TrainerConfig(optimizer_options={"lr": 0.1, "__tuple__": [1, 2]}),
                                 TrainerConfig(loss_functions={"__items__": "MSELoss"}),
                                 TrainerConfig(main_loop_modules=["M"], module_options={"M": {"__tuple__": [1]}})])
def test_dicts_that_look_like_the_json_markers_round_trip(cfg):
    round_trips(cfg)
