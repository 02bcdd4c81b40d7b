"""nntransfer's Slurm workers on a real one-node Slurm cluster (``cluster.sh``): submission through the command line,
a time limit, ``scontrol requeue``, preemption by a higher-priority partition, ``scancel``, and ``--wait``.

Every job runs ``nntransfer worker`` in a Slurm job on this machine with ``--single-node``: the jobs use this test
session's embedded database and store. Slow (each job starts a Python with torch; a requeue waits ~16 s); needs
root and Debian's Slurm packages (skipped with the reason otherwise).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cluster import job_history, jobcomp, logs, wait_for_jobcomp
from slow_recipe import logged_runs, write_slow_recipe

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "nntransfer.cli"]

LAB_MODELS = """
from nntransfer.models import register_model
from nntransfer.models.mlp import mlp

register_model("lab_mlp")(mlp)  # an --import module: a Slurm job must import it to build the model
"""


@pytest.fixture(scope="module")
def lab_models(tmp_path_factory):
    path = tmp_path_factory.mktemp("user_code") / "lab_models.py"
    path.write_text(LAB_MODELS)
    return path


def write_recipe(tmp_path, epochs, seeds):
    # the lab's model comes from an --import module, the loss from the recipe: a Slurm job must import both
    return write_slow_recipe(tmp_path, epochs=epochs, seeds=seeds, model="lab_mlp",
                             trainer={"early_stopping": False, "deterministic": True})


def worker_command(recipe, lab_models, folder, *options, jobs=1, time_min=10):
    return CLI + ["worker", str(recipe), "--import", str(lab_models), "--slurm", "--single-node", "--jobs", str(jobs),
                  "--partition", "debug", "--cpus", "1", "--mem-gb", "2", "--time", str(time_min),
                  "--folder", str(folder), "--poll-slurm", "1", *options]


def submitted(stdout: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith("submitted:"))
    return line.split()[1:]


def squeue(job_id: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r"], capture_output=True, text=True)
    return tuple(out.stdout.strip().split("|")) if out.stdout.strip() else ("", "")


def wait_for(condition, timeout, what, env):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs(env)}")
        time.sleep(0.5)


def assert_trained_once(runs: list[tuple[int, str, int]], max_iter: int) -> None:
    """Every epoch up to ``max_iter`` started, in order, and never again from an earlier epoch: a run that was
    stopped resumed where its checkpoint left it (the epoch it stopped in may start again), never from scratch."""
    numbers = [epoch for epoch, _, _ in runs]
    assert numbers == sorted(numbers), f"training went back to an earlier epoch: {numbers}"
    assert sorted(set(numbers)) == list(range(1, max_iter + 1)), numbers
    assert all(numbers.count(n) <= 2 for n in numbers), numbers


def assert_equals_an_uninterrupted_run(recipe, lab_models, tables):
    """Each experiment's stored score and parameters are bit-identical to training it in memory without a stop."""
    from nntransfer import train
    from nntransfer.orchestration.recipes import load_recipe
    from nntransfer.orchestration.workers import import_user_code

    import_user_code([str(lab_models)])
    experiments = load_recipe(recipe)
    reference = train(experiments)
    for desc, exp in experiments.items():
        key = exp.get_key()
        assert (tables.TrainedModel & key).fetch1("score") == reference[desc].score, desc
        stored = (tables.TrainedModel.ModelStorage & key).fetch1("model_state")
        assert stored.keys() == reference[desc].model_state.keys()
        for name, tensor in reference[desc].model_state.items():
            assert torch.equal(stored[name].cpu(), tensor.cpu()), (desc, name)


def job_log(folder: Path, job_id: str) -> str:
    """The job's log (its stderr: nntransfer's messages, submitit's and Slurm's)."""
    return (folder / f"{job_id}_0_log.err").read_text(errors="replace")


def wait_for_stop(folder: Path, job_id: str, env) -> str:
    """The job's log once its worker has stopped (Slurm records a cancelled job before its processes end)."""
    wait_for(lambda: "worker stopped on request" in job_log(folder, job_id), timeout=60,
             what=f"the worker of job {job_id} to stop", env=env)
    return job_log(folder, job_id)


def test_the_digits_demo_trains_in_two_slurm_jobs_as_it_trains_locally(slurm, clean_db, tmp_path):
    from nntransfer import train
    from nntransfer.orchestration.plan import plan, states
    from nntransfer.orchestration.recipes import apply_overrides, load_recipe

    recipe = ROOT / "examples" / "digits_transfer.py"
    folder = tmp_path / "jobs"
    out = subprocess.run(CLI + ["worker", str(recipe), "--set", "trainer.max_iter=2", "--slurm", "--single-node",
                                "--jobs", "2", "--cpus", "1", "--mem-gb", "2", "--time", "10", "--folder", str(folder),
                                "--poll-slurm", "1", "--wait"], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr + logs(slurm)
    job_ids = submitted(out.stdout)
    assert len(job_ids) == 2
    for job_id in job_ids:  # the controller records both jobs completed, once each (no requeue)
        assert job_history(slurm, job_id) == ["COMPLETED"], f"{jobcomp(slurm)}\n{job_log(folder, job_id)}"
        assert f"job {job_id}: COMPLETED, log {folder / f'{job_id}_0_log.err'}" in out.stdout
    experiments = apply_overrides(load_recipe(recipe), {"trainer.max_iter": 2})
    targets = plan(experiments)
    # one-step baselines and two-step transfers whose pretraining is shared per seed: each distinct key trained once
    distinct = {(t.table, tuple(sorted(t.key.items()))) for t in targets}
    assert len(experiments) < len(distinct) < len(targets)
    assert f"all jobs finished: {len(distinct)} trained, 0 error(s), 0 not done" in out.stdout, out.stdout
    assert "job states come from squeue" in out.stdout  # said once: this cluster has no accounting
    assert out.stdout.count("job states come from squeue") == 1
    assert "Bypassing sacct error" not in out.stdout + out.stderr
    # both jobs trained (one worker per job, sharing the queue)
    trained_by = {line.split("\t")[1].split()[1] for line in (folder / "experiments.log").read_text().splitlines()}
    assert trained_by == set(job_ids)
    # the same keys trained in memory (one process, no database) give the same scores
    current = states(targets)
    reference = train(experiments)
    for target in targets:
        assert current[target]["state"] == "done"
        assert current[target]["score"] == reference[target.description][target.step].score, target.label


def test_a_job_at_its_time_limit_checkpoints_is_requeued_and_ends_bit_identical(slurm, clean_db, tmp_path, lab_models,
                                                                                monkeypatch):
    recipe = write_recipe(tmp_path, epochs=32, seeds=(3,))
    epoch_log, folder = tmp_path / "epochs.log", tmp_path / "jobs"
    monkeypatch.setenv("EPOCH_LOG", str(epoch_log))
    monkeypatch.setenv("SLOW_SLEEP", "3")
    # a 2-minute limit with the warning (USR2) 30 s before it: Slurm sends it up to 60 s early, so 30-90 s after the
    # start, while the 32 epochs of 3 s and more are training (on a busy machine a run trains fewer epochs: more
    # requeues)
    out = subprocess.run(worker_command(recipe, lab_models, folder, "--signal-delay", "30", "--max-requeues", "6",
                                        "--wait", time_min=2), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr + logs(slurm)
    [job_id] = submitted(out.stdout)
    log = job_log(folder, job_id)
    history = job_history(slurm, job_id)
    assert history[-1] == "COMPLETED" and "PENDING" in history, f"{history}\n{log}"  # requeued, then completed
    assert "USR2 received" in log and "released; the next worker resumes it" in log, log
    assert f"Requeued job {job_id}" in (folder / f"{job_id}_0_log.out").read_text()  # submitit, via checkpoint()
    assert "all jobs finished: 1 trained, 0 error(s), 0 not done" in out.stdout, out.stdout
    runs = logged_runs(epoch_log)[3]
    assert_trained_once(runs, 32)
    attempts = sorted({restarts for _, _, restarts in runs})
    assert attempts[0] == 0 and len(attempts) >= 2, runs  # trained in the first run and after a requeue
    first_after_requeue = next(epoch for epoch, _, restarts in runs if restarts == attempts[1])
    assert first_after_requeue > 1, runs  # resumed from its checkpoint
    assert len(clean_db.TrainedModel.jobs.errors) == 0
    monkeypatch.delenv("EPOCH_LOG")
    monkeypatch.delenv("SLOW_SLEEP")
    assert_equals_an_uninterrupted_run(recipe, lab_models, clean_db)


def test_requeue_and_preemption_resume_from_checkpoints_and_wait_waits_for_the_requeued_jobs(
        slurm, clean_db, tmp_path, lab_models, monkeypatch):
    recipe = write_recipe(tmp_path, epochs=25, seeds=(1, 2))
    epoch_log, folder = tmp_path / "epochs.log", tmp_path / "jobs"
    monkeypatch.setenv("EPOCH_LOG", str(epoch_log))
    monkeypatch.setenv("SLOW_SLEEP", "1.0")
    waiting = subprocess.Popen(worker_command(recipe, lab_models, folder, "--wait", jobs=2),
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        job_a, job_b = waiting.stdout.readline().split()[1:]  # "submitted: A B"
        wait_for(lambda: [len(runs) >= 3 for runs in logged_runs(epoch_log).values()] == [True, True],
                 timeout=300, what="both experiments to train a few epochs", env=slurm)
        status = subprocess.run(CLI + ["status", str(recipe), "--import", str(lab_models)], capture_output=True,
                                text=True, timeout=120)
        assert status.stdout.count("reserved") >= 2, status.stdout  # how a user follows the jobs

        subprocess.run(["scontrol", "requeue", job_a], check=True, capture_output=True)
        wait_for(lambda: squeue(job_a) == ("PENDING", "BeginTime"), timeout=60, what=f"job {job_a} requeued",
                 env=slurm)
        # a job of the higher-priority partition needs both CPUs: the running debug job is preempted (REQUEUE)
        urgent = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--cpus-per-task=2",
                                 f"--output={tmp_path / 'urgent.out'}", "--wrap", "sleep 2"],
                                check=True, capture_output=True, text=True).stdout.strip()
        wait_for(lambda: squeue(job_b)[0] == "PENDING", timeout=60, what=f"job {job_b} preempted", env=slurm)
        assert wait_for_jobcomp(slurm, urgent, timeout=120)["JobState"] == "COMPLETED"

        out, err = waiting.communicate(timeout=600)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, out + err + logs(slurm)
    # --wait returned only once both jobs had finished for good: their final runs are recorded completed
    records = jobcomp(slurm)
    for job_id in (job_a, job_b):
        history = job_history(slurm, job_id)
        assert history[0] != "COMPLETED" and records[job_id]["JobState"] == "COMPLETED", (job_id, history)
        log = job_log(folder, job_id)
        assert "SIGTERM received" in log and "released; the next worker resumes it" in log, log
    assert "all jobs finished: 2 trained, 0 error(s), 0 not done" in out, out
    assert len(clean_db.TrainedModel.jobs.errors) == 0
    runs = logged_runs(epoch_log)
    for seed in (1, 2):
        assert_trained_once(runs[seed], 25)
        assert len({restarts for _, _, restarts in runs[seed]}) >= 2 or len({job for _, job, _ in runs[seed]}) >= 2
    # the folder's index says which job log holds which experiment's training, attempt by attempt
    index = [line.split("\t") for line in (folder / "experiments.log").read_text().splitlines()]
    assert {name for _, _, name, _ in index} == {"slow (seed 1, step 0)", "slow (seed 2, step 0)"}
    assert {attempt for _, attempt, _, _ in index} >= {f"job {job_a} attempt 1", f"job {job_a} attempt 2"}
    assert all(Path(path).exists() for _, _, _, path in index)
    monkeypatch.delenv("EPOCH_LOG")
    monkeypatch.delenv("SLOW_SLEEP")
    assert_equals_an_uninterrupted_run(recipe, lab_models, clean_db)


def test_a_cancelled_job_leaves_its_experiment_pending_for_the_next_worker(slurm, clean_db, tmp_path, lab_models,
                                                                           monkeypatch):
    from nntransfer.orchestration.plan import plan, states
    from nntransfer.orchestration.recipes import load_recipe

    recipe = write_recipe(tmp_path, epochs=30, seeds=(7,))
    epoch_log, folder = tmp_path / "epochs.log", tmp_path / "jobs"
    monkeypatch.setenv("EPOCH_LOG", str(epoch_log))
    monkeypatch.setenv("SLOW_SLEEP", "1.0")
    out = subprocess.run(worker_command(recipe, lab_models, folder), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    [job_id] = submitted(out.stdout)
    wait_for(lambda: len(logged_runs(epoch_log).get(7, [])) >= 3, timeout=300, what="three epochs", env=slurm)
    subprocess.run(["scancel", job_id], check=True)
    assert wait_for_jobcomp(slurm, job_id, timeout=120)["JobState"] == "CANCELLED"
    log = wait_for_stop(folder, job_id, slurm)
    assert "SIGTERM received" in log and "released; the next worker resumes it" in log, log
    [target] = plan(load_recipe(recipe))
    assert states([target])[target]["state"] == "pending"  # released, not an error
    assert len(clean_db.TrainedModel.jobs.errors) == 0
    assert len(clean_db.Checkpoint()) > 0
    stopped_at = logged_runs(epoch_log)[7][-1][0]

    # the next worker (here a local one) resumes from the checkpoint and ends where an uninterrupted run ends
    monkeypatch.setenv("SLOW_SLEEP", "0")
    local = subprocess.run(CLI + ["worker", str(recipe), "--import", str(lab_models)], capture_output=True, text=True,
                           timeout=300)
    assert local.returncode == 0, local.stdout + local.stderr
    runs = logged_runs(epoch_log)[7]
    assert_trained_once(runs, 30)
    resumed = [epoch for epoch, job, _ in runs if job == "-"]
    assert resumed[0] in (stopped_at, stopped_at + 1) and resumed[0] > 1, runs
    monkeypatch.delenv("EPOCH_LOG")
    assert_equals_an_uninterrupted_run(recipe, lab_models, clean_db)


def test_a_search_on_slurm_waits_for_its_jobs_and_reports_the_study(slurm, clean_db, tmp_path, lab_models):
    """``nntransfer search --slurm --wait``: the jobs run the study's trials; what they trained is the study's status
    (a search plans no experiments up front, so there is no 'N trained' count to report)."""
    import optuna

    from nntransfer.orchestration.search import tally
    from nntransfer.store.studies import open_storage

    recipe = write_recipe(tmp_path, epochs=2, seeds=[1])
    space = tmp_path / "space.yaml"
    space.write_text("trainer.optimizer_options.lr: {loguniform: [1.0e-3, 1.0e-1]}\n")
    folder = tmp_path / "jobs"
    out = subprocess.run(CLI + ["search", str(recipe), "--import", str(lab_models), "--space", str(space), "--trials",
                                "2", "--sampler", "random", "--pruner", "none", "--study", "on-slurm", "--slurm",
                                "--single-node", "--jobs", "1", "--partition", "debug", "--cpus", "1", "--mem-gb",
                                "2", "--time", "10", "--folder", str(folder), "--poll-slurm", "1", "--wait"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr + logs(slurm)
    (job_id,) = submitted(out.stdout)
    assert job_history(slurm, job_id) == ["COMPLETED"], f"{jobcomp(slurm)}\n{job_log(folder, job_id)}"
    assert "all jobs finished" in out.stdout and " trained, " not in out.stdout
    study = optuna.load_study(study_name="on-slurm", storage=open_storage())
    assert tally(study.trials)["complete"] == 2
    after = out.stdout.split("all jobs finished", 1)[1]  # the study's status follows
    assert "trials: 2 of 2 started: 2 complete" in after and "best trial" in after
