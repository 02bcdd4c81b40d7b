"""--set, --grid, --config, YAML recipes, seeds and CLI errors (issue 10 items 12, 13, 15, 16)."""
import os
import re
import textwrap
from pathlib import Path

import pytest

from nntransfer.runner import check_config

from nntransfer import Description, Experiment, TransferExperiment, run
from nntransfer.configs import ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.orchestration.fill import fill_tables
from nntransfer.orchestration.recipes import load_recipe, normalize
from nntransfer.orchestration.plan import plan
from nntransfer.orchestration.recipes import parse_value, parse_values
from toy_pipeline import toy

ROOT = Path(__file__).resolve().parents[1]


def cli_experiments(*argv):
    from nntransfer.cli import build_parser
    from nntransfer.cli.common import experiments as _experiments

    return _experiments(build_parser().parse_args(["status", *map(str, argv)]))


@pytest.fixture
def toy_recipe(tmp_path):
    recipe = tmp_path / "recipe.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment, TransferExperiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        step = lambda **t: Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1, **t), 1)
        transfer_experiments = {Description("chain", 1): TransferExperiment([step(), step(lr=0.05)])}
    """))
    return recipe


# -- item 12: names that do not resolve fail before anything is written -----------------------------
@pytest.mark.parametrize("change", [
    {"dataset.dataset_cls": "MNSIT"}, {"model.type": "lenett"},
    {"trainer.loss_functions": {"img_classification": "CrossEntropyLos"}}, {"trainer.metrics": ["accuracy", "acc"]},
    {"trainer.main_loop_modules": ["NoSuchModule"]},
])
def test_unknown_registered_names_fail_at_fill_before_any_row(clean_db, change):
    good = Experiment(ImageDatasetConfig(), ModelConfig(), TrainerConfig(max_iter=1), 1)
    bad = good.replace(**change)
    with pytest.raises(ConfigError, match="unknown"):
        fill_tables({Description("good", 1): TransferExperiment([good]), Description("bad", 1):
                     TransferExperiment([good, bad])})
    with pytest.raises(ConfigError, match="unknown"):
        bad.add_to_table()
    with pytest.raises(ConfigError, match="unknown"):
        bad.configs[next(iter(change)).split(".")[0]].add_to_table()
    for table in ("Seed", "Dataset", "Model", "Trainer", "TrainedModelTransferRecipe"):
        assert len(clean_db.table(table)()) == 0, table


# -- item 12: --set gives numbers where YAML 1.1 gives strings ---------------------------------------
def test_set_values_follow_yaml_1_2_numbers_and_booleans():
    assert parse_value("1e-3") == 0.001 and isinstance(parse_value("1e-3"), float)
    assert parse_value("1E+2") == 100.0 and parse_value("-.5") == -0.5 and parse_value("3") == 3
    assert parse_value("010") == 10 and parse_value("0x10") == 16 and parse_value("0o10") == 8
    assert parse_value("true") is True and parse_value("no") == "no" and parse_value("on") == "on"
    assert parse_value("2001-12-14") == "2001-12-14" and parse_value("'1'") == "1" and parse_value("~") is None
    assert parse_value("[10, 20]") == [10, 20] and parse_value("{a: 1e-3}") == {"a": 0.001}


def test_set_optimizer_lr_1e_3_is_a_number(toy_recipe):
    (exp,) = cli_experiments(toy_recipe, "--set", "trainer.optimizer_options.lr=1e-3").values()
    assert all(step.trainer.optimizer_options["lr"] == 0.001 for step in exp)
    (quoted,) = cli_experiments(toy_recipe, "--set", "trainer.optimizer_options.lr='1e-3'").values()
    assert quoted[0].trainer.optimizer_options["lr"] == "1e-3" and quoted.get_restrictions(0) != exp.get_restrictions(0)
    with pytest.raises(ConfigError, match=r"optimizer_options\['lr'\] is the string '1e-3'; Adam takes a number"):
        check_config(quoted[0].trainer)  # when filled


# -- item 13: the seed lives in one place -----------------------------------------------------------------
def test_a_description_with_another_seed_than_its_experiment_is_an_error(clean_db):
    with pytest.raises(ConfigError, match=r"Description\(name='a', seed=2\) describes an experiment whose seed is 1"):
        normalize({Description("a", 2): toy(seed=1)})
    with pytest.raises(ConfigError, match="seed is 3"):
        run({Description("t", 1): TransferExperiment([toy(seed=1), toy(seed=3)])}, quiet=True)
    assert len(clean_db.Seed()) == 0
    # a transfer experiment's seed is its last step's: a shared pretraining may use another one
    assert list(normalize({Description("t", 3): TransferExperiment([toy(seed=1), toy(seed=3)])})) == [
        Description("t", 3)]


def test_seed_grids_make_replicates_of_one_named_experiment(toy_recipe, tmp_path):
    got = cli_experiments(toy_recipe, "--grid", "seed=1,2,3", "--grid", "trainer.lr=0.1,0.2")
    assert sorted(got) == sorted(Description(f"chain[trainer.lr={lr}]", s) for lr in (0.1, 0.2) for s in (1, 2, 3))
    assert all(step.seed == desc.seed for desc, exp in got.items() for step in exp)
    names = {t.description.name for t in plan(got)}
    assert names == {"chain[trainer.lr=0.1]", "chain[trainer.lr=0.2]"}
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: s\ndataset: {class: toy_pipeline.ToyData}\nmodel: {class: toy_pipeline.ToyModel}\n"
                     "trainer: {class: toy_pipeline.ToyTrainer}\nseed_: [4, 5]\n")
    assert sorted(load_recipe(sweep)) == [Description("s", 4), Description("s", 5)]
    from nntransfer.orchestration.recipes import expand

    assert sorted(expand({Description("py", 1): toy()}, {"seed": [7, 8]})) == [Description("py", 7),
                                                                             Description("py", 8)]
    assert [e.seed for e in Experiment.grid(toy(), {"seed": [7, 8]})] == [7, 8]


# -- item 15: step-addressed --set on mixed recipes; one-line errors with a traceback file -------------
def test_set_on_a_step_changes_only_experiments_with_that_step(capsys):
    from nntransfer.orchestration.recipes import load_recipe

    recipe = ROOT / "examples" / "digits_transfer.py"
    original = load_recipe(recipe)
    two_step = sum(len(exp) == 2 for exp in original.values())
    assert 0 < two_step < len(original)  # the demo mixes one- and two-step experiments
    got = cli_experiments(recipe, "--set", "1.trainer.max_iter=3")
    assert (f"--set 1.trainer.max_iter: changed {two_step} of {len(original)} experiment(s) (those with a step 1)"
            in capsys.readouterr().out)
    for desc, exp in got.items():
        before = original[desc]
        if len(exp) == 2:
            assert exp[1].trainer.max_iter == 3 and exp[0].trainer.max_iter == before[0].trainer.max_iter
        else:
            assert exp[0].trainer.max_iter == before[0].trainer.max_iter
    with pytest.raises(ConfigError, match=f"none of the {len(original)} experiment.s. has a step 2"):
        cli_experiments(recipe, "--set", "2.trainer.max_iter=3")


def test_cli_status_with_a_step_override_on_the_mixed_demo(cli):
    out = cli("status", ROOT / "examples" / "digits_transfer.py", "--set", "1.trainer.max_iter=3")
    assert out.returncode == 0, out.stderr
    assert re.search(r"changed \d+ of \d+ experiment", out.stdout) and "Traceback" not in out.stderr


def test_an_unexpected_error_is_one_line_naming_the_traceback_file(tmp_path, cli):
    # an error while the recipe runs is a recipe error (its line, exit 2: tests/test_cli_messages.py); this one
    # comes later, from an object the recipe hands over, while nntransfer reads it
    recipe = tmp_path / "broken.py"
    recipe.write_text("class Experiments:\n    def __iter__(self):\n        raise RuntimeError('boom in the recipe')\n\n"
                      "experiments = Experiments()\n")
    out = cli("status", recipe)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nntransfer: unexpected RuntimeError: boom in the recipe")
    log = Path(lines[0].split("full traceback in ")[1].rstrip(")"))
    assert log.parent == Path(os.environ["NNTRANSFER_HOME"]).resolve() / "logs"
    text = log.read_text()
    assert "Traceback" in text and "in __iter__" in text and "boom in the recipe" in text


# -- item 16: repeated paths, values with commas, YAML errors, grids over later steps -----------------
def test_a_path_given_twice_is_an_error(toy_recipe):
    with pytest.raises(ConfigError, match="--grid trainer.lr is given twice"):
        cli_experiments(toy_recipe, "--grid", "trainer.lr=0.1,0.2", "--grid", "trainer.lr=0.3")
    with pytest.raises(ConfigError, match="--set trainer.lr is given twice"):
        cli_experiments(toy_recipe, "--set", "trainer.lr=0.1", "--set", "trainer.lr=0.3")
    with pytest.raises(ConfigError, match="both --set and --grid"):
        cli_experiments(toy_recipe, "--set", "trainer.lr=0.1", "--grid", "trainer.lr=0.3,0.4")


def test_command_line_wins_over_the_config_file(toy_recipe, tmp_path):
    overrides = tmp_path / "o.yaml"
    overrides.write_text("trainer:\n  lr_: [0.1, 0.2]\n  max_iter: 2\n")
    got = cli_experiments(toy_recipe, "--config", overrides, "--set", "trainer.lr=0.3", "--grid",
                          "trainer.max_iter=3,4")
    assert sorted((exp[0].trainer.lr, exp[0].trainer.max_iter) for exp in got.values()) == [(0.3, 3), (0.3, 4)]


def test_grid_values_can_be_lists_and_strings_with_commas(toy_recipe):
    assert parse_values("[10,20],[5]") == [[10, 20], [5]]
    assert parse_values("'a, b',c") == ["a, b", "c"] and parse_values("1e-3,0.1") == [0.001, 0.1]
    got = cli_experiments(toy_recipe, "--grid", "trainer.milestones=[10,20],[5]")
    assert sorted(exp[0].trainer.milestones for exp in got.values()) == [[5], [10, 20]]
    assert sorted(d.name for d in got) == ["chain[trainer.milestones=[10, 20]]", "chain[trainer.milestones=[5]]"]
    got = cli_experiments(toy_recipe, "--grid", "dataset.comment='a, b',c")
    assert sorted(exp[0].dataset.comment for exp in got.values()) == ["a, b", "c"]
    with pytest.raises(ConfigError, match=r"--grid trainer.lr=\[0.1,, line 1"):
        cli_experiments(toy_recipe, "--grid", "trainer.lr=[0.1,")
    with pytest.raises(ConfigError, match="no values"):
        cli_experiments(toy_recipe, "--grid", "trainer.lr=")


@pytest.mark.parametrize("suffix, text, line", [
    (".yaml", "name: x\ntrainer:\n  max_iter: 3\n   lr: 0.1\n", 4),
    (".yaml", "name: x\ntrainer: {max_iter: 3\nmodel: {}\n", 3),
    (".yaml", "name: x\nseed: 1\nseed: 2\n", 3),
    (".json", '{"name": "x",\n "trainer": {"max_iter": 3,}\n}', 2),
])
def test_syntax_errors_in_recipe_files_name_file_and_line(tmp_path, suffix, text, line):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}.*line {line}"):
        load_recipe(path)


def test_grid_over_a_later_step_trains_the_shared_step_once(clean_db, toy_recipe, train_log, capsys):
    got = cli_experiments(toy_recipe, "--grid", "1.trainer.max_iter=1,2")
    assert "--grid 1.trainer.max_iter: changed 1 of 1 experiment(s)" in capsys.readouterr().out
    targets = plan(got)
    assert len({tuple(sorted(t.key.items())) for t in targets if t.step == 0}) == 1
    rows = run(got, quiet=True)
    assert [r["state"] for r in rows] == ["done"] * 4
    trained = train_log.read_text().splitlines()
    assert len(trained) == 3 and len({line.split()[0] for line in trained}) == 3  # step 0 once, two step-1 variants


def test_a_steps_own_path_wins_over_the_path_for_every_step_in_any_order():
    from nntransfer import Description, Experiment, TransferExperiment
    from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
    from nntransfer.orchestration.recipes import apply_overrides

    def step():
        return Experiment(ImageDatasetConfig(), ModelConfig(), TrainerConfig(), 1)

    experiments = {Description("chain", 1): TransferExperiment([step(), step()])}
    for sets in ({"trainer.max_iter": 2, "1.trainer.max_iter": 1}, {"1.trainer.max_iter": 1, "trainer.max_iter": 2}):
        (chain,) = apply_overrides(experiments, sets).values()
        assert [s.trainer.max_iter for s in chain.steps] == [2, 1], sets
