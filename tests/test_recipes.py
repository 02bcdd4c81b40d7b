"""Recipes, run(), workers, job errors, CLI overrides and grid files (real database, real processes)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nntransfer import Description, Experiment, TransferExperiment, run
from nntransfer.orchestration.recipes import apply_overrides, load_recipe
from nntransfer.orchestration.fill import fill_tables
from nntransfer.orchestration.plan import states
from toy_pipeline import ToyData, ToyModel, ToyTrainer, toy


def trained_uids(log):
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.both_backends
def test_three_steps_populate_in_order_and_hand_over_parameters(clean_db):
    tex = TransferExperiment([toy(max_iter=1), toy(max_iter=2), toy(max_iter=3)])
    rows = run({Description("chain", 1): tex}, quiet=True)
    assert [r["state"] for r in rows] == ["done", "done", "done"]
    TT = clean_db.TransferredTrainedModel
    times = [(TT & tex.get_restrictions(i)).fetch1("transferredtrainedmodel_ts") for i in range(3)]
    assert times == sorted(times)  # level 0, then 1, then 2
    for level in (1, 2):
        trained_before = (TT.ModelStorage & tex.get_restrictions(level - 1)).fetch1("model_state")
        initial = (TT & tex.get_restrictions(level)).fetch1("output")["initial_state"]
        for name, value in trained_before.items():
            np.testing.assert_array_equal(initial[name], value.numpy())
    # step 0 starts from its own fresh initialisation, not from anything trained
    assert not np.array_equal((TT & tex.get_restrictions(0)).fetch1("output")["initial_state"]["0.weight"],
                              (TT.ModelStorage & tex.get_restrictions(0)).fetch1("model_state")["0.weight"].numpy())


def test_step_n_plus_1_is_not_populatable_before_step_n(clean_db):
    tex = TransferExperiment([toy(max_iter=1), toy(max_iter=2)])
    fill_tables({Description("c", 1): tex})
    TT = clean_db.TransferredTrainedModel
    source = TT.key_source & [tex.get_restrictions(0), tex.get_restrictions(1)]
    assert [k["transfer_step"] for k in source.keys()] == [0]
    TT.populate(tex.get_restrictions(0))
    assert sorted(k["transfer_step"] for k in (TT.key_source & [tex.get_restrictions(1)]).keys()) == [1]


def test_shared_first_step_is_trained_once(clean_db, train_log):
    shared = toy(max_iter=1)
    a = TransferExperiment([shared, toy(max_iter=2)])
    b = TransferExperiment([shared, toy(max_iter=2, lr=0.05)])
    assert a.get_restrictions(0) == b.get_restrictions(0)
    assert a.get_restrictions(1) != b.get_restrictions(1)
    run({Description("a", 1): a, Description("b", 1): b}, quiet=True)
    uids = trained_uids(train_log)
    assert len(uids) == 3 and len(set(uids)) == 3  # step 0 once, two different step-1 entries
    assert len(clean_db.TransferredTrainedModel()) == 3


@pytest.mark.both_backends
def test_two_local_workers_train_six_experiments_exactly_once(clean_db, train_log):
    experiments = {Description(f"e{i}", i): toy(seed=i, sleep=0.2) for i in range(6)}
    rows = run(experiments, workers=2, quiet=True)
    assert [r["state"] for r in rows] == ["done"] * 6
    lines = train_log.read_text().splitlines()
    uids = [line.split()[0] for line in lines]
    assert len(uids) == 6 and len(set(uids)) == 6
    assert len({line.split()[1] for line in lines}) == 2  # both worker processes trained something
    assert len(clean_db.TrainedModel()) == 6
    assert len(clean_db.TrainedModel.jobs.errors) == 0


@pytest.mark.both_backends
def test_failing_job_is_recorded_and_retrained_after_clear_errors(clean_db, tmp_path, cli):
    marker = tmp_path / "fail"
    marker.write_text("x")
    recipe = tmp_path / "recipe.py"
    recipe.write_text(textwrap.dedent(f"""
        from nntransfer import Description, TransferExperiment, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        transfer_experiments = {{
            Description("fails", 1): TransferExperiment([
                Experiment(ToyData(), ToyModel(), ToyTrainer(fail_if_exists={str(marker)!r}), 1),
                Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1),
            ])
        }}
    """))
    first = cli("run", recipe)
    assert first.returncode == 1, first.stderr
    assert "error" in first.stdout and "blocked" in first.stdout
    TT = clean_db.TransferredTrainedModel
    job = TT.jobs.errors.to_dicts()[0]
    assert "toy failure requested" in job["error_message"]
    assert "Traceback" in job["error_stack"] and "toy_trainer" in job["error_stack"]
    status = cli("status", recipe)
    assert "error" in status.stdout and "blocked" in status.stdout
    # rerunning without clearing does not retry the failed job
    again = cli("run", recipe)
    assert again.returncode == 1 and len(TT()) == 0
    marker.unlink()
    cleared = cli("clear-errors", recipe)
    assert "cleared 1 error" in cleared.stdout
    final = cli("run", recipe)
    assert final.returncode == 0, final.stdout + final.stderr
    assert len(TT()) == 2


def test_set_and_grid_overrides_produce_the_expected_keys(tmp_path):
    recipe = tmp_path / "r.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        experiments = {Description("base", 1): Experiment(ToyData(), ToyModel(), ToyTrainer(), 1)}
    """))
    from nntransfer.cli import build_parser
    from nntransfer.cli.common import experiments as _experiments

    args = build_parser().parse_args(["status", str(recipe), "--set", "trainer.max_iter=1",
                                      "--grid", "trainer.optimizer_options.lr=0.1,0.01"])
    got = _experiments(args)
    expected = {
        Description(f"base[trainer.optimizer_options.lr={lr}]", 1):
            Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1, optimizer_options={"lr": lr}), 1)
        for lr in (0.1, 0.01)
    }
    assert {d: e.get_key() for d, e in got.items()} == {d: e.get_key() for d, e in expected.items()}
    with pytest.raises(Exception, match="did you mean 'max_iter'"):
        apply_overrides(load_recipe(recipe), {"trainer.max_itr": 1})


def test_yaml_grid_file_yields_the_full_cross_product(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent("""
        name: sweep
        dataset: {class: toy_pipeline.ToyData, n: 32}
        model: {class: toy_pipeline.ToyModel}
        trainer:
          class: toy_pipeline.ToyTrainer
          max_iter: 1
          lr_: [0.1, 0.01, 0.001]
          loss_weights: [1.0, 10.0]
        seed_: [1, 2]
    """))
    experiments = load_recipe(path)
    assert len(experiments) == 6
    combos = {(e.trainer.lr, e.seed) for e in experiments.values()}
    assert combos == {(lr, s) for lr in (0.1, 0.01, 0.001) for s in (1, 2)}
    assert {d.seed for d in experiments} == {1, 2}
    assert len({tuple(sorted(e.get_key().items())) for e in experiments.values()}) == 6
    assert all(e.dataset.n == 32 and e.trainer.loss_weights == [1.0, 10.0] for e in experiments.values())


def test_overrides_file_with_grid_keys(tmp_path):
    from nntransfer.orchestration.recipes import overrides_from_file

    path = tmp_path / "o.yaml"
    path.write_text("trainer:\n  max_iter: 2\n  optimizer_options:\n    lr_: [0.1, 0.2]\nseed_: [3, 4]\n")
    sets, grid = overrides_from_file(path)
    assert sets == {"trainer.max_iter": 2}
    assert grid == {"trainer.optimizer_options.lr": [0.1, 0.2], "seed": [3, 4]}
    out = apply_overrides({Description("x", 1): toy()}, sets, grid)
    assert len(out) == 4 and {d.seed for d in out} == {3, 4}


@pytest.mark.slow  # submitit's local executor starts a process per job
def test_submitit_local_executor_runs_a_worker_to_completion(clean_db, tmp_path):
    from nntransfer.orchestration.slurm import submit_workers
    from nntransfer.orchestration.workers import WorkerSettings

    targets = fill_tables({Description("remote", 5): toy(seed=5)})
    jobs = submit_workers(targets, WorkerSettings(), jobs=1, folder=str(tmp_path / "jobs"), cluster="local", cpus=1)
    result = jobs[0].result()
    assert result["trained"] == 1 and result["errors"] == []
    assert states(targets)[targets[0]]["state"] == "done"


@pytest.mark.slow  # a worker process killed with SIGKILL
@pytest.mark.both_backends
def test_job_of_a_killed_worker_is_requeued_and_trained(clean_db, tmp_path, train_log, cli):
    import signal
    import time

    recipe = tmp_path / "slow.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        experiments = {Description("slow", 9): Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=60, sleep=1.0), 9)}
    """))
    worker = subprocess.Popen([sys.executable, "-m", "nntransfer.cli", "worker", str(recipe)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (train_log.exists() and train_log.read_text()):
            time.sleep(0.2)
        assert train_log.exists(), "the worker never started training"
        status = cli("status", recipe)
        assert "reserved" in status.stdout and f":{worker.pid}" in status.stdout
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    targets = fill_tables(load_recipe(recipe))
    assert states(targets)[targets[0]]["state"] == "reserved"  # still looks taken ...
    from nntransfer.orchestration.workers import reclaim_dead_reservations

    deadline = time.time() + 30  # ... but its connection is gone (the server notices within moments) ...
    while not (reclaimed := reclaim_dead_reservations(targets)) and time.time() < deadline:
        time.sleep(0.2)
    assert reclaimed == 1  # ... so it is re-queued
    assert states(targets)[targets[0]]["state"] == "pending"


def test_every_command_has_help(cli):
    from nntransfer.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for args in [["--help"]] + [[command, "--help"] for command in commands]:
        out = cli(*args)
        assert out.returncode == 0 and "usage: nntransfer" in out.stdout, args
    assert {"run", "worker", "status", "results", "clear-errors", "db", "errors", "clear-checkpoints"} <= set(commands)


def test_workers_see_main_loop_modules_defined_in_the_recipe(clean_db, tmp_path, cli):
    recipe = tmp_path / "custom_module.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
        from nntransfer.trainer import MainLoopModule, register_module

        @register_module("CountBatches")
        class CountBatches(MainLoopModule):
            def post_forward(self, outputs, loss, targets, **shared):
                self.log("img_classification", "counted", 1.0)
                return outputs, loss, targets

        experiments = {
            Description(f"custom{seed}", seed): Experiment(
                ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="mlp"),
                TrainerConfig(max_iter=1, verbose=False, main_loop_modules=["CountBatches"]), seed)
            for seed in (1, 2, 3)
        }
    """))
    out = cli("run", recipe, "--workers", 2, "--no-report")  # the worker process imports the recipe too
    assert out.returncode == 0, out.stdout + out.stderr
    outputs = clean_db.TrainedModel().to_arrays("output")
    assert len(outputs) == 3
    assert all(o["tracker"]["log"]["Training"]["img_classification"]["counted"] for o in outputs)


def test_a_yaml_recipe_is_not_imported_by_workers_and_run_imports_come_before_the_name_checks(clean_db, tmp_path):
    from nntransfer.configs import ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
    from nntransfer.orchestration.workers import WorkerSettings, import_user_code

    yaml_recipe = tmp_path / "grid.yaml"
    yaml_recipe.write_text("experiments: {}\n")
    # nothing to register in YAML
    assert WorkerSettings(recipe=str(yaml_recipe), imports=["mylab.models"]).user_code == ["mylab.models"]
    assert WorkerSettings(recipe=str(tmp_path / "r.py")).user_code == [str(tmp_path / "r.py")]
    with pytest.raises(ConfigError, match="only Python files"):
        import_user_code([str(yaml_recipe)])

    models = tmp_path / "lab_models.py"  # registers the model type the experiment names
    models.write_text(textwrap.dedent("""
        from nntransfer.models import register_model
        from nntransfer.models.mlp import mlp

        register_model("lab_mlp")(mlp)
    """))
    exp = Experiment(ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="lab_mlp"),
                     TrainerConfig(max_iter=1, verbose=False), 5)
    rows = run({Description("lab", 5): exp}, imports=[str(models)], quiet=True)
    assert [r["state"] for r in rows] == ["done"]


def test_worker_counts_below_one_are_refused_by_the_command_line(tmp_path, cli):
    out = cli("run", tmp_path / "r.py", "--workers", 0)
    assert out.returncode == 2 and "--workers: must be 1 or more, got 0" in out.stderr
