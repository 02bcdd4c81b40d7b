"""Property-based tests (hypothesis): whatever comes in, only a result or a ConfigError comes out (issue 10 item 17).

Random dicts, JSON and YAML go into config construction, ``from_dict``/``from_json``, ``--set``/``--grid``
parsing and YAML recipes; JSON round trips give equal configs with equal keys. No database is used.
"""
import json
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nntransfer import Experiment, TransferExperiment
from nntransfer.configs import BaseConfig, ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.orchestration.recipes import apply_overrides, experiments_from_file, parse_value, parse_values

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


@FAST
@given(cls=st.sampled_from(CLASSES), data=config_dicts)
def test_random_dicts_build_a_config_or_raise_config_error(cls, data):
    cfg = only_config_errors(cls, **data)
    if cfg is not None:
        cfg.get_key()
        cfg.describe()
        round_trips(cfg)
    from_dict = only_config_errors(cls.from_dict, data)
    assert (from_dict is None) == (cfg is None) and (cfg is None or from_dict == cfg)


@FAST
@given(cls=st.sampled_from(CLASSES), data=st.dictionaries(st.sampled_from(FIELDS), values, max_size=4))
def test_valid_configs_survive_json_with_equal_keys(cls, data):
    cfg = only_config_errors(cls, **{k: v for k, v in data.items() if k in cls.fields()})
    if cfg is not None:
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
    for loader in (TrainerConfig.from_json, BaseConfig.from_json, Experiment.from_json, TransferExperiment.from_json):
        only_config_errors(loader, json.dumps(doc))
        only_config_errors(loader, text)


@FAST
@given(text=st.text(max_size=20))
def test_set_and_grid_values_parse_or_raise_config_error(text):
    value = only_config_errors(parse_value, text)
    values = only_config_errors(parse_values, text)
    assert values is None or isinstance(values, list)
    if value is not None:
        json.dumps(value, default=str)


def base_experiment():
    return Experiment(ImageDatasetConfig(), ModelConfig(), TrainerConfig(), 1)


paths = st.sampled_from(["trainer.max_iter", "trainer.optimizer_options.lr", "dataset.batch_size", "seed",
                         "1.trainer.max_iter", "0.model.type", "trainer.optimizer_options", "model", "x.y",
                         "trainer.module_options.M.std", "trainer."]) | st.text(max_size=12)


@FAST
@given(sets=st.dictionaries(paths, values, max_size=3), grid=st.dictionaries(paths, st.lists(values, max_size=3) | values,
                                                                             max_size=2))
def test_overrides_give_experiments_or_config_error(sets, grid):
    from nntransfer import Description

    experiments = {Description("a", 1): base_experiment(),
                   Description("b", 1): TransferExperiment([base_experiment(), base_experiment()])}
    out = only_config_errors(apply_overrides, experiments, sets, grid)
    for desc, exp in (out or {}).items():
        assert desc.seed == exp.seed
        type(exp).from_json(exp.to_json()) == exp  # noqa: B015 - must not raise


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
        only_config_errors(experiments_from_file, folder / name)


@pytest.mark.parametrize("cfg", [TrainerConfig(optimizer_options={"lr": 0.1, "__tuple__": [1, 2]}),
                                 TrainerConfig(loss_functions={"__items__": "MSELoss"}),
                                 TrainerConfig(main_loop_modules=["M"], module_options={"M": {"__tuple__": [1]}})])
def test_dicts_that_look_like_the_json_markers_round_trip(cfg):
    round_trips(cfg)
