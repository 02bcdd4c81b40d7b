"""Hyperparameter search (issue 17): the space parser, the study in the results database, trials as ordinary
experiments (reuse, status/results), pruning, two workers, kills and restarts."""
import json
import os
import platform
import signal
import subprocess
import sys
import textwrap

import pytest

from nntransfer import Description, Experiment, TransferExperiment, choice, integer, loguniform, run, search, uniform
from nntransfer.configs import ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
from slow_recipe import logged_epochs, write_slow_recipe

optuna = pytest.importorskip("optuna")

CLI = [sys.executable, "-m", "nntransfer.cli"]


def digits(seed=3, **trainer):
    options = dict(max_iter=2, verbose=False, num_threads=1, optimizer_options={"lr": 0.01})
    options.update(trainer)
    return Experiment(ImageDatasetConfig(dataset_cls="digits", batch_size=256, valid_size=0.2),
                      ModelConfig(type="mlp"), TrainerConfig(**options), seed)


def wait_for(condition, timeout=180, what="condition"):
    import time

    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- the space -----------------------------------------------------------------------------------------
def test_a_yaml_space_reads_as_the_python_one(tmp_path):
    from nntransfer.orchestration.search import read_space

    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent("""
        1.trainer.optimizer_options.lr: {loguniform: [1.0e-4, 1.0e-1]}
        1.trainer.max_iter: {int: {low: 2, high: 8, step: 2}}
        1.dataset.valid_size: {uniform: [0.1, 0.3]}
        1.trainer.freeze: {choice: [[], ["core.*"]]}
    """))
    assert read_space(path) == {"1.trainer.optimizer_options.lr": loguniform(1e-4, 1e-1),
                                "1.trainer.max_iter": integer(2, 8, step=2),
                                "1.dataset.valid_size": uniform(0.1, 0.3),
                                "1.trainer.freeze": choice([[], ["core.*"]])}


@pytest.mark.parametrize("space, message", [
    ({"trainer.lr": loguniform(1e-4, 1e-1)}, "trainer.lr"),                       # not a field: names the path
    ({"trainer.optimizer_options.lr": {"lognormal": [0, 1]}}, "unknown distribution 'lognormal'"),
    ({"trainer.optimizer_options.lr": {"loguniform": [0.1, 0.01]}}, "low must be below high"),
    ({"trainer.optimizer_options.lr": {"uniform": [0.5, 0.5]}}, "low must be below high"),
    ({"trainer.optimizer_options.lr": {"loguniform": [0, 0.1]}}, "low must be positive"),
    ({"trainer.max_iter": {"int": [1.5, 4]}}, "must be an integer"),
    ({"trainer.freeze": {"choice": []}}, "at least one value"),
    ({"trainer.max_iter": 3}, "fixed values belong in the recipe"),
    ({"trainer.max_iter": {"int": [0, 3]}}, "max_iter must be at least 1"),        # a value the config refuses
    ({"trainer.verbose": {"choice": [True, False]}}, "does not change the key"),   # a run field
    ({"2.trainer.max_iter": {"int": [1, 3]}}, "has no step 2"),
])
def test_the_space_parser_says_what_is_wrong_in_one_config_error(space, message):
    from nntransfer.orchestration.search import make_spec

    with pytest.raises(ConfigError, match="search space") as err:
        make_spec(digits(), space, n_trials=2)
    assert message in str(err.value)


def test_a_search_never_selects_on_the_test_set():
    from nntransfer.orchestration.search import make_spec

    with pytest.raises(ConfigError, match="never selects on the test set"):
        make_spec(digits(), {"trainer.max_iter": integer(1, 3)}, n_trials=2, metric="test/img_classification/accuracy")


def test_directions_follow_the_metric():
    from nntransfer.orchestration.search import default_direction

    assert default_direction(digits(), "score") == "maximize"  # stop_metric accuracy
    assert default_direction(digits(stop_metric="loss"), "score") == "minimize"
    assert default_direction(digits(), "validation/img_classification/loss") == "minimize"


def test_without_optuna_search_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    from nntransfer.cli import main

    recipe = tmp_path / "r.py"
    recipe.write_text("experiments = {}\n")
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    assert main(["search", str(recipe), "--space", "space.yaml"]) == 2
    assert "pip install 'nntransfer[search]'" in capsys.readouterr().err


# -- the study in the database ---------------------------------------------------------------------------
@pytest.mark.both_backends
def test_the_study_lives_in_the_configured_database(clean_db):
    from nntransfer.store import db
    from nntransfer.store.studies import has_studies, open_storage, storage_url, study_schema

    study = optuna.create_study(storage=open_storage(), study_name="where")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    conn = db.connection()
    schemas = {row[0] for row in conn.query("SELECT table_schema FROM information_schema.tables WHERE table_name IN "
                                            "('studies', 'trials')").fetchall()}
    assert schemas == {study_schema()} == {"nntransfer_test_optuna"}  # beside DataJoint's schema, not in it
    assert has_studies()
    backend = conn.adapter.backend
    assert storage_url().startswith("postgresql+psycopg2://" if backend == "postgresql" else "mysql+pymysql://")
    password = os.environ.get("DJ_PASS")
    if password:
        assert password not in storage_url()  # the password goes to the driver, never into the URL
    assert len(optuna.load_study(study_name="where", storage=open_storage()).trials) == 2


# -- trials are ordinary experiments ------------------------------------------------------------------------
@pytest.mark.both_backends
def test_a_trial_reuses_the_result_a_plain_run_trained(clean_db):
    from nntransfer.analysis import results_frame
    from nntransfer.analysis.search import search_frame
    from nntransfer.orchestration.recipes import apply_overrides, parse_value
    from nntransfer.orchestration.search import set_overrides

    base = digits()
    trained = digits(optimizer_options={"lr": 0.02})
    run({Description("plain", 3): trained}, quiet=True)
    stored = (clean_db.TrainedModel & trained.get_key()).fetch1("score")
    before = len(clean_db.TrainedModel())
    status = search({Description("tune", 3): base}, {"trainer.optimizer_options.lr": choice([0.02])}, n_trials=1,
                    sampler="random", study_name="reuse", quiet=True)
    assert status.run.trained == 0 and len(clean_db.TrainedModel()) == before  # nothing trained
    assert status.counts["complete"] == 1 and status.best.value == stored
    trial = status.best
    assert trial.user_attrs["trained"] == 0 and trial.user_attrs["key"] == trained.get_key()
    # its history reached Optuna from the stored result (the pruners and plots see reused trials too)
    assert sorted(trial.intermediate) == [1, 2]
    frame = search_frame("reuse")
    assert list(frame["state"]) == ["complete"] and frame["trained"].tolist() == [0]
    assert frame["test/img_classification/accuracy"].notna().all()
    # results of the searched experiments list the trial like any run
    rows = results_frame({Description("tune", 3): base})
    assert set(rows["name"]) == {"tune", "tune trial 0"}
    assert rows.set_index("name").loc["tune trial 0", "score"] == stored
    # the printed --set overrides give exactly the trial's experiment (same key)
    sets = dict(o.split("=", 1) for o in set_overrides(trial.values))
    again = apply_overrides({Description("tune", 3): base}, {p: parse_value(v) for p, v in sets.items()})
    assert next(iter(again.values())).get_key() == trained.get_key()


class PruneAtOnce(optuna.pruners.BasePruner):
    """Prunes every trial at its first report (epoch 1)."""

    def prune(self, study, trial):
        return trial.last_step is not None and trial.last_step >= 1


def test_pruned_trials_end_pruned_with_their_history_and_a_released_job(clean_db, tmp_path):
    from nntransfer.analysis import write_report
    from nntransfer.analysis.frames import entries
    from nntransfer.orchestration.fill import fill_tables
    from nntransfer.orchestration.plan import states

    experiments = {Description("prune", 3): digits(max_iter=3)}
    status = search(experiments, {"trainer.optimizer_options.lr": loguniform(1e-3, 1e-1)}, n_trials=2,
                    sampler="random", pruner=PruneAtOnce(), study_name="prune", quiet=True)
    assert status.counts["pruned"] == 2 and status.counts["failed"] == 0 and status.counts["complete"] == 0
    for trial in status.trials:
        assert trial.state == "pruned" and list(trial.intermediate) == [1]  # its partial history is kept
        targets = fill_tables({trial.description: trial.experiment})
        assert states(targets)[targets[0]]["state"] == "pending"  # released, not an error, no half-trained result
    assert len(clean_db.TrainedModel.jobs.errors) == 0 and len(clean_db.TrainedModel()) == 0
    assert len(clean_db.Checkpoint()) == 2  # a later run of that configuration resumes there
    found = {e.name: e.state for e in entries(experiments)}
    assert found == {"prune": "pending", "prune trial 0": "pruned", "prune trial 1": "pruned"}
    index = write_report(experiments, tmp_path / "report")
    page = index.read_text()
    assert "Search: prune" in page and "2 pruned" in page
    assert (tmp_path / "report" / "search_prune_intermediate_values.png").exists()


def test_a_transfer_search_trains_the_shared_step_once(clean_db):
    chain = TransferExperiment([digits(max_iter=1), digits(max_iter=1)])
    status = search({Description("chain", 3): chain}, {"1.trainer.optimizer_options.lr": loguniform(1e-3, 1e-1)},
                    n_trials=2, sampler="random", pruner="none", study_name="chain", quiet=True)
    assert status.counts["complete"] == 2
    assert status.run.trained == 3  # step 0 once, step 1 for each trial
    steps = clean_db.TransferredTrainedModel().to_arrays("transfer_step")
    assert sorted(steps.tolist()) == [0, 1, 1]


# -- workers, kills and restarts --------------------------------------------------------------------------------
@pytest.mark.slow
def test_six_random_trials_with_two_workers_and_a_rerun_that_trains_nothing(clean_db):
    experiments = {Description("six", 3): digits()}
    space = {"trainer.optimizer_options.lr": loguniform(1e-3, 1e-1)}
    status = search(experiments, space, n_trials=6, sampler="random", pruner="none", workers=2, study_name="six",
                    quiet=True)
    study = optuna.load_study(study_name="six", storage=_storage())
    assert len(study.trials) == 6 and all(t.state.name == "COMPLETE" for t in study.trials)
    keys = [json.dumps(t.user_attrs["key"], sort_keys=True) for t in study.trials]
    assert len(set(keys)) == 6  # six distinct configurations ...
    assert len(clean_db.TrainedModel()) == 6  # ... each an ordinary TrainedModel row
    again = search(experiments, space, n_trials=6, sampler="random", pruner="none", workers=2, study_name="six",
                   quiet=True)
    assert again.run.trained == 0 and len(optuna.load_study(study_name="six", storage=_storage()).trials) == 6
    assert status.best.value == again.best.value


@pytest.mark.slow
def test_two_workers_on_one_configuration_train_it_once_and_the_second_waits(clean_db, tmp_path, monkeypatch):
    log = tmp_path / "epochs.log"
    monkeypatch.setenv("EPOCH_LOG", str(log))
    recipe = _slow_recipe(tmp_path, epochs=3, sleep=0.5)
    from nntransfer.orchestration.recipes import load_recipe

    status = search(load_recipe(recipe), {"trainer.optimizer_options.lr": choice([0.01])}, n_trials=2,
                    sampler="random", pruner="none", workers=2, study_name="same", imports=[str(recipe)], quiet=True)
    assert status.counts["complete"] == 2 and status.counts["failed"] == 0
    assert len({t.value for t in status.trials}) == 1
    assert logged_epochs(log) == [1, 2, 3]  # trained once: the other trial waited for its result
    assert len(clean_db.TrainedModel.jobs.errors) == 0


def _slow_recipe(tmp_path, epochs, sleep):
    return write_slow_recipe(tmp_path, epochs=epochs, sleep=sleep, dataset={"batch_size": 256, "valid_size": 0.2},
                             trainer={"num_threads": 1})


def _storage():
    from nntransfer.store.studies import open_storage

    return open_storage()


def _search_command(recipe, space, trials):
    return CLI + ["search", str(recipe), "--space", str(space), "--trials", str(trials), "--sampler", "random",
                  "--pruner", "none", "--study", "killed"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_search_stopped_mid_trial_continues_where_it_was(clean_db, tmp_path, how):
    recipe = _slow_recipe(tmp_path, epochs=6, sleep=1.0)
    space = tmp_path / "space.yaml"
    space.write_text("trainer.optimizer_options.lr: {loguniform: [1.0e-3, 1.0e-1]}\n")
    log = tmp_path / "epochs.log"
    env = {**os.environ, "EPOCH_LOG": str(log)}
    first = subprocess.Popen(_search_command(recipe, space, 2), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(clean_db.Checkpoint()) > 0, what="the first trial's first checkpoint")
        first.send_signal(getattr(signal, how))
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    if how == "SIGTERM":  # as for run: checkpoint, release, exit 0
        assert first.returncode == 0, err
        assert "stopped on request" in out
    stopped_after = int(max(clean_db.Checkpoint().to_arrays("epoch")))
    assert 1 <= stopped_after < 6
    log.write_text("")
    again = subprocess.run(_search_command(recipe, space, 2), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    study = optuna.load_study(study_name="killed", storage=_storage())
    from nntransfer.orchestration.search import tally

    counts = tally(study.trials)
    assert counts["complete"] == 2 and counts["retried"] == 1 and counts["failed"] == 0  # none counted twice
    interrupted = next(t for t in study.trials if t.state.name == "FAIL")
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == interrupted.number)
    assert retry.state.name == "COMPLETE" and retry.params == interrupted.params  # the same configuration ...
    resumed = logged_epochs(log)
    # ... resumed from its checkpoint (the rest of the epoch, if a SIGTERM came between its batches)
    first_epoch = stopped_after if f"in epoch {stopped_after} after batch" in err else stopped_after + 1
    assert resumed[:7 - first_epoch] == list(range(first_epoch, 7))
    assert len(clean_db.TrainedModel()) == 2 and len(clean_db.TrainedModel.jobs.errors) == 0
    if how == "SIGKILL":  # found dead at once on this machine, by its process id (not after the heartbeat timeout)
        assert f"held by process {interrupted.user_attrs['worker']['pid']} on this machine" in again.stderr
        assert interrupted.user_attrs["worker"]["host"] == platform.node()


def test_samplers_and_pruners_are_built_from_their_names():
    from nntransfer.orchestration.search import _pruner, _sampler, make_spec

    space = {"trainer.max_iter": integer(4, 8, step=2), "trainer.optimizer": choice(["Adam", "SGD"])}
    grid = make_spec(digits(max_iter=8), space, sampler="grid", pruner="hyperband", n_trials=50)
    assert grid.n_trials == 6  # every point of the grid, not more
    assert isinstance(_sampler(grid), optuna.samplers.GridSampler)
    assert isinstance(_pruner(grid), optuna.pruners.HyperbandPruner)
    tpe = make_spec(digits(max_iter=20), {"trainer.optimizer_options.lr": loguniform(1e-4, 1e-1)}, n_trials=20)
    assert isinstance(_sampler(tpe), optuna.samplers.TPESampler)
    median = _pruner(tpe)
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_warmup_steps == 5  # a quarter of 20 epochs
    with pytest.raises(ConfigError, match="finite set of values"):
        make_spec(digits(), {"trainer.optimizer_options.lr": loguniform(1e-4, 1e-1)}, sampler="grid")


def test_slurm_search_workers_are_requeued_with_their_task():
    import functools
    import pickle

    import submitit

    from nntransfer.orchestration.search import make_spec, search_worker
    from nntransfer.orchestration.slurm import RemoteWorker
    from nntransfer.orchestration.workers import WorkerSettings

    spec = make_spec({Description("tune", 3): digits()}, {"trainer.optimizer_options.lr": loguniform(1e-3, 1e-1)},
                     n_trials=4)
    worker = RemoteWorker([], WorkerSettings(), task=functools.partial(search_worker, spec))
    again = worker.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission) and again.function.task.args == (spec,)
    assert pickle.loads(pickle.dumps(spec)) == spec  # every worker process gets it


def test_a_trial_whose_worker_elsewhere_stopped_beating_is_retried(clean_db, monkeypatch):
    import time

    from nntransfer.orchestration import search as searching
    from nntransfer.store import jobs

    monkeypatch.setattr(jobs, "HEARTBEAT_INTERVAL", 1.0)
    monkeypatch.setattr(jobs, "HEARTBEAT_TIMEOUT", 2.0)
    experiments = {Description("elsewhere", 3): digits()}
    space = {"trainer.optimizer_options.lr": loguniform(1e-3, 1e-1)}
    spec = searching.make_spec(experiments, space, n_trials=1, sampler="random", pruner="none", study_name="beat")
    study = searching.open_study(spec)
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna's note that ask() beats nothing by itself
        lost = study.ask()  # a worker on another machine took a trial, beat once, and vanished
    lost.suggest_float("trainer.optimizer_options.lr", 1e-3, 1e-1, log=True)
    lost.set_user_attr("worker", {"host": "another-node", "pid": 1, "namespace": "x", "proc_start": 0.0})
    study._storage.record_heartbeat(lost._trial_id)
    time.sleep(3)
    status = search(experiments, space, n_trials=1, sampler="random", pruner="none", study_name="beat", quiet=True)
    assert status.counts["complete"] == 1 and status.counts["retried"] == 1 and status.counts["counted"] == 1
    assert status.best.values == spec.decode(lost.params)  # its configuration, run by this worker
