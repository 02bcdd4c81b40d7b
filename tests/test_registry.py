"""The one registry mechanism: names, import paths, families, errors, and `nntransfer list`."""
import pytest

from nntransfer.runner import check_config
from torch import nn

from nntransfer.configs import ConfigError
from nntransfer.configs.registries import REGISTRIES
from nntransfer.core.registry import Registry, resolve_import_path


def test_names_import_paths_and_families_resolve():
    things = Registry("widget", "WidgetConfig.kind", how="Register one with @WIDGETS.register('name').")

    @things.register("square", "box")
    def square(size):
        return size * size

    @things.register_family("scaled.")
    def scaled(name, size):
        return float(name) * size

    assert things.get("square") is square and things.get("box") is square and things["square"] is square
    assert things.get("scaled.2.5")(4) == 10.0
    assert things.get("math:sqrt")(9) == 3.0 and things.get("math.sqrt")(16) == 4.0  # both import path spellings
    assert sorted(things) == ["box", "square"] and len(things) == 2
    assert things.names() == ["box", "square", "scaled.<name>"]


def test_unknown_names_are_config_errors_that_list_and_suggest():
    things = Registry("widget", "WidgetConfig.kind", how="Register one with @WIDGETS.register('name').")
    things.register("square")(lambda: None)
    with pytest.raises(ConfigError, match=r"unknown widget 'sqare' in WidgetConfig.kind. Did you mean 'square'\? "
                                          r"Registered: square, or an import path 'package.module:Name'. Register"):
        things.get("sqare")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_package.thing' \\(No module named 'no_such_package'\\)"):
        things.get("no_such_package.thing:Widget")
    with pytest.raises(ConfigError, match="module 'math' has no attribute 'nope'"):
        things.get("math:nope")
    with pytest.raises(ConfigError, match="not callable"):
        resolve_import_path("math:pi")


def test_a_check_refuses_what_does_not_fit_when_registered_and_when_imported():
    modules = Registry("layer", "Config.layer")
    modules.set_check(lambda obj: None if isinstance(obj, type) and issubclass(obj, nn.Module)
                      else f"{obj!r} is not an nn.Module class")
    with pytest.raises(TypeError, match="cannot register 'f' as a layer"):
        modules.register("f")(len)
    assert modules.get("torch.nn:Linear") is nn.Linear
    with pytest.raises(ConfigError, match="Config.layer='math:sqrt'.*not an nn.Module class"):
        modules.get("math:sqrt")


def test_every_kind_is_listed_by_the_command_line(cli):
    assert set(REGISTRIES) == {"models", "sources", "losses", "metrics", "modules", "cores"}
    out = cli("list")
    assert out.returncode == 0, out.stderr
    for kind, registry in REGISTRIES.items():  # the built-ins and whatever this process registered
        line = next(line for line in out.stdout.splitlines() if line.startswith(f"{kind} ("))
        assert registry.names() and all(name in line for name in registry.names()), kind
    assert "lenet" in out.stdout and "PoissonLoss" in out.stdout and "correlation" in out.stdout
    only = cli("list", "losses")
    assert only.stdout.startswith("losses (TrainerConfig.loss_functions): ") and "models (" not in only.stdout
    bad = cli("list", "lossess")
    assert bad.returncode == 2 and "unknown kind 'lossess'" in bad.stderr  # bad input: exit 2


def test_family_members_and_neural_core_types_are_checked_when_a_config_is_filled():
    from nntransfer.configs import ModelConfig, NeuralModelConfig

    check_config(ModelConfig(type="torchvision.resnet18"))
    with pytest.raises(ConfigError, match="no 'resnet1800' among .* Did you mean 'torchvision.resnet18'"):
        check_config(ModelConfig(type="torchvision.resnet1800"))
    check_config(NeuralModelConfig(type="se2d"))
    check_config(NeuralModelConfig(type="lenet", core_layer="core.4"))
    with pytest.raises(ConfigError, match=r"'stacked2dd' is neither a neural core \(se2d, stacked2d\)"):
        check_config(NeuralModelConfig(type="stacked2dd"))
