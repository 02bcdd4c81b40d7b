"""Run fields (progress bars, TensorBoard, checkpoint cadence, ...) come from the current recipe, command line or API
call for the jobs it trains, on every path that trains (`run`, `run --workers 2`, `worker`, `run()`, submitit), and
are recorded with the result: not from whoever inserted the config row first."""
import textwrap

import pytest

from nntransfer.api import run
from nntransfer.cli import main
from nntransfer.orchestration.fill import fill_tables
from nntransfer.orchestration.recipes import apply_overrides, load_recipe

TOY = textwrap.dedent("""
    from nntransfer import Description, Experiment
    from toy_pipeline import ToyData, ToyModel, ToyTrainer

    experiments = {Description("toy", 1): Experiment(ToyData(), ToyModel(),
                                                     ToyTrainer(max_iter=1, verbose=False, save_every_n=1), 1)}
""")


@pytest.fixture
def toy_recipe(tmp_path, clean_db):
    recipe = tmp_path / "toy.py"
    recipe.write_text(TOY)
    return recipe


def _output(tables, recipe):
    (target,) = fill_tables(load_recipe(recipe))
    return (tables.TrainedModel & target.key).fetch1("output")


def _first_run_then_clear(recipe, tables):
    """Train once with the recipe's own run fields; then clear, so the config rows stay and the result goes."""
    assert main(["run", str(recipe), "--no-report"]) == 0
    assert _output(tables, recipe)["received"] == {"verbose": False, "save_every_n": 1}
    assert main(["clear", str(recipe), "--yes"]) == 0
    assert len(tables.TrainedModel()) == 0 and len(tables.Trainer()) == 1  # the stored config is the first run's


def _check_second_run(recipe, tables):
    output = _output(tables, recipe)
    assert output["received"] == {"verbose": True, "save_every_n": 3}  # what the trainer was called with
    assert output["run_settings"]["trainer"]["verbose"] is True  # ... and what the result records
    assert output["run_settings"]["trainer"]["save_every_n"] == 3
    stored = (tables.Trainer & (tables.TrainedModel & {}).proj()).fetch1("trainer_config")
    assert stored["verbose"] is False  # the stored row is unchanged: run fields are not part of it


SECOND = ["--set", "trainer.verbose=true", "--set", "trainer.save_every_n=3"]


def test_run_with_one_worker_uses_the_run_fields_of_this_command(toy_recipe, clean_db):
    _first_run_then_clear(toy_recipe, clean_db)
    assert main(["run", str(toy_recipe), "--no-report", *SECOND]) == 0
    _check_second_run(toy_recipe, clean_db)


def test_run_with_two_workers_uses_the_run_fields_of_this_command(tmp_path, clean_db, capsys, train_log):
    recipe = tmp_path / "four.py"  # four slow experiments: the worker process trains some too
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer

        experiments = {Description(f"toy{seed}", seed): Experiment(
            ToyData(), ToyModel(), ToyTrainer(max_iter=1, verbose=False, sleep=1.5), seed) for seed in range(4)}
    """))
    assert main(["run", str(recipe), "--no-report", "--workers", "2", *SECOND]) == 0
    assert len({line.split()[1] for line in train_log.read_text().splitlines()}) == 2  # both processes trained
    outputs = clean_db.TrainedModel().to_arrays("output")
    assert len(outputs) == 4
    assert all(o["received"] == {"verbose": True, "save_every_n": 3} for o in outputs)
    assert "2 workers done: 4 job(s) trained, 0 failed" in capsys.readouterr().out  # the worker process's too


def test_worker_command_uses_the_run_fields_of_this_command(toy_recipe, clean_db):
    _first_run_then_clear(toy_recipe, clean_db)
    assert main(["worker", str(toy_recipe), *SECOND]) == 0
    _check_second_run(toy_recipe, clean_db)


def test_python_run_after_apply_overrides_uses_the_overridden_run_fields(toy_recipe, clean_db):
    _first_run_then_clear(toy_recipe, clean_db)  # the notebook: the CLI demo first, then run() with overrides
    rows = run(apply_overrides(load_recipe(toy_recipe), {"trainer.verbose": True, "trainer.save_every_n": 3}),
               quiet=True)
    assert [r["state"] for r in rows] == ["done"]
    _check_second_run(toy_recipe, clean_db)


@pytest.mark.slow  # a fresh Python process (submitit's local executor) imports torch and trains
def test_submitit_workers_use_the_run_fields_of_the_submitting_call(toy_recipe, clean_db, tmp_path):
    from nntransfer.orchestration.slurm import submit_workers
    from nntransfer.orchestration.workers import WorkerSettings

    _first_run_then_clear(toy_recipe, clean_db)
    planned = fill_tables(apply_overrides(load_recipe(toy_recipe), {"trainer.verbose": True,
                                                                      "trainer.save_every_n": 3}))
    (job,) = submit_workers(planned, WorkerSettings(recipe=str(toy_recipe)), folder=str(tmp_path / "jobs"),
                            cluster="local", cpus=1)
    assert job.result()["trained"] == 1
    _check_second_run(toy_recipe, clean_db)


def test_tensorboard_and_progress_bars_follow_the_command_line_after_a_clear(clean_db, tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="pip install 'nntransfer[tensorboard]'")
    from nntransfer.trainer.tensorboard import run_dir

    recipe = tmp_path / "digits.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

        experiments = {Description("digits", 1): Experiment(
            ImageDatasetConfig(dataset_cls="digits", examples_per_class=10, batch_size=32), ModelConfig(type="mlp"),
            TrainerConfig(max_iter=2, tensorboard=False, num_threads=1), 1)}
    """))
    assert main(["run", str(recipe), "--no-report"]) == 0
    (target,) = fill_tables(load_recipe(recipe))
    first = capsys.readouterr()
    assert "Training" in first.err  # verbose=True by default: the progress bar
    assert not run_dir(dict(target.key)).exists()
    assert main(["results", str(recipe), "--tensorboard"]) == 0
    assert "--set trainer.tensorboard=true; it is not part of the key" in capsys.readouterr().out  # the hint ...

    assert main(["clear", str(recipe), "--yes"]) == 0
    capsys.readouterr()
    assert main(["run", str(recipe), "--no-report", "--set", "trainer.tensorboard=true",
                 "--set", "trainer.verbose=false"]) == 0
    second = capsys.readouterr()
    assert "Training" not in second.err and "it/s" not in second.err  # no progress bars this time
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir(dict(target.key)).iterdir())
    output = (clean_db.TrainedModel & target.key).fetch1("output")
    assert output["run_settings"]["trainer"]["tensorboard"] is True
    assert main(["results", str(recipe), "--tensorboard"]) == 0
    assert "1 run(s) linked" in capsys.readouterr().out  # ... which now leads somewhere
