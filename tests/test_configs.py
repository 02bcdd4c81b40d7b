"""Config behaviour: defaults, overrides, validation, hashing rules, JSON round trips (no database)."""
import json
from typing import Optional

import pytest

from nntransfer.runner import check_config

from nntransfer.core.compat import make_hash
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
    fn = "nntransfer.core.registry.resolve_import_path"
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    milestones: list[int] = [3, 6]
    weights: dict[int, float] = {0: 1.0, 1: 2.0}
    note: Optional[str] = None


class NoiseMixin(BaseConfig):
    noise_std: float = 0.0


class NoisyDataset(NoiseMixin, ImageDatasetConfig):
    fn = "nntransfer.core.registry.resolve_import_path"


def test_defaults_overrides_and_values_that_cannot_change_in_place():
    a, b = ToyTrainer(), ToyTrainer(lr=0.5)
    assert a.lr == 0.1 and b.lr == 0.5
    key = a.get_key()
    changes = (lambda: a.milestones.append(9), lambda: a.weights.update({2: 3.0}), lambda: a.freeze.extend(["x"]),
               lambda: a.optimizer_options.__setitem__("lr", float("nan")), lambda: a.milestones.__iadd__([1]))
    for change in changes:
        with pytest.raises(ConfigError, match="cannot be changed in place"):
            change()
    assert a.get_key() == key and a.milestones == [3, 6] and a.optimizer_options == {"lr": 0.001}
    plain = a.to_dict()  # plain, mutable copies
    plain["milestones"].append(9)
    assert a.milestones == [3, 6] and type(plain["weights"]) is dict


def test_assigning_a_field_validates_the_whole_config_again():
    cfg = TrainerConfig()
    with pytest.raises(ConfigError, match="max_iter must be at least 1"):
        cfg.max_iter = 0
    with pytest.raises(ConfigError, match="NaN"):
        cfg.optimizer_options = {"lr": float("nan")}
    with pytest.raises(ConfigError, match="stop_metric"):
        cfg.metrics = []  # the cross-field check: stop_metric 'accuracy' is no longer measured
    assert cfg.max_iter == 10 and cfg.optimizer_options == {"lr": 0.001} and cfg.metrics == ["accuracy"]
    before = cfg.get_key()  # hashed once and kept: an assignment must drop it
    before["trainer_hash"] = "changed by the caller"  # a copy: the kept key stays as it was
    assert cfg.get_key() == TrainerConfig().get_key()
    cfg.max_iter = 3
    assert cfg.get_key() == TrainerConfig(max_iter=3).get_key() != TrainerConfig().get_key()


def test_a_since_field_with_a_tuple_default_on_a_list_field_keeps_old_keys():
    class Old(TrainerConfig):
        fn = "nntransfer.core.registry.resolve_import_path"

    class New(TrainerConfig):
        fn = "nntransfer.core.registry.resolve_import_path"
        layers: list[int] = field(default=(1, 2), since="0.3")

    assert New().layers == [1, 2]
    assert New().get_key() == Old().get_key()
    assert New(layers=[1, 3]).get_key() != Old().get_key()


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
                  "track_iterations", "tensorboard"}
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
        fn = "nntransfer.core.registry.resolve_import_path"
        lr: float = 0.1

    class New(TrainerConfig):
        fn = "nntransfer.core.registry.resolve_import_path"
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


# -- issue 10 item 12: values that print alike never share a key --------------------------------------
def key(**trainer):
    return ToyTrainer(**trainer).get_key()


def test_untyped_dicts_are_normalised_so_equal_values_share_a_key():
    assert key(optimizer_options={"lr": 1}) == key(optimizer_options={"lr": 1.0})
    assert ToyTrainer(optimizer_options={"lr": 1.0}).optimizer_options == {"lr": 1}  # integral floats are ints
    assert key(optimizer_options={"lr": 0.1, "weight_decay": -0.0}) == key(optimizer_options={"lr": 0.1,
                                                                                             "weight_decay": 0})
    assert key(lr=-0.0) == key(lr=0.0) and ToyTrainer(lr=-0.0).lr == 0.0  # typed floats too
    betas = ToyTrainer(optimizer_options={"lr": 0.1, "betas": (0.9, 0.99)})
    assert betas.optimizer_options["betas"] == [0.9, 0.99]  # one representation (JSON-like)
    assert betas.get_key() == key(optimizer_options={"lr": 0.1, "betas": [0.9, 0.99]})
    assert key(main_loop_modules=["M"], module_options={"M": {}}) != key(main_loop_modules=["M"])  # {} is kept
    import numpy as np

    assert key(optimizer_options={"lr": np.float32(0.5)}) == key(optimizer_options={"lr": 0.5})


@pytest.mark.parametrize("value, message", [
    ("", "empty string"), ([], "empty list"), (float("nan"), "NaN"), (float("inf"), "NaN and infinite"),
    ([1, float("-inf")], "NaN and infinite"), (object(), "must be numbers, strings"),
])
def test_untyped_values_that_cannot_get_a_key_of_their_own_are_rejected(value, message):
    with pytest.raises(ConfigError, match=message):
        ToyTrainer(optimizer_options={"lr": 0.1, "x": value})
    with pytest.raises(ConfigError, match=message):
        ToyTrainer(main_loop_modules=["NoiseAugmentation"], module_options={"NoiseAugmentation": {"std": value}})


@pytest.mark.parametrize("a, b", [
    ("0.01", 0.01), ("1", 1), ("1e-3", 0.001), ("True", True), ("False", False), ("None", None), ("nan", "inf"),
    ('"1"', "1"), (1, True), ({}, {"a": 1}), ("1x", 1), (["1"], [1]), ({"1": 0.5}, {1: 0.5}),
])
def test_values_that_print_alike_get_distinct_keys(a, b):
    """make_hash hashes str(x): strings that read as numbers, bools or None are hashed quoted."""
    assert key(optimizer_options={"lr": 0.1, "x": a}) != key(optimizer_options={"lr": 0.1, "x": b}), (a, b)
    assert key(main_loop_modules=["M"], module_options={"M": {"layer": a}}) != key(main_loop_modules=["M"], module_options={"M": {"layer": b}}), (a, b)
    assert ToyTrainer(main_loop_modules=["M"], module_options={"M": {"layer": a}}).module_options["M"]["layer"] == a  # stored as given


def test_typed_fields_reject_nan_inf_and_keep_strings_apart_from_none():
    for bad in (float("nan"), float("inf"), -float("inf"), 10 ** 400):
        with pytest.raises(ConfigError, match="NaN and infinite"):
            ToyTrainer(lr=bad)
    with pytest.raises(ConfigError, match="NaN and infinite"):
        ToyTrainer(betas=(0.9, float("nan")))
    assert key(note="None") != key(note=None) and key(note="1") != key(note=None)  # Optional[str]
    assert ToyTrainer(note="None").note == "None"


def test_untyped_dict_keys_are_names_or_numbers():
    mixture = ToyTrainer(main_loop_modules=["NoiseAugmentation"], module_options={"NoiseAugmentation": {"std": {0.0: 0.5, 1.0: 0.5}}})
    assert mixture.module_options["NoiseAugmentation"]["std"] == {0: 0.5, 1: 0.5}  # numbers as keys, normalised
    assert mixture.get_key() == key(main_loop_modules=["NoiseAugmentation"], module_options={"NoiseAugmentation": {"std": {0: 0.5, 1: 0.5}}})
    assert key(main_loop_modules=["M"], module_options={"M": {"1": 0.5}}) != key(main_loop_modules=["M"], module_options={"M": {1: 0.5}})
    with pytest.raises(ConfigError, match="keys of untyped dicts are strings or numbers, got tuple"):
        ToyTrainer(optimizer_options={"lr": 0.1, "nested": {(1, 2): 1}})
    with pytest.raises(ConfigError, match="NaN"):
        ToyTrainer(main_loop_modules=["M"], module_options={"M": {float("nan"): 1}})


@pytest.mark.parametrize("cfg, message", [
    (ImageDatasetConfig(dataset_cls="MNSIT"), r"unknown dataset 'MNSIT'.*Did you mean 'MNIST'"),
    (ModelConfig(type="lenett"), r"unknown model type 'lenett'.*Did you mean 'lenet'"),
    (TrainerConfig(loss_functions={"img_classification": "CrossEntropyLos"}),
     r"unknown loss 'CrossEntropyLos'.*Did you mean 'CrossEntropyLoss'"),
    (TrainerConfig(metrics=["accuracy", "acc"]), r"unknown metric 'acc'"),
    (TrainerConfig(main_loop_modules=["NoiseAugmentaton"]), r"unknown main-loop module|unknown module"),
    (TrainerConfig(loss_functions={"img_classification": "Distillation"},
                   loss_options={"Distillation": {"temprature": 2.0}}),
     r"loss_options\['Distillation'\] has \['temprature'\].*temperature, alpha, key"),
])
def test_unknown_registered_names_fail_validation(cfg, message):
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_loss_options_must_belong_to_a_used_loss():
    with pytest.raises(ConfigError, match=r"loss_options has options for \['Distillation'\]"):
        TrainerConfig(loss_options={"Distillation": {"alpha": 0.5}})
    cfg = TrainerConfig(loss_functions={"img_classification": "Distillation"}, loss_options={"Distillation": {"alpha": 0.5}})
    check_config(cfg)
    assert cfg.get_key() != TrainerConfig(loss_functions={"img_classification": "Distillation"}).get_key()
    assert "loss_options" not in TrainerConfig().hashed_dict()  # added in 0.2: old keys stay
