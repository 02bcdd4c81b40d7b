"""Following Slurm jobs without a cluster: ``squeue``/``sacct`` stand-ins on PATH replay what a controller answers
(a requeued job is PENDING again; a job it forgot is gone; no accounting). The real cluster: tests/slurm."""
import os
import stat
import textwrap
from types import SimpleNamespace

import pytest

from nntransfer import Description
from nntransfer.errors import ConfigError
from nntransfer.orchestration import slurm
from nntransfer.orchestration.plan import Target
from nntransfer.orchestration.slurm import GONE, JobState, job_states, wait_for_workers


def target(seed):
    return Target(Description("exp", seed), 0, "TrainedModel", {"seed": seed})


def fake_commands(tmp_path, monkeypatch, squeue_answers: list[str], squeue_rc: int = 0, squeue_err: str = ""):
    """``squeue`` answers ``squeue_answers`` one call after the other (the last one for good); ``sacct`` fails as
    it does without accounting."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for i, answer in enumerate(squeue_answers):
        (tmp_path / f"answer{i}").write_text(answer)
    (bin_dir / "squeue").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        n=$(cat {tmp_path}/calls 2>/dev/null || echo 0)
        echo $((n + 1)) > {tmp_path}/calls
        last={len(squeue_answers) - 1}
        [ "$n" -gt "$last" ] && n=$last
        echo "$@" >> {tmp_path}/arguments
        cat {tmp_path}/answer$n
        [ -n "{squeue_err}" ] && echo "{squeue_err}" >&2
        exit {squeue_rc}
    """))
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    for tool in ("squeue", "sacct"):
        (bin_dir / tool).chmod((bin_dir / tool).stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_job_states_tell_a_requeued_job_from_a_finished_one(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, ["11|PENDING|BeginTime\n12|COMPLETED|None\n13|RUNNING|None\n"])
    found = job_states(["11", "12", "13", "14"])
    assert found["11"] == JobState("11", "PENDING", "BeginTime") and not found["11"].finished  # requeued: not over
    assert found["12"].finished and not found["13"].finished
    assert found["14"] == JobState("14", GONE) and found["14"].finished  # the controller forgot it: it is over
    assert "--states=all" in (tmp_path / "arguments").read_text()  # finished jobs too, not only queued ones


def test_job_states_when_squeue_knows_none_of_the_jobs(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, [""], squeue_rc=1, squeue_err="slurm_load_jobs error: Invalid job id specified")
    assert job_states(["21"]) == {"21": JobState("21", GONE)}


def test_job_states_raise_when_the_controller_does_not_answer(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, [""], squeue_rc=1, squeue_err="Unable to contact slurm controller")
    with pytest.raises(RuntimeError, match="Unable to contact slurm controller"):
        job_states(["31"])


def test_wait_follows_requeues_to_the_end_and_counts_from_the_tables(tmp_path, monkeypatch):
    # the first run of job 41 ends, Slurm requeues it (PENDING, BeginTime), it runs again and completes
    fake_commands(tmp_path, monkeypatch, ["41|RUNNING|None\n", "41|PENDING|BeginTime\n", "41|RUNNING|None\n",
                                          "41|COMPLETED|None\n"])
    targets = [target(i) for i in range(3)]
    looks = iter([{"state": "pending"}] * 3 + [{"state": "reserved"}] * 3 + [{"state": "reserved"}] * 3 +
                 [{"state": "done"}, {"state": "done"}, {"state": "error"}] * 3)
    monkeypatch.setattr(slurm, "states", lambda chosen: {t: next(looks) for t in chosen})
    before = {t: {"state": "pending"} for t in targets}
    job = SimpleNamespace(job_id="41", paths=SimpleNamespace(stderr=tmp_path / "41_0_log.err"))
    said = []
    result = wait_for_workers([job], targets, before, poll=0.01, say=said.append)
    assert int((tmp_path / "calls").read_text()) >= 4  # it did not stop at the end of the first run
    assert result.jobs == {"41": "COMPLETED"} and result.logs == {"41": str(tmp_path / "41_0_log.err")}
    assert result.trained == 2 and result.errors == ["exp (seed 2, step 0)"] and result.open == [] and not result.timed_out
    assert [line for line in said if "accounting" in line] == [
        "Slurm has no accounting here (sacct: Slurm accounting storage is disabled): job states come from squeue, "
        "experiment states from the tables"]
    assert "jobs: 1 PENDING (BeginTime); experiments: 3 reserved" in said


def test_wait_gives_up_at_its_deadline(tmp_path, monkeypatch):
    fake_commands(tmp_path, monkeypatch, ["51|PENDING|Resources\n"])
    targets = [target(0)]
    monkeypatch.setattr(slurm, "states", lambda chosen: {t: {"state": "pending"} for t in chosen})
    job = SimpleNamespace(job_id="51", paths=SimpleNamespace(stderr=tmp_path / "51_0_log.err"))
    said = []
    result = wait_for_workers([job], targets, poll=0.01, timeout=0.2, say=said.append)
    assert result.timed_out and result.jobs == {"51": "PENDING"} and result.open == ["exp (seed 0, step 0)"]
    assert any(line.startswith("stopped waiting after") for line in said)


def test_a_time_limit_must_leave_room_for_the_warning_and_requeues_count_up(tmp_path):
    pytest.importorskip("submitit")
    with pytest.raises(ConfigError, match="time limit .1 min. must be longer than the warning before it .90 s."):
        slurm.submit_workers([], slurm.WorkerSettings(), folder=str(tmp_path), cluster="local", time_min=1)
    with pytest.raises(ConfigError, match=r"max_requeues \(--max-requeues\) must be a whole number of 0 or more"):
        slurm.submit_workers([], slurm.WorkerSettings(), folder=str(tmp_path), cluster="local", max_requeues=-1)


def test_a_stop_is_not_logged_as_an_error_in_a_jobs_log(caplog):
    """DataJoint logs each failed make at ERROR; a stopped one (SIGTERM, time limit, preemption) is released, not
    failed, so a Slurm job's log must not show it as an error (the release is logged at INFO)."""
    import logging

    from nntransfer.errors import TrainingInterrupted
    from nntransfer.store import db  # noqa: F401 - installs the filter on DataJoint's logger

    datajoint_logger = logging.getLogger("datajoint")
    with caplog.at_level(logging.ERROR, logger="datajoint"):
        datajoint_logger.error(TrainingInterrupted("SIGTERM received: training stopped after epoch 3"))
        datajoint_logger.error(ValueError("a real failure"))
    assert [record.getMessage() for record in caplog.records] == ["a real failure"]
