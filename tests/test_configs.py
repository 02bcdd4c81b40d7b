"""Config behaviour: defaults, overrides, validation, hashing rules, JSON round trips (no database)."""
import json
from typing import Optional

import pytest

from nntransfer.compat import make_hash
from nntransfer.configs import (
    BaseConfig,
    ConfigError,
    DatasetConfig,
    ImageDatasetConfig,
    ModelConfig,
    TrainerConfig,
    field,
)


class ToyTrainer(TrainerConfig):
    fn = "nntransfer.configs.base.resolve_import_path"
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    milestones: list[int] = [3, 6]
    weights: dict[int, float] = {0: 1.0, 1: 2.0}
    note: Optional[str] = None


class NoiseMixin(BaseConfig):
    noise_std: float = 0.0


class NoisyDataset(NoiseMixin, ImageDatasetConfig):
    fn = "nntransfer.configs.base.resolve_import_path"


def test_defaults_overrides_and_independent_mutable_defaults():
    a, b = ToyTrainer(), ToyTrainer(lr=0.5)
    assert a.lr == 0.1 and b.lr == 0.5
    a.milestones.append(9)
    assert ToyTrainer().milestones == [3, 6]  # each instance has its own copy


def test_mixin_fields_are_inherited():
    cfg = NoisyDataset(noise_std=0.2, batch_size=8)
    assert cfg.noise_std == 0.2 and cfg.batch_size == 8
    assert "noise_std" in cfg.hashed_dict()


def test_same_config_same_key_and_any_field_change_changes_it():
    base = ToyTrainer().get_key()
    assert ToyTrainer().get_key() == base
    for change in ({"lr": 0.2}, {"betas": (0.8, 0.999)}, {"milestones": [3]}, {"weights": {0: 1.0}},
                   {"note": "x"}, {"max_iter": 11}, {"patience": 1}):
        assert ToyTrainer(**change).get_key() != base, change


def test_key_order_irrelevant_and_comment_ignored():
    a = ToyTrainer(lr=0.2, max_iter=3, comment="first")
    b = ToyTrainer(max_iter=3, lr=0.2, comment="something else")
    assert a.get_key() == b.get_key()
    assert a.comment == "first"


def test_key_equals_make_hash_of_documented_dict():
    cfg = ToyTrainer(lr=0.3, comment="not hashed")
    run_fields = {"comment", "verbose", "save_every_n", "save_every_steps", "keep_last_n", "keep_best_n",
                  "track_iterations"}
    since_fields = {name for name, f in cfg.fields().items() if f.metadata.get("since")}  # all at their defaults
    documented = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.to_dict().items()
                  if k not in run_fields | since_fields}
    assert cfg.get_key() == {"trainer_fn": ToyTrainer.fn, "trainer_hash": make_hash(documented)}


def test_run_fields_are_stored_and_shown_but_not_hashed():
    from nntransfer.configs import ImageDatasetConfig

    base = ToyTrainer(lr=0.3)
    for change in ({"verbose": False}, {"save_every_n": 3}, {"keep_last_n": 4}, {"keep_best_n": 0},
                   {"track_iterations": True}):
        other = base.replace(**change)
        assert other.get_key() == base.get_key(), change
        assert other.to_dict()[next(iter(change))] == next(iter(change.values()))
    assert base.replace(max_iter=3).get_key() != base.get_key()
    data = ImageDatasetConfig()
    for change in ({"num_workers": 2}, {"pin_memory": True}, {"data_dir": "/elsewhere"}):
        assert data.replace(**change).get_key() == data.get_key(), change
    assert data.replace(batch_size=8).get_key() != data.get_key()
    shown = base.describe()
    assert "[run] verbose" in shown and "[key] max_iter" in shown and "[run] comment" in shown
    assert "verbose" not in ToyTrainer.key_fields() and "lr" in ToyTrainer.key_fields()


def test_field_added_later_keeps_old_keys():
    class Old(TrainerConfig):
        fn = "nntransfer.configs.base.resolve_import_path"
        lr: float = 0.1

    class New(TrainerConfig):
        fn = "nntransfer.configs.base.resolve_import_path"
        lr: float = 0.1
        warmup: int = field(default=0, since="0.2")

    assert New().get_key() == Old().get_key()
    assert New(warmup=3).get_key() != Old().get_key()


def test_values_are_normalised_so_str_hashing_cannot_merge_them():
    # int given to a float field is the same value -> same key
    assert ToyTrainer(lr=1).get_key() == ToyTrainer(lr=1.0).get_key()
    # a string where a number belongs is rejected instead of hashing like the number
    with pytest.raises(ConfigError, match="lr must be float"):
        ToyTrainer(lr="1.0")
    # list given for a tuple field becomes a tuple: one representation, one key
    assert ToyTrainer(betas=[0.8, 0.9]).betas == (0.8, 0.9)
    assert ToyTrainer(betas=[0.8, 0.9]).get_key() == ToyTrainer(betas=(0.8, 0.9)).get_key()
    # where None or a number is declared, the string "None" cannot sneak in and hash like None
    with pytest.raises(ConfigError, match="examples_per_class"):
        ImageDatasetConfig(examples_per_class="None")
    assert ImageDatasetConfig(examples_per_class=None).get_key() != ImageDatasetConfig(examples_per_class=1).get_key()
    with pytest.raises(ConfigError):
        ToyTrainer(max_iter=True)  # bool is not an int


def test_unknown_field_names_the_closest_one():
    with pytest.raises(ConfigError, match=r"no field 'lrr'.*did you mean 'lr'"):
        ToyTrainer(lrr=0.1)
    cfg = ToyTrainer()
    with pytest.raises(ConfigError, match="did you mean 'patience'"):
        cfg.patiense = 3


def test_wrong_types_are_rejected_with_the_field_named():
    with pytest.raises(ConfigError, match=r"milestones\[1\] must be int"):
        ToyTrainer(milestones=[1, "2"])
    with pytest.raises(ConfigError, match="betas must have 2 items"):
        ToyTrainer(betas=(0.9,))
    with pytest.raises(ConfigError, match="batch_size"):
        DatasetConfig(batch_size=3.5)
    cfg = ToyTrainer()
    with pytest.raises(ConfigError):
        cfg.lr = "fast"


def test_unresolvable_fn_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg'"):
        ModelConfig(fn="no_such_pkg.build").resolve_fn()
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        ModelConfig(fn="nntransfer.configs.nope").resolve_fn()
    with pytest.raises(ConfigError, match="import path"):
        ModelConfig(fn="build")


@pytest.mark.parametrize(
    "cfg",
    [
        DatasetConfig(batch_size=16),
        ImageDatasetConfig(filter_classes=[0, 1], comment="c"),
        ModelConfig(dropout=0.5),
        TrainerConfig(max_iter=2),
        ToyTrainer(betas=(0.5, 0.6), weights={3: 0.5}, note="n"),
        NoisyDataset(noise_std=0.3),
    ],
)
def test_json_round_trip_of_every_config_class(cfg):
    text = cfg.to_json()
    json.loads(text)  # valid JSON
    back = type(cfg).from_json(text)
    assert back == cfg and back.get_key() == cfg.get_key()
    assert BaseConfig.from_json(text) == cfg  # the class is restored from the payload
    assert cfg.replace() == cfg and cfg.replace(comment="x").get_key() == cfg.get_key()


def test_json_keeps_tuples_and_non_string_keys():
    cfg = ToyTrainer(betas=(0.1, 0.2), weights={7: 0.5})
    back = ToyTrainer.from_json(cfg.to_json())
    assert back.betas == (0.1, 0.2) and isinstance(back.betas, tuple)
    assert back.weights == {7: 0.5}
