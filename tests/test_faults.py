"""Faults at the edges (issue 19): each test opens the window of one fault and checks what happens now.

A lost COMMIT, checkpoint files of a failed insert, an interrupted first ``initdb``, ``db stop`` and look-alike
processes, the trust allowlist, a full disk, bad seeds and paths, ``clear`` of shared rows, a dying fork server,
stale reservations, a killed postmaster, and what gc reports. docs/reliability.md lists them.
"""
import errno
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from nntransfer import Experiment, run
from nntransfer.cli import main
from nntransfer.configs import ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.trainer import MainLoopModule, register_module
from slow_recipe import logged_epochs, write_slow_recipe
from test_cluster import CLI, dead_pid, log_lines, reserved_job, set_holder, wait_for
from toy_pipeline import toy
from test_server import _stop


def digits(seed, **trainer):
    options = dict(max_iter=3, verbose=False)
    options.update(trainer)
    return Experiment(ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="mlp"),
                      TrainerConfig(**options), seed)


def kill_connection(connection_id: int) -> None:
    """End a database connection from another one, as a server restart or a network failure does."""
    from nntransfer.store import db

    conn = db.connection()
    if conn.adapter.backend == "mysql":
        conn.query(f"KILL CONNECTION {int(connection_id)}")
    else:
        conn.query("SELECT pg_terminate_backend(%s)", args=(int(connection_id),))


def stored_files_of_checkpoints(clean_db):
    """(path, exists) of the file every checkpoint row references."""
    from nntransfer.store import db
    from nntransfer.store.codec import referenced_paths

    root = Path(db.store_location())
    return [(path, (root / path).is_file()) for path, _ in referenced_paths(clean_db.Checkpoint(), "state")]


# -- 1 and 2: a connection lost at the COMMIT of the final insert; the checkpoint files it dropped ------------------
COMMIT_RECIPE = """
import os, time
from pathlib import Path
from nntransfer import Description, Experiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.core.compat import make_hash
from nntransfer.store.trained_model import TrainedModelBase
from nntransfer.trainer import MainLoopModule, register_module

@register_module("EpochLog")
class EpochLog(MainLoopModule):
    def pre_epoch(self, model, mode, **options):
        super().pre_epoch(model, mode, **options)
        if mode == "Training":
            with open(os.environ["EPOCH_LOG"], "a") as f:
                f.write(f"{{os.getpid()}} {{self.trainer.seed}} {{self.epoch}}\\n")

_make_insert = TrainedModelBase.make_insert

def make_insert(self, key, *args):
    _make_insert(self, key, *args)  # the result rows are inserted, the checkpoint rows dropped: not committed yet
    window = Path(os.environ["COMMIT_WINDOW"]) / make_hash(dict(key))
    if not window.exists():  # once per job: the connection sits idle in the transaction until the COMMIT
        window.write_text(str(self.connection.connection_id))
        time.sleep(float(os.environ["COMMIT_SLEEP"]))

TrainedModelBase.make_insert = make_insert

experiments = {{
    Description(f"commit{{seed}}", seed): Experiment(
        ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="mlp"),
        TrainerConfig(max_iter=3, verbose=False, save_every_n=1, main_loop_modules=["EpochLog"]), seed)
    for seed in {seeds}
}}
"""


def commit_recipe(tmp_path, seeds):
    recipe = tmp_path / "commit.py"
    recipe.write_text(COMMIT_RECIPE.format(seeds=tuple(seeds)))
    window = tmp_path / "window"
    window.mkdir()
    env = {**os.environ, "COMMIT_WINDOW": str(window), "EPOCH_LOG": str(tmp_path / "epochs.log"),
           "NNTRANSFER_RECONNECT_DELAYS": "0.5,1,2"}
    return recipe, window, env


def trained_epochs(tmp_path) -> dict:
    """seed -> the epochs trained, in order, over every run."""
    out = {}
    for _pid, seed, epoch in log_lines(tmp_path / "epochs.log"):
        out.setdefault(int(seed), []).append(int(epoch))
    return out


@pytest.mark.slow
@pytest.mark.both_backends
@pytest.mark.parametrize("workers", [1, 2])
def test_a_connection_lost_at_the_final_commit_reconnects_and_the_job_ends_committed(clean_db, tmp_path, workers):
    from nntransfer.store import gc

    seeds = range(1, workers + 1)  # with two workers: the parent and a child process each hit the window
    recipe, window, env = commit_recipe(tmp_path, seeds)
    env["COMMIT_SLEEP"] = "3"
    worker = subprocess.Popen(CLI + ["worker", str(recipe), "--workers", str(workers)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = set()
    try:
        deadline = time.time() + 400
        while worker.poll() is None and time.time() < deadline:
            for opened in window.iterdir():
                if opened.name not in killed and opened.read_text():
                    kill_connection(int(opened.read_text()))  # idle in the transaction, before its COMMIT
                    killed.add(opened.name)
            time.sleep(0.1)
        out, err = worker.communicate(timeout=60)  # the parent never waits for ever on a child
    finally:
        worker.kill()
    assert worker.returncode == 0, out + err
    assert len(killed) == workers  # every job lost its connection at the COMMIT
    assert "lost the connection to the database during a job" in err and "reconnected" in err
    # (the recipe is not loaded here: it patches make_insert wherever it is imported)
    assert len(clean_db.TrainedModel()) == workers
    assert len(clean_db.TrainedModel.jobs.errors) == 0 and len(clean_db.TrainedModel.jobs.reserved) == 0
    # the rolled-back insert kept the checkpoints and their files: each job resumed after its last one (epoch 3)
    # instead of training again from scratch
    assert trained_epochs(tmp_path) == {seed: [1, 2, 3] for seed in seeds}
    assert "skipping the checkpoint" not in err
    assert len(clean_db.Checkpoint()) == 0 and gc.collect(dry_run=True, min_age=0)["unreferenced"] == 0


@pytest.mark.slow
def test_a_worker_killed_between_insert_and_commit_leaves_its_checkpoints_readable(clean_db, tmp_path):
    recipe, window, env = commit_recipe(tmp_path, [7])
    worker = subprocess.Popen(CLI + ["worker", str(recipe)], env={**env, "COMMIT_SLEEP": "120"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(p.read_text() for p in window.iterdir()), timeout=300, what="the insert's transaction")
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert len(clean_db.TrainedModel()) == 0  # the insert never committed
    files = stored_files_of_checkpoints(clean_db)
    assert files and all(exists for _, exists in files), files  # no checkpoint row points at a missing file
    again = subprocess.run(CLI + ["worker", str(recipe)], env={**env, "COMMIT_SLEEP": "0"}, capture_output=True,
                           text=True, timeout=400)  # reclaims the dead worker's job at once (same machine)
    assert again.returncode == 0, again.stderr
    assert "skipping the checkpoint" not in again.stderr
    assert trained_epochs(tmp_path) == {7: [1, 2, 3]}  # resumed from the checkpoint of epoch 3: nothing retrained
    assert len(clean_db.TrainedModel()) == 1 and len(clean_db.Checkpoint()) == 0


class _Child:
    """A worker process as ``run_workers`` sees one (``multiprocessing.Process``'s interface), around a Popen."""

    def __init__(self, code):
        self.name = "nntransfer-worker-test"
        self.proc = subprocess.Popen([sys.executable, "-c", code + "\nprint('ready', flush=True)\ntime.sleep(600)"],
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        assert self.proc.stdout.readline().strip() == "ready"  # its signal handling is set up

    def is_alive(self):
        return self.proc.poll() is None

    def join(self, timeout=None):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self):
        self.proc.kill()

    @property
    def exitcode(self):
        return self.proc.poll()


def test_the_parent_never_waits_for_ever_on_a_child_that_does_not_stop(caplog):
    from nntransfer.orchestration.workers import _stop_children

    stuck = _Child("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)")
    polite = _Child("import time")  # stops on SIGTERM
    started = time.monotonic()
    with caplog.at_level("ERROR", logger="nntransfer.orchestration.workers"):
        _stop_children([stuck, polite], grace=2.0)
    assert time.monotonic() - started < 30
    assert not stuck.is_alive() and stuck.exitcode == -signal.SIGKILL  # killed after the grace period
    assert polite.exitcode == -signal.SIGTERM  # asked to stop first
    assert f"(pid {stuck.pid}) did not stop within 2 s; killing it" in caplog.text


TRAINED_HERE = []


@register_module("RecordTrainingEpochs")
class RecordTrainingEpochs(MainLoopModule):
    def pre_epoch(self, model, mode, **options):
        super().pre_epoch(model, mode, **options)
        if mode == "Training":
            TRAINED_HERE.append(self.epoch)


@pytest.mark.both_backends
def test_a_failed_insert_keeps_checkpoint_rows_and_files_and_the_next_run_resumes(clean_db, monkeypatch, caplog):
    from nntransfer.store import gc
    from nntransfer.store.trained_model import TrainedModelBase

    exp = digits(5, save_every_n=1, main_loop_modules=["RecordTrainingEpochs"])
    exp.add_to_table()
    original = TrainedModelBase.make_insert

    def insert_then_fail(self, key, *args):
        original(self, key, *args)  # inside the transaction: the checkpoint rows are dropped, not yet committed
        raise RuntimeError("the transaction could not commit")

    monkeypatch.setattr(TrainedModelBase, "make_insert", insert_then_fail)
    TRAINED_HERE.clear()
    failed = clean_db.TrainedModel.populate(exp.get_key(), reserve_jobs=True, suppress_errors=True)
    assert failed["success_count"] == 0 and TRAINED_HERE == [1, 2, 3]
    files = stored_files_of_checkpoints(clean_db)
    assert files and all(exists for _, exists in files), files  # rolled back: rows and files are both there
    monkeypatch.setattr(TrainedModelBase, "make_insert", original)
    clean_db.TrainedModel.jobs.errors.delete_quick()
    TRAINED_HERE.clear()
    done = clean_db.TrainedModel.populate(exp.get_key(), reserve_jobs=True, suppress_errors=True)
    assert done["success_count"] == 1
    assert TRAINED_HERE == []  # resumed from the checkpoint of the last epoch
    assert "skipping the checkpoint" not in caplog.text
    # committed: the checkpoint rows went with the insert, their files after the commit
    assert len(clean_db.Checkpoint()) == 0 and gc.collect(dry_run=True, min_age=0)["files"] == []


# -- 3: a first start killed during initdb --------------------------------------------------------------------------
def _data_dir_of(home) -> Path:
    out = subprocess.run([sys.executable, "-c", "from nntransfer.store import db; print(db.data_dir())"],
                         env=dict(os.environ, NNTRANSFER_HOME=str(home)), capture_output=True, text=True, timeout=120)
    return Path(out.stdout.strip())


@pytest.mark.slow
def test_a_first_start_killed_during_initdb_is_redone_on_the_next_start(tmp_path):
    from nntransfer.store.db import incomplete_cluster

    open_folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="nntransfer-initdb-"))
    open_folder.chmod(0o755)  # as root the data then stays under the home, as for other users
    home = open_folder / "fresh"
    env = dict(os.environ, NNTRANSFER_HOME=str(home))
    try:
        pgdata = _data_dir_of(home)
        first = subprocess.Popen([sys.executable, "-c", "from nntransfer.store import db; db.start()"], env=env,
                                 start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # initdb has begun writing the cluster (PG_VERSION comes first): kill -9 the whole process group
        wait_for(lambda: list(pgdata.parent.glob(f"*{pgdata.name}*/PG_VERSION")) or first.poll() is not None,
                 timeout=300, what="initdb")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        assert first.returncode == -signal.SIGKILL  # killed half-way, not finished
        again = subprocess.run([sys.executable, "-c", "from nntransfer import tables\n"
                                "tables.Seed().insert1({'seed': 3}, skip_duplicates=True)\nprint(len(tables.Seed()))"],
                               env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert again.stdout.split()[-1] == "1"
        assert incomplete_cluster(pgdata) is None
        assert [p.name for p in pgdata.parent.iterdir() if p.name.startswith(f".{pgdata.name}")] == []
    finally:
        _stop(home)
        shutil.rmtree(open_folder, ignore_errors=True)


def test_a_data_directory_that_is_not_a_complete_cluster_is_named_with_the_fix(tmp_path, monkeypatch, capsys):
    from nntransfer.store import db

    home = tmp_path / "broken"
    monkeypatch.setenv("NNTRANSFER_HOME", str(home))
    pgdata = db.data_dir()
    (pgdata / "base" / "1").mkdir(parents=True)  # what an initdb killed in place by an older version leaves
    (pgdata / "global").mkdir()
    (pgdata / "PG_VERSION").write_text("16\n")
    try:
        assert main(["db", "start"]) == 2
        err = capsys.readouterr().err
        assert f"{pgdata} is not a complete PostgreSQL cluster" in err and f"rm -rf {pgdata}" in err
        assert "resume" not in err  # nothing to resume: the cluster never held data
        assert not (pgdata / "postmaster.pid").exists()  # and no server was started on it
    finally:
        shutil.rmtree(pgdata.parent if not str(pgdata).startswith(str(home)) else home, ignore_errors=True)


# -- 5: db stop signals only the server ---------------------------------------------------------------------------------
def test_db_stop_never_signals_a_look_alike_process_named_postgres(tmp_path, monkeypatch, capsys):
    import psutil

    from nntransfer.store import db

    home = tmp_path / "lookalike"
    monkeypatch.setenv("NNTRANSFER_HOME", str(home))
    pgdata = db.data_dir()
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    fake = tmp_path / "bin" / "postgres"  # a copy of bash named postgres whose command line names the data dir
    fake.parent.mkdir()
    shutil.copy("/bin/bash", fake)
    impostor = subprocess.Popen([str(fake), "-c", "sleep 300; true", str(pgdata)], cwd=pgdata)
    try:
        wait_for(lambda: psutil.Process(impostor.pid).name() == "postgres", timeout=30, what="the impostor")
        created = psutil.Process(impostor.pid).create_time()

        def pidfile(start_time):
            (pgdata / "postmaster.pid").write_text("\n".join([
                str(impostor.pid), str(pgdata), str(int(start_time)), "5432", str(pgdata), "", "  1234  5678",
                "ready   "]) + "\n")

        for start_time in (created - 3600, created):  # a stale file of a server that ran an hour ago; a file
            pidfile(start_time)                        # whose start time even matches, but no socket is held
            assert db.status()["running"] is False
            assert main(["db", "stop"]) == 0
            assert capsys.readouterr().out.strip() == "not running"
            time.sleep(0.2)
            assert impostor.poll() is None  # never signalled
    finally:
        impostor.kill()
        impostor.wait()
    assert db._is_postmaster_of(impostor.pid, pgdata) is False


def test_the_running_server_is_recognised_by_its_start_time_and_socket():
    from nntransfer.store import db

    db.connection()  # the embedded server of this test session
    info = db._read_pidfile(db.data_dir())
    assert info is not None and info.status == "ready"
    assert db._is_postmaster_of(info.pid, db.data_dir(), info)
    moved = db.Postmaster(info.pid, info.port, info.socket_dir, info.status, info.start_time - 3600)
    assert not db._is_postmaster_of(info.pid, db.data_dir(), moved)  # started at another time: another process
    other_port = db.Postmaster(info.pid, info.port + 1, info.socket_dir, info.status, info.start_time)
    assert not db._is_postmaster_of(info.pid, db.data_dir(), other_port)  # does not hold that socket


# -- 4: the trust allowlist ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, refused_because", [
    ("nntransfer.store.db:subprocess.run", "'subprocess' is a module"),  # the bypass the probe found
    ("nntransfer.store.db:os.system", "'os' is a module"),  # pkg.mod:os.system
    ("torchvision:models.resnet18", "'models' is a module"),  # pkg:submodule.attr
    ("nntransfer.store.db:shutil.rmtree", "'shutil' is a module"),
    ("nntransfer.store.jobs:make_condition", "module 'datajoint.condition' is not in NNTRANSFER_TRUSTED_MODULES"),
    ("nntransfer.store.jobs:Job", "module 'datajoint.jobs' is not in NNTRANSFER_TRUSTED_MODULES"),  # a class
    ("subprocess:run", "module 'subprocess' is not in NNTRANSFER_TRUSTED_MODULES"),
])
def test_the_trust_allowlist_checks_what_is_resolved_not_only_the_module_named(monkeypatch, path, refused_because):
    from nntransfer.core.registry import resolve_import_path
    from nntransfer.runner import check_config

    monkeypatch.setenv("NNTRANSFER_TRUSTED_MODULES", "torchvision")
    with pytest.raises(ConfigError, match=refused_because):
        resolve_import_path(path, what="loss")
    with pytest.raises(ConfigError, match=refused_because):  # as the issue did it: a loss of a trainer config
        check_config(TrainerConfig(loss_functions={"img_classification": path}))


def test_the_trust_allowlist_still_allows_what_trusted_modules_define(monkeypatch):
    import torchvision

    from nntransfer.core.registry import resolve_import_path

    monkeypatch.setenv("NNTRANSFER_TRUSTED_MODULES", "torchvision")
    assert resolve_import_path("torchvision.models:resnet18") is torchvision.models.resnet18
    assert resolve_import_path("torchvision.models.resnet18") is torchvision.models.resnet18
    assert callable(resolve_import_path("nntransfer.trainer:trainer"))  # nntransfer itself is always trusted
    # a name re-exported by a trusted package and defined in it is fine: torchvision.models re-exports resnet18
    assert resolve_import_path("torchvision.models:ResNet").__module__ == "torchvision.models.resnet"


# -- also found: bad input ----------------------------------------------------------------------------------------------
TOY_RECIPE = """
from nntransfer import Description, Experiment
from toy_pipeline import ToyData, ToyModel, ToyTrainer
experiments = {{Description(name, 91): Experiment(ToyData(), ToyModel(), ToyTrainer(), 91) for name in {names!r}}}
experiments[Description("other", 92)] = Experiment(ToyData(), ToyModel(), ToyTrainer(lr=0.2), 92)
"""


def toy_recipe(tmp_path, names=("toy",)):
    recipe = tmp_path / "toy_recipe.py"
    recipe.write_text(TOY_RECIPE.format(names=list(names)))
    return recipe


@pytest.mark.parametrize("seed", ["2147483648", "-1"])
def test_seeds_outside_the_stored_range_are_refused_when_the_config_is_made(tmp_path, capsys, seed):
    assert main(["status", str(toy_recipe(tmp_path)), "--set", f"seed={seed}"]) == 2
    err = capsys.readouterr().err
    assert f"seed={seed} is out of range" in err and "0 .. 2147483647" in err
    with pytest.raises(ConfigError, match="out of range"):
        toy(seed=int(seed))


def test_a_file_path_as_model_type_is_a_config_error_naming_the_field(tmp_path, capsys):
    from nntransfer.runner import check_config

    recipe = tmp_path / "digits.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
        experiments = {Description("d", 1): Experiment(ImageDatasetConfig(dataset_cls="digits"), ModelConfig(type="mlp"),
                                                      TrainerConfig(max_iter=1), 1)}
    """))
    for command in ("status", "run"):  # the cheap checks, and the full ones before the tables are filled
        assert main([command, str(recipe), "--set", "model.type=../../etc/passwd"]) == 2
        err = capsys.readouterr().err
        assert "ModelConfig.type='../../etc/passwd' is not an import path" in err and "unexpected" not in err
    with pytest.raises(ConfigError, match="ModelConfig.type"):
        check_config(ModelConfig(type="../../etc/passwd"))
    relative = type("RelativeModel", (ModelConfig,), {"fn": "..models:net"})  # a relative module: no import
    with pytest.raises(ConfigError, match="RelativeModel.fn='..models:net' is not an import path"):
        relative().check_names()


# -- also found: clear of a row that several names share ----------------------------------------------------------------
def test_clear_lists_every_name_whose_result_it_deletes_and_asks_first(clean_db, tmp_path, capsys, monkeypatch):
    from nntransfer.orchestration.plan import plan, states
    from nntransfer.orchestration.recipes import load_recipe

    names = ["semi;colon", "alias a", "alias b", "alias c"]  # one configuration and seed: one result row
    recipe = toy_recipe(tmp_path, names)
    experiments = load_recipe(recipe)
    run(experiments, quiet=True)
    assert len(clean_db.TrainedModel()) == 2
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # no terminal to ask on
    assert main(["clear", str(recipe), "--name", "semi;colon"]) == 2
    out = capsys.readouterr()
    assert "not deleting without confirmation" in out.err
    for name in names[1:]:
        assert name in out.out  # every name the deletion affects is listed
    assert "become pending too" in out.out and "other" not in out.out.split("become pending too")[1]
    assert len(clean_db.TrainedModel()) == 2  # nothing deleted without --yes
    assert main(["clear", str(recipe), "--name", "semi;colon", "--yes"]) == 0
    current = {t.description.name: s["state"] for t, s in states(plan(experiments)).items()}
    assert current == {**{name: "pending" for name in names}, "other": "done"}


# -- also found: the fork server dies while starting ---------------------------------------------------------------------
FORKSERVER_DIES = """
import os
if os.environ.get("KILL_FORKSERVER"):
    os._exit(3)  # imported by the fork server only, while it starts: it dies (as when killed for memory)
"""

FORKSERVER_SCRIPT = """
import multiprocessing.forkserver as forkserver
from nntransfer import Description, Experiment, run
from toy_pipeline import ToyData, ToyModel, ToyTrainer

_preload = forkserver.set_forkserver_preload
forkserver.set_forkserver_preload = lambda names: _preload(list(names) + ["forkserver_dies"])

experiments = {Description(f"fs{i}", 130 + i): Experiment(ToyData(), ToyModel(), ToyTrainer(sleep=0.5), 130 + i)
               for i in range(4)}
if __name__ == "__main__":
    rows = run(experiments, workers=2, quiet=True)
    print("STATES", " ".join(r["state"] for r in rows))
"""


@pytest.mark.slow
def test_a_fork_server_that_dies_while_starting_falls_back_to_spawn(clean_db, tmp_path, train_log):
    (tmp_path / "forkserver_dies.py").write_text(FORKSERVER_DIES)
    script = tmp_path / "script.py"
    script.write_text(FORKSERVER_SCRIPT)
    env = {**os.environ, "KILL_FORKSERVER": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "STATES done done done done" in out.stdout
    assert "the fork server could not start worker processes (EOFError" in out.stderr
    assert "starting them with spawn instead" in out.stderr and "Traceback" not in out.stderr
    assert len({line[1] for line in log_lines(train_log)}) == 2  # a spawned worker trained beside this process


# -- also found: the re-queue log, status of a dead holder ---------------------------------------------------------------
def held_by_a_dead_worker(clean_db, seed):
    """A job reserved by a process of this machine that was killed a moment ago: its heartbeat row is fresh and
    names the job, but the process is gone."""
    from nntransfer.store import jobs as jobs_module

    jobs, key = reserved_job(clean_db, seed)
    gone = dead_pid()
    set_holder(jobs, key, platform.node(), gone)
    jobs_module.Worker.insert1(dict(host=platform.node(), pid=gone, namespace=jobs_module._namespace(), proc_start=1.0,
                                    heartbeat="2020-01-01 00:00:00", job_table=clean_db.TrainedModel.table_name,
                                    job_hash=jobs_module.job_hash(jobs._get_pk(key))))
    jobs.connection.query(f"UPDATE {jobs_module.Worker.full_table_name} SET heartbeat=CURRENT_TIMESTAMP(3)")
    return jobs, key, gone


def test_the_requeue_message_names_the_table(clean_db, caplog):
    from nntransfer.store import jobs as jobs_module

    _, key, gone = held_by_a_dead_worker(clean_db, 93)
    with caplog.at_level("WARNING", logger="nntransfer.store.jobs"):
        assert jobs_module.reclaim(clean_db.TrainedModel, [key]) == 1
    assert f"of TrainedModel, whose worker {platform.node()}:{gone} is gone" in caplog.text
    assert "TableMeta" not in caplog.text


def test_status_shows_a_reservation_of_a_dead_worker_as_stale(clean_db, tmp_path, capsys):
    from nntransfer.store import jobs as jobs_module

    recipe = tmp_path / "one.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        experiments = {Description("held", 94): Experiment(ToyData(), ToyModel(), ToyTrainer(), 94)}
    """))
    jobs, key, gone = held_by_a_dead_worker(clean_db, 94)
    assert main(["status", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "stale" in out and f"{platform.node()}:{gone} gone" in out and "re-queued" in out
    assert "\n1 stale\n" in out  # counted as stale, not as reserved (training)
    # a live holder (this process) is shown as training
    set_holder(jobs, key, platform.node(), os.getpid())
    jobs_module.Worker.insert1(dict(host=platform.node(), pid=os.getpid(), namespace=jobs_module._namespace(),
                                    proc_start=jobs_module._start_time(os.getpid()), heartbeat="2020-01-01 00:00:00",
                                    job_table=clean_db.TrainedModel.table_name,
                                    job_hash=jobs_module.job_hash(jobs._get_pk(key))), skip_duplicates=True)
    assert main(["status", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "reserved" in out and f"{platform.node()}:{os.getpid()}" in out and "stale" not in out


# -- also found: a full disk --------------------------------------------------------------------------------------------
@pytest.mark.both_backends
def full_device(store: str, after: int = 0):
    """An ``os.open`` under which state files of ``store`` are written to /dev/full (the kernel's ENOSPC) from the
    ``after + 1``-th on; the opened names are collected in its ``written`` list."""
    real_open = os.open

    def open_(path, flags, mode=0o777, *args, **kwargs):
        if str(path).startswith(store) and str(path).endswith(".pt"):
            open_.written.append(str(path))
            if len(open_.written) > after:
                os.close(real_open(path, flags, mode))  # the file is created, as on a full disk
                return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode, *args, **kwargs)

    open_.written = []
    return open_


@pytest.mark.both_backends
def test_a_full_disk_says_no_space_left_with_the_store_path_and_the_job_resumes(clean_db, monkeypatch):
    from nntransfer.store import db

    store = db.store_location()
    exp = digits(6, save_every_n=1, main_loop_modules=["RecordTrainingEpochs"])
    exp.add_to_table()
    full_after_the_first_checkpoint = full_device(store, after=1)
    monkeypatch.setattr(os, "open", full_after_the_first_checkpoint)
    TRAINED_HERE.clear()
    failed = clean_db.TrainedModel.populate(exp.get_key(), reserve_jobs=True, suppress_errors=True)
    monkeypatch.undo()
    assert failed["success_count"] == 0
    message = clean_db.TrainedModel.jobs.errors.to_dicts()[0]["error_message"]
    assert "no space left on device" in message and store in message and "unexpected pos" not in message
    assert [exists for _, exists in stored_files_of_checkpoints(clean_db)] == [True]  # epoch 1's, intact
    assert not any(Path(p).exists() for p in full_after_the_first_checkpoint.written[1:])  # no half file left
    clean_db.TrainedModel.jobs.errors.delete_quick()
    TRAINED_HERE.clear()
    done = clean_db.TrainedModel.populate(exp.get_key(), reserve_jobs=True, suppress_errors=True)
    assert done["success_count"] == 1 and TRAINED_HERE == [2, 3]  # resumed after the checkpoint of epoch 1


def test_a_state_written_to_a_full_device_raises_store_full_naming_the_store(clean_db, monkeypatch):
    import torch

    from nntransfer.store import codec, db

    path = "_schema/nntransfer_test/checkpoint/full/state_z.pt"
    monkeypatch.setattr(os, "open", full_device(db.store_location()))
    with pytest.raises(codec.StoreFull, match=f"no space left on device: could not write {path} to the store "
                                              f"'nntransfer' at {db.store_location()}") as raised:
        codec.write_state({"w": torch.zeros(100_000)}, path, db.STORE)
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC and not (Path(db.store_location()) / path).exists()


# -- also found: a killed postmaster --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_workers_restart_an_embedded_server_whose_postmaster_was_killed(tmp_path):
    open_folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="nntransfer-killed-"))
    open_folder.chmod(0o755)
    home = open_folder / "home"
    recipe = write_slow_recipe(tmp_path, epochs=8, sleep=1.0)
    epochs = tmp_path / "epochs.log"
    env = dict(os.environ, NNTRANSFER_HOME=str(home), EPOCH_LOG=str(epochs), NNTRANSFER_RECONNECT_DELAYS="1,2,4,8")
    try:
        worker = subprocess.Popen(CLI + ["worker", str(recipe)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(logged_epochs(epochs)) >= 3, timeout=300,
                     what="training under way")
            pgdata = _data_dir_of(home)
            postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)
            out, err = worker.communicate(timeout=300)
        finally:
            worker.kill()
        assert worker.returncode == 0, err + "\nserver log:\n" + "".join((pgdata / "log").read_text()[-3000:])
        assert "the embedded database server died; starting it again" in err and "reconnected" in err
        assert "Traceback" not in err
        status = subprocess.run(CLI + ["status", str(recipe)], env=env, capture_output=True, text=True, timeout=120)
        assert "1 done" in status.stdout
        assert logged_epochs(epochs)[-1] == 8
    finally:
        _stop(home)
        shutil.rmtree(open_folder, ignore_errors=True)


# -- also found: gc reports what it really freed ------------------------------------------------------------------------
def test_gc_reports_only_the_bytes_it_really_freed(clean_db, monkeypatch):
    import torch

    from nntransfer.store import codec, db, gc

    kept = "_schema/nntransfer_test/checkpoint/crashed/state_kept.pt"
    freed = "_schema/nntransfer_test/checkpoint/crashed/state_freed.pt"
    sizes = {path: codec.write_state({"w": torch.zeros(n)}, path, db.STORE)["size"]
             for path, n in ((kept, 1000), (freed, 3000))}
    backend_class = type(codec._backend(db.STORE))
    original_remove = backend_class.remove

    def remove(self, path):
        if path.endswith("state_kept.pt"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return original_remove(self, path)

    monkeypatch.setattr(backend_class, "remove", remove)
    report = gc.collect(dry_run=False, min_age=0)
    assert report["bytes_freed"] == sizes[freed] and report["unreferenced_bytes"] == sizes[kept] + sizes[freed]
    assert report["unreferenced"] == 2 and report["deleted"] == 1 and report["not_deleted"] == 1
    monkeypatch.setattr(backend_class, "remove", original_remove)
    assert gc.collect(dry_run=False, min_age=0)["bytes_freed"] == sizes[kept]  # the next run frees the rest
