"""Experiments and their table entries on a real (embedded) database."""
import os
import subprocess
import sys
import textwrap

import pytest

from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ConfigError, DatasetConfig, ImageDatasetConfig, ModelConfig, TrainerConfig

# A callable that certainly resolves, so these tests do not depend on the real builders.
FN = "nntransfer.core.config.resolve_import_path"


class ToyDataset(DatasetConfig):
    fn = FN
    name: str = "toy"


class ToyModel(ModelConfig):
    fn = FN


class ToyTrainer(TrainerConfig):
    fn = FN


def experiment(seed=1, **trainer):
    return Experiment(ToyDataset(), ToyModel(), ToyTrainer(**trainer), seed)


def counts(tables):
    return {name: len(tables.table(name)()) for name in ("Seed", "Dataset", "Model", "Trainer")}


@pytest.mark.both_backends
def test_add_to_table_twice_gives_one_row_per_table(clean_db):
    exp = experiment()
    assert exp.add_to_table() == exp.add_to_table() == exp.get_key()
    assert counts(clean_db) == {"Seed": 1, "Dataset": 1, "Model": 1, "Trainer": 1}
    row = (clean_db.Trainer & exp.trainer.get_key()).fetch1()
    assert row["trainer_config"]["max_iter"] == exp.trainer.max_iter
    assert row["trainer_fabrikant"] in clean_db.Fabrikant().keys()[0].values()  # registered automatically


def test_comment_is_stored_not_hashed(clean_db):
    key = ToyModel(comment="my note").add_to_table()
    assert key == ToyModel().get_key()
    assert (clean_db.Model & key).fetch1("model_comment") == "my note"


@pytest.mark.slow  # two interpreters racing
@pytest.mark.both_backends
def test_two_processes_adding_the_same_experiment_at_once(clean_db):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_tables import experiment
        exp = experiment(seed=7)
        start = float(sys.argv[1])
        while time.time() < start:
            time.sleep(0.001)
        exp.add_to_table()
        print("ok")
        """
    )
    import time

    start = str(time.time() + 6)
    procs = [subprocess.Popen([sys.executable, "-c", script, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    assert counts(clean_db) == {"Seed": 1, "Dataset": 1, "Model": 1, "Trainer": 1}


def test_unresolvable_fn_inserts_nothing(clean_db):
    bad = Experiment(ToyDataset(), ToyModel(fn="nntransfer.no_such_module.build"), ToyTrainer(), 3)
    with pytest.raises(ConfigError, match="no_such_module"):
        bad.add_to_table()
    assert counts(clean_db) == {"Seed": 0, "Dataset": 0, "Model": 0, "Trainer": 0}


@pytest.mark.both_backends
def test_failure_midway_rolls_back_everything(clean_db, monkeypatch):
    from nntransfer.orchestration import fill

    original = fill.insert_config

    def fail_on_trainer(cfg):
        if cfg.config_name == "trainer":
            raise RuntimeError("disk full")
        return original(cfg)

    # where add_to_table looks it up (patching nntransfer.store's name passed only while fill was not imported yet)
    monkeypatch.setattr(fill, "insert_config", fail_on_trainer)
    with pytest.raises(RuntimeError, match="disk full"):
        experiment(seed=5).add_to_table()
    monkeypatch.undo()
    assert counts(clean_db) == {"Seed": 0, "Dataset": 0, "Model": 0, "Trainer": 0}


def test_bad_fields_fail_before_the_database():
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        ToyDataset(batchsize=3)
    with pytest.raises(ConfigError, match="seed must be an int"):
        Experiment(ToyDataset(), ToyModel(), ToyTrainer(), seed="1")
    with pytest.raises(ConfigError, match="model must be a ModelConfig"):
        Experiment(ToyDataset(), ToyTrainer(), ToyTrainer(), seed=1)


def test_experiment_key_and_json_round_trip():
    exp = Experiment(ImageDatasetConfig(filter_classes=[5, 6]), ModelConfig(type="mlp"), TrainerConfig(max_iter=2), 4)
    key = exp.get_key()
    assert set(key) == {"dataset_fn", "dataset_hash", "model_fn", "model_hash", "trainer_fn", "trainer_hash", "seed"}
    back = Experiment.from_json(exp.to_json())
    assert back == exp and back.get_key() == key
    assert Experiment.from_dict(exp.to_dict()).get_key() == key


def test_grid_and_replace_by_path():
    base = experiment()
    grid = Experiment.grid(base, {"trainer.optimizer_options.lr": [0.1, 0.01], "seed": [1, 2, 3]})
    assert len(grid) == 6 and len({tuple(sorted(e.get_key().items())) for e in grid}) == 6
    assert {e.trainer.optimizer_options["lr"] for e in grid} == {0.1, 0.01}
    with pytest.raises(ConfigError, match="did you mean 'max_iter'"):
        base.replace(**{"trainer.max_iterr": 3})


def transfer(lr0=0.001, lr1=0.001, lr2=0.001):
    return TransferExperiment([experiment(optimizer_options={"lr": lr}) for lr in (lr0, lr1, lr2)])


def test_collapsed_history_equal_for_equal_histories_different_otherwise():
    a, b = transfer(), transfer()
    for level in range(3):
        assert a.get_restrictions(level) == b.get_restrictions(level)
        assert a.get_restrictions(level)["transfer_step"] == level
    c = transfer(lr0=0.1)  # only step 0 differs
    assert c.get_restrictions(0)["collapsed_history"] == a.get_restrictions(0)["collapsed_history"]
    assert c.get_restrictions(1)["collapsed_history"] != a.get_restrictions(1)["collapsed_history"]
    assert c.get_restrictions(2)["collapsed_history"] != a.get_restrictions(2)["collapsed_history"]
    d = transfer(lr1=0.1)  # step 1 differs: step 1's own key changes, step 2's history changes
    assert d.get_restrictions(1)["collapsed_history"] == a.get_restrictions(1)["collapsed_history"]
    assert d.get_restrictions(2)["collapsed_history"] != a.get_restrictions(2)["collapsed_history"]
    with pytest.raises(IndexError):
        a.get_restrictions(3)


def test_transfer_experiment_json_round_trip_and_table_entries(clean_db):
    tex = transfer(lr1=0.5)
    back = TransferExperiment.from_json(tex.to_json())
    assert back == tex and len(back) == 3
    assert [back.get_restrictions(i) for i in range(3)] == [tex.get_restrictions(i) for i in range(3)]
    tex.add_to_table()
    assert counts(clean_db) == {"Seed": 1, "Dataset": 1, "Model": 1, "Trainer": 2}
    assert Description("baseline", 1) == ("baseline", 1)


def run_cli(home, *args):
    env = dict(os.environ, NNTRANSFER_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "nntransfer.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def run_py(home, code):
    env = dict(os.environ, NNTRANSFER_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow  # a fresh embedded server, stopped and started again
def test_embedded_database_lifecycle(tmp_path):
    import json

    home = tmp_path / "home"
    insert = (
        "from nntransfer import tables, db\n"
        "tables.Seed().insert1({'seed': 11}, skip_duplicates=True)\n"
        "print(db.status()['pid'])\n"
    )
    try:
        pid1 = run_py(home, insert)  # first use starts it
        status = json.loads(run_cli(home, "db", "status").stdout)
        assert status["running"] and str(status["pid"]) == pid1
        pid2 = run_py(home, insert)  # a second process reuses the same server
        assert pid2 == pid1
        assert run_cli(home, "db", "stop").stdout.strip() == "stopped"
        assert json.loads(run_cli(home, "db", "status").stdout)["running"] is False
        # data survives a restart
        seeds = run_py(home, "from nntransfer import tables\nprint(tables.Seed().keys())")
        assert "11" in seeds
    finally:
        run_cli(home, "db", "stop")
        data = run_py(home, "from nntransfer import db\nprint(db.data_dir())")
        if not data.startswith(str(home)):  # as root with a private home: the data lives elsewhere
            import shutil

            shutil.rmtree(os.path.dirname(data), ignore_errors=True)


def test_unreachable_server_error_names_host_port_user_not_password(tmp_path):
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, NNTRANSFER_HOME=str(tmp_path), DJ_HOST="127.0.0.1", DJ_PORT=str(port), DJ_USER="alice",
               DJ_PASS="s3cret-pw", DJ_BACKEND="postgresql")
    out = subprocess.run([sys.executable, "-c", "from nntransfer import tables; tables.Seed()"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "DatabaseUnavailable" in out.stderr
    assert f"127.0.0.1:{port}" in out.stderr and "'alice'" in out.stderr
    assert "s3cret-pw" not in out.stderr
