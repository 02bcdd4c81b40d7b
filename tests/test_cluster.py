"""Workers that survive a cluster: graceful stop, user code in every worker, reservations under races,
heartbeats, reconnects, retries, GPUs per worker, the trust allowlist (real database, real processes)."""
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nntransfer import Description, Experiment, run
from nntransfer.orchestration.fill import fill_tables
from nntransfer.orchestration.recipes import load_recipe
from nntransfer.orchestration.plan import states
from slow_recipe import logged_epochs, write_slow_recipe
from toy_pipeline import ToyModel, toy

CLI = [sys.executable, "-m", "nntransfer.cli"]


def log_lines(log):
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- 1. graceful stop ---------------------------------------------------------------------------
@pytest.mark.slow  # a worker process gets SIGTERM, a second one resumes
@pytest.mark.both_backends
def test_sigterm_checkpoints_releases_and_the_next_worker_resumes_bit_identically(clean_db, tmp_path, cli):
    from nntransfer.trainer import trainer

    recipe = write_slow_recipe(tmp_path, epochs=12, sleep=1.5)
    epochs = tmp_path / "epochs.log"
    env = {**os.environ, "EPOCH_LOG": str(epochs), "CUDA_VISIBLE_DEVICES": "7"}
    worker = subprocess.Popen(CLI + ["worker", str(recipe)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for(lambda: len(clean_db.Checkpoint()) > 0, what="the first checkpoint")
        status = cli("status", recipe)
        assert "reserved" in status.stdout and f":{worker.pid} gpu 7" in status.stdout  # which GPU it uses
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert "stopped on request" in out
    targets = fill_tables(load_recipe(recipe))
    assert states(targets)[targets[0]]["state"] == "pending"  # released, not an error
    assert len(clean_db.TrainedModel.jobs.errors) == 0
    stopped_after = int(max(clean_db.Checkpoint().to_arrays("epoch")))
    assert 1 <= stopped_after < 12
    epochs.write_text("")
    again = subprocess.run(CLI + ["run", str(recipe)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = logged_epochs(epochs)
    # the next worker resumes from that checkpoint: the rest of the epoch if the stop came between its batches
    assert f"training stopped in epoch {stopped_after} after batch" in err or f"after epoch {stopped_after}" in err
    first = stopped_after if f"in epoch {stopped_after} after batch" in err else stopped_after + 1
    assert resumed == list(range(first, 13))
    # ... and ends where an uninterrupted run ends
    exp = next(iter(load_recipe(recipe).values()))
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.models import classification_model_builder

    data = image_dataset_loader(seed=4, **exp.dataset.to_dict())
    model = classification_model_builder(data, seed=4, **exp.model.to_dict())
    ref_score, _, ref_state = trainer(model, data, seed=4, **exp.trainer.to_dict())
    stored = (clean_db.TrainedModel.ModelStorage & exp.get_key()).fetch1("model_state")
    assert (clean_db.TrainedModel & exp.get_key()).fetch1("score") == ref_score
    for name, value in ref_state.items():
        assert torch.equal(stored[name], value.cpu()), name


SLOW_BATCH_RECIPE = """
import time
from nntransfer import Description, Experiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.trainer import MainLoopModule, register_module

@register_module("SlowBatch")
class SlowBatch(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training" and self.epoch == 2 and self.batch_index == 2:
            time.sleep(30)  # a long batch: the trainer reaches its next batch boundary only after it
        return model, inputs

experiments = {
    Description("slow", 4): Experiment(
        ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="mlp"),
        TrainerConfig(max_iter=5, verbose=False, main_loop_modules=["SlowBatch"]), 4)
}
"""


@pytest.mark.slow  # SIGINT twice to a worker process
def test_a_second_sigint_stops_at_once_and_still_releases(clean_db, tmp_path):
    recipe = tmp_path / "slow_batch.py"
    recipe.write_text(SLOW_BATCH_RECIPE)
    worker = subprocess.Popen(CLI + ["worker", str(recipe)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for(lambda: len(clean_db.Checkpoint()) > 0, what="the first checkpoint")
        time.sleep(2)  # inside epoch 2's long batch by now
        worker.send_signal(signal.SIGINT)  # the first asks for a checkpoint at the next batch boundary ...
        time.sleep(0.5)
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)  # ... the second stops at once, inside the batch
        out, err = worker.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        worker.kill()
    assert took < 20, f"the second SIGINT took {took:.0f} s to stop the worker"  # the batch alone sleeps 30 s
    assert list(clean_db.Checkpoint().to_arrays("epoch")) == [1]  # no checkpoint of the interrupted epoch 2
    assert worker.returncode == 0, err
    targets = fill_tables(load_recipe(recipe))
    assert states(targets)[targets[0]]["state"] == "pending"
    assert len(clean_db.TrainedModel.jobs.errors) == 0


# -- 2. user code in every worker ------------------------------------------------------------------
SCRIPT = """
import os
import torch
from nntransfer import Description, Experiment, run
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.models import register_model
from nntransfer.trainer import register_loss

if __name__ != "__main__" and os.environ.get("KILL_CHILDREN"):
    os._exit(7)  # a worker process that dies

@register_model("script_net")
def script_net(info, cfg):
    with open(os.environ["PID_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(info.channels * info.height * info.width,
                                                                   info.num_classes))

@register_loss("script_loss")
class ScriptLoss(torch.nn.CrossEntropyLoss):
    pass

experiments = {
    Description("scripted", seed): Experiment(
        ImageDatasetConfig(dataset_cls="digits", batch_size=256), ModelConfig(type="script_net"),
        TrainerConfig(max_iter=2, verbose=False, loss_functions={"img_classification": "script_loss"}), seed)
    for seed in range(4)
}
rows = run(experiments, workers=2, quiet=True)  # at top level, no main guard
print("STATES", " ".join(r["state"] for r in rows))
"""


@pytest.mark.slow  # a script run as a program, with a worker process
def test_run_with_two_workers_sees_models_and_losses_the_script_registers(clean_db, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    pids = tmp_path / "pids.log"
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, "PID_LOG": str(pids)}, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "STATES done done done done" in out.stdout
    assert len(clean_db.TrainedModel()) == 4 and len(clean_db.TrainedModel.jobs.errors) == 0
    assert len(set(pids.read_text().split())) == 2  # the script's own process and a worker both trained


@pytest.mark.slow  # a worker process that dies
def test_a_dead_worker_process_is_reported_in_one_line(clean_db, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, "PID_LOG": str(tmp_path / "p"),
                                                             "KILL_CHILDREN": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "STATES done done done done" in out.stdout  # this process trained everything
    lines = [line for line in out.stderr.splitlines() if "exited with code 7" in line]
    assert len(lines) == 1 and "Traceback" not in out.stderr


@pytest.mark.slow  # the console script's interpreter and its worker processes
def test_workers_from_a_folder_holding_another_nntransfer_folder(clean_db, tmp_path, train_log):
    here = tmp_path / "parent-of-a-clone"
    (here / "nntransfer").mkdir(parents=True)
    (here / "nntransfer" / "__init__.py").write_text("raise ImportError('the clone, not the package')\n")
    recipe = tmp_path / "r.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        experiments = {Description(f"e{i}", i): Experiment(ToyData(), ToyModel(), ToyTrainer(sleep=0.3), i)
                       for i in range(4)}
    """))
    launcher = tmp_path / "bin" / "nntransfer_cli.py"  # like the console script: its folder, not the cwd, on the path
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom nntransfer.cli import main\nsys.exit(main())\n")
    out = subprocess.run([sys.executable, str(launcher), "run", str(recipe), "--workers", "2"], cwd=here,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len({line[1] for line in log_lines(train_log)}) == 2


@pytest.mark.slow  # submitit's local executor starts a process per job
def test_slurm_workers_import_the_recipe(clean_db, tmp_path):
    from nntransfer.orchestration.slurm import submit_workers
    from nntransfer.orchestration.workers import WorkerSettings

    recipe = tmp_path / "slurm_recipe.py"
    recipe.write_text(textwrap.dedent("""
        import torch
        from nntransfer import Description, Experiment
        from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
        from nntransfer.trainer import register_loss

        @register_loss("recipe_loss")
        class RecipeLoss(torch.nn.CrossEntropyLoss):
            pass

        experiments = {Description("remote", 5): Experiment(
            ImageDatasetConfig(dataset_cls="digits", batch_size=256), ModelConfig(type="mlp"),
            TrainerConfig(max_iter=1, verbose=False, loss_functions={"img_classification": "recipe_loss"}), 5)}
    """))
    targets = fill_tables(load_recipe(recipe))
    jobs = submit_workers(targets, WorkerSettings(recipe=str(recipe)), jobs=1, folder=str(tmp_path / "jobs"),
                          cluster="local", cpus=1)
    result = jobs[0].result()
    assert result["errors"] == [] and result["trained"] == 1
    assert states(targets)[targets[0]]["state"] == "done"


def test_slurm_workers_are_requeued_through_submitits_checkpointing():
    import submitit

    from nntransfer.orchestration.slurm import RemoteWorker

    from nntransfer.orchestration.workers import WorkerSettings

    settings = WorkerSettings(recipe="recipe.py", imports=("mylab.models",), max_retries=2)
    worker = RemoteWorker(["target"], settings, submit_host="workstation")
    again = worker.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, RemoteWorker)
    assert again.function.targets == ["target"] and again.function.settings == settings
    assert again.function.submit_host == "workstation"  # a requeued single-node job still checks where it runs
    assert settings.user_code == [os.path.abspath("recipe.py"), "mylab.models"]


def test_slurm_refuses_a_store_the_nodes_cannot_see():
    from nntransfer.configs import ConfigError
    from nntransfer.orchestration.slurm import check_shared_store

    with pytest.raises(ConfigError, match="stores.*nntransfer.*location|--allow-local-store"):
        check_shared_store()
    check_shared_store(allow_local_store=True)  # explicitly overridden


# -- 3. reservations under races -------------------------------------------------------------------
def reserved_job(clean_db, seed):
    exp = toy(seed=seed)
    fill_tables({Description("r", seed): exp})
    jobs = clean_db.TrainedModel.jobs
    jobs.refresh(exp.get_key(), delay=-1)
    assert jobs.reserve(exp.get_key())
    return jobs, exp.get_key()


def set_holder(jobs, key, host, pid):
    from datajoint.condition import make_condition

    where = make_condition(jobs, jobs._get_pk(key), set())
    jobs.connection.query(f"UPDATE {jobs.full_table_name} SET host=%s, pid=%s, reserved_time=CURRENT_TIMESTAMP(3) "
                          f"WHERE {where}", args=(host, pid))


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.both_backends
def test_a_reservation_taken_over_meanwhile_is_never_released(clean_db, monkeypatch):
    """Worker A finds a dead reservation; before A releases it, B reclaims and re-reserves the job."""
    from nntransfer.store import jobs as jobs_module

    jobs, key = reserved_job(clean_db, 21)
    gone = dead_pid()
    set_holder(jobs, key, platform.node(), gone)
    jobs_module.Worker.insert1(dict(host=platform.node(), pid=gone, namespace=jobs_module._namespace(),
                                    proc_start=1.0, heartbeat="2020-01-01 00:00:00"))
    jobs.connection.query(f"UPDATE {jobs_module.Worker.full_table_name} SET heartbeat=CURRENT_TIMESTAMP(3)")
    original = jobs_module.ReservedJobs.release
    calls = []

    def interleaved(self, key_, delay=0, holder=None):
        if not calls:  # worker B acts between A's read and A's release
            calls.append("B")
            assert original(self, key_, holder={"host": platform.node(), "pid": gone,
                                                "reserved_time": holder["reserved_time"]})
            assert self.reserve(key_)
            set_holder(self, key_, "node-b", 4242)  # B (elsewhere) holds it now
        return original(self, key_, delay=delay, holder=holder)

    monkeypatch.setattr(jobs_module.ReservedJobs, "release", interleaved)
    assert jobs_module.reclaim(clean_db.TrainedModel(), [key]) == 0
    row = (jobs & key).proj("status", "host", "pid").to_dicts()[0]
    assert (row["status"], row["host"], row["pid"]) == ("reserved", "node-b", 4242)  # B's reservation stands


def test_one_heartbeat_per_process_however_many_populate_calls(clean_db):
    """The Worker row is keyed by host and pid: every session of a process (a plain ``populate`` gets one) shares
    one heartbeat thread and connection, which a worker's end stops."""
    import threading

    from nntransfer.store import jobs as jobs_module

    first, second = clean_db.TrainedModel(), clean_db.TrainedModel()
    assert first.session.heartbeat is second.session.heartbeat is jobs_module.process_heartbeat()
    first.session.hold(first, {"k": 1})
    second.session.hold(second, {"k": 2})
    beating = [t for t in threading.enumerate() if t.name == "nntransfer-heartbeat"]
    assert len(beating) == 1
    rows = jobs_module.Worker & {"host": platform.node(), "pid": os.getpid()}
    assert len(rows) == 1 and rows.fetch1("job_hash") == jobs_module.job_hash({"k": 2})
    second.session.close()
    assert not beating[0].is_alive() and len(rows) == 0


@pytest.mark.both_backends
def test_liveness_is_the_heartbeat_not_the_connection_id(clean_db, monkeypatch):
    from nntransfer.store import jobs as jobs_module

    jobs, key = reserved_job(clean_db, 22)
    # a live holder whose connection was re-opened: the job row still carries the old connection id
    jobs.connection.query(f"UPDATE {jobs.full_table_name} SET connection_id=987654")
    assert jobs_module.reclaim(clean_db.TrainedModel(), [key]) == 0
    # a holder on another machine: alive while it beats, re-queued once its heartbeat is older than the timeout
    monkeypatch.setattr(jobs_module, "HEARTBEAT_TIMEOUT", 2.0)
    set_holder(jobs, key, "node-b", 77)
    jobs_module.Worker.insert1(dict(host="node-b", pid=77, namespace="another-machine", proc_start=5.0,
                                    heartbeat="2020-01-01 00:00:00", job_table=clean_db.TrainedModel.table_name,
                                    job_hash=jobs_module.job_hash(jobs._get_pk(key))))
    beat = f"UPDATE {jobs_module.Worker.full_table_name} SET heartbeat=CURRENT_TIMESTAMP(3) WHERE host='node-b'"
    jobs.connection.query(beat)
    assert jobs_module.reclaim(clean_db.TrainedModel(), [key]) == 0
    time.sleep(2.5)
    jobs.connection.query(beat)  # still beating: the reservation is old but alive
    assert jobs_module.reclaim(clean_db.TrainedModel(), [key]) == 0
    time.sleep(2.5)  # silent for longer than the timeout
    assert jobs_module.reclaim(clean_db.TrainedModel(), [key]) == 1
    assert (jobs & key).proj("status").to_dicts()[0]["status"] == "pending"


def test_a_worker_whose_job_was_taken_over_stops_training(clean_db):
    from nntransfer.store.jobs import LostReservation, keep_alive

    jobs, key = reserved_job(clean_db, 23)
    cb = keep_alive(clean_db.TrainedModel(), key, every=0.0)
    cb()  # still ours
    set_holder(jobs, key, "node-b", 4242)
    with pytest.raises(LostReservation, match="taken over"):
        cb()


def test_a_pending_or_failed_job_row_is_nobodys_reservation(clean_db):
    """A plain populate (no reservation) of a key whose job row is pending (a worker's refresh) or failed."""
    from nntransfer.store.jobs import keep_alive

    exp = toy(seed=24)
    fill_tables({Description("plain", 24): exp})
    jobs, key = clean_db.TrainedModel.jobs, exp.get_key()
    jobs.refresh(key, delay=-1)
    cb = keep_alive(clean_db.TrainedModel(), key, every=0.0)
    cb()  # pending: not taken over
    assert jobs.reserve(key)
    jobs.error(key, "an earlier failure")
    assert (jobs & key).proj("status").to_dicts()[0]["status"] == "error"
    cb()  # failed earlier: not taken over either


# -- 4. reconnect ----------------------------------------------------------------------------------
RECONNECT_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from nntransfer.store import db
from nntransfer import tables
from nntransfer.trainer import MainLoopModule, register_module
from test_cluster import digits

@register_module("DropConnections")
class DropConnections(MainLoopModule):
    def post_epoch(self, model):
        if self.mode == "Validation" and self.epoch == 2:
            other = db.new_connection()
            mysql = db._dj().config["database.backend"] == "mysql"
            for conn in [c for c in db.open_connections() if c is not other]:  # the main one, the heartbeat's
                if mysql:  # what a server's wait_timeout or a restart does to a connection
                    other.query(f"KILL CONNECTION {{int(conn.connection_id)}}")
                else:
                    other.query("SELECT pg_terminate_backend(%s)", args=(conn.connection_id,))
            other.close()

exp = digits(8, max_iter=4, main_loop_modules=["DropConnections"])
exp.add_to_table()
print(tables.TrainedModel.populate(exp.get_key(), reserve_jobs=True, suppress_errors=True))
"""


def digits(seed, **trainer):
    from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

    options = dict(max_iter=2, verbose=False)
    options.update(trainer)
    return Experiment(ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="mlp"),
                      TrainerConfig(**options), seed)


@pytest.mark.slow  # a process whose own connections are terminated
@pytest.mark.both_backends
def test_training_survives_a_terminated_connection(clean_db, tmp_path):
    script = tmp_path / "drop.py"
    script.write_text(RECONNECT_SCRIPT.format(tests=os.path.dirname(__file__)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "'success_count': 1" in out.stdout
    # nntransfer reconnects the connections it holds; on MySQL DataJoint's own connection reconnects first
    assert "reconnected" in out.stderr or "Reconnecting to database server" in out.stdout + out.stderr
    assert len(clean_db.TrainedModel()) == 1 and len(clean_db.TrainedModel.jobs.errors) == 0


def test_reconnecting_gives_up_with_a_clear_error(monkeypatch):
    from nntransfer.store import db

    class Unreachable:
        def connect(self):
            raise ConnectionRefusedError("no server")

    monkeypatch.setattr(db, "RECONNECT_DELAYS", (0.01, 0.01))
    with pytest.raises(db.DatabaseUnavailable, match="could not reconnect"):
        db.reconnect(Unreachable(), "the test server")


# -- 11. retries -------------------------------------------------------------------------------------
def test_errors_are_retried_up_to_max_retries_but_config_errors_never(clean_db, tmp_path, train_log):
    counter = tmp_path / "fails"
    counter.write_text("1")
    rows = run({Description("flaky", 31): toy(31, fail_times_file=str(counter))}, quiet=True, max_retries=1)
    assert [r["state"] for r in rows] == ["done"] and len(log_lines(train_log)) == 2  # failed once, then trained
    counter.write_text("1")
    rows = run({Description("flaky0", 32): toy(32, fail_times_file=str(counter))}, quiet=True)
    assert [r["state"] for r in rows] == ["error"]  # default: no retry
    before = len(log_lines(train_log))
    rows = run({Description("bad", 33): toy(33, config_error=True)}, quiet=True, max_retries=3)
    assert [r["state"] for r in rows] == ["error"] and len(log_lines(train_log)) == before + 1


def test_status_shows_error_type_host_and_first_line_and_errors_the_traceback(clean_db, tmp_path, cli):
    marker = tmp_path / "fail"
    marker.write_text("x")
    recipe = tmp_path / "failing.py"
    recipe.write_text(textwrap.dedent(f"""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        experiments = {{Description("fails", 1): Experiment(ToyData(), ToyModel(),
                                                            ToyTrainer(fail_if_exists={str(marker)!r}), 1)}}
    """))
    assert cli("run", recipe, "--no-report").returncode == 1
    status = cli("status", recipe).stdout
    assert f"RuntimeError: toy failure requested by {marker}"[:60] in status and platform.node() in status
    errors = cli("errors", recipe).stdout
    assert "Traceback" in errors and "toy_trainer" in errors and platform.node() in errors


# -- issue 8 item 6: one GPU per local worker -------------------------------------------------------
@pytest.mark.slow  # five worker processes (tests/test_recipes.py keeps two local workers in the default run)
def test_local_workers_get_one_gpu_each_round_robin(clean_db, train_log, monkeypatch):
    from nntransfer.orchestration import workers

    monkeypatch.setattr(workers, "visible_gpus", lambda: ["0", "1"])  # a machine with two GPUs
    targets = fill_tables({Description(f"g{i}", 40 + i): toy(40 + i, sleep=0.5) for i in range(6)})
    workers.run_workers(targets, workers.WorkerSettings(workers=3))
    lines = log_lines(train_log)
    assert len(lines) == 6
    by_pid = {}
    for _uid, pid, gpu, _count in lines:
        by_pid.setdefault(pid, set()).add(gpu)
    assert str(os.getpid()) not in by_pid  # with GPUs this process only waits
    assert all(len(gpus) == 1 for gpus in by_pid.values())  # one GPU per worker process
    assert {gpu for gpus in by_pid.values() for gpu in gpus} <= {"0", "1"}
    # choosing GPUs: every worker on GPU 2
    train_log.write_text("")
    targets = fill_tables({Description(f"h{i}", 50 + i): toy(50 + i) for i in range(2)})
    workers.run_workers(targets, workers.WorkerSettings(workers=2, gpus="2"))
    assert {line[2] for line in log_lines(train_log)} == {"2"}


@pytest.mark.cuda
def test_each_local_worker_sees_exactly_one_real_gpu(clean_db, train_log):
    from nntransfer.orchestration import workers

    gpus = workers.visible_gpus()
    targets = fill_tables({Description(f"c{i}", 80 + i): toy(80 + i, sleep=0.3) for i in range(4)})
    workers.run_workers(targets, workers.WorkerSettings(workers=2))
    lines = log_lines(train_log)
    assert len(lines) == 4
    assert {line[2] for line in lines} <= set(gpus) and {line[3] for line in lines} == {"1"}


# -- 9. trust ----------------------------------------------------------------------------------------
def test_trusted_modules_allowlist_refuses_other_import_paths(monkeypatch):
    from nntransfer.configs import ConfigError
    from nntransfer.core.registry import resolve_import_path

    assert resolve_import_path("os:getcwd") is os.getcwd  # unset: everything importable is allowed
    monkeypatch.setenv("NNTRANSFER_TRUSTED_MODULES", "toy_pipeline, mylab")
    assert resolve_import_path("toy_pipeline.toy_data", what="dataset_fn")
    assert resolve_import_path("nntransfer.trainer:trainer")  # nntransfer itself is always trusted
    with pytest.raises(ConfigError, match="'os' is not in NNTRANSFER_TRUSTED_MODULES"):
        resolve_import_path("os:system", what="trainer_fn")
    with pytest.raises(ConfigError, match="not in NNTRANSFER_TRUSTED_MODULES"):
        ToyModel(fn="mylabx.models:net").resolve_fn()  # a prefix match is by package, not by string


# -- load ----------------------------------------------------------------------------------------------
@pytest.mark.slow  # a load test: four worker processes, twice
def test_four_workers_twice_on_twelve_experiments_with_shared_transfer_steps(clean_db, train_log):
    from nntransfer import TransferExperiment
    from nntransfer.store import gc

    experiments = {}
    for i in range(3):  # three shared first steps, each continued in two ways
        first = toy(60 + i, sleep=0.1)
        for j in range(2):
            experiments[Description(f"t{i}{j}", 60 + i)] = TransferExperiment([first, toy(60 + i, lr=0.05 * (j + 1))])
    for i in range(6):
        experiments[Description(f"p{i}", 70 + i)] = toy(70 + i, sleep=0.1)
    assert len(experiments) == 12
    for _ in range(2):
        rows = run(experiments, workers=4, quiet=True)
        assert {r["state"] for r in rows} == {"done"}
    uids = [line[0] for line in log_lines(train_log)]
    assert len(uids) == 3 + 6 + 6 and len(set(uids)) == len(uids)  # every entry trained exactly once
    for table in (clean_db.TrainedModel, clean_db.TransferredTrainedModel):
        assert len(table.jobs.errors) == 0 and len(table.jobs.reserved) == 0  # no error, no leftover reservation
    assert gc.collect(dry_run=True, min_age=0)["unreferenced"] == 0  # no orphan file
