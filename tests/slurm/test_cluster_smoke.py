"""The throwaway one-node Slurm cluster of ``cluster.sh`` runs ``sbatch`` jobs and submitit jobs.

Slow (the cluster starts in about a second, each job takes a few); needs root and Debian's Slurm packages
(installed with apt when missing and possible, else the module is skipped).
"""
import os
import subprocess
import time

import pytest

from cluster import logs, wait_for_jobcomp

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def test_sbatch_wrap_completes(slurm, tmp_path):
    out = tmp_path / "hostname.out"
    submitted = subprocess.run(["sbatch", "--parsable", "--partition=debug", f"--output={out}", "--wrap", "hostname"],
                               capture_output=True, text=True, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    record = wait_for_jobcomp(slurm, job_id)
    assert record["JobState"] == "COMPLETED", f"{record}\n{logs(slurm)}"
    assert record["Partition"] == "debug"
    assert out.read_text().strip() == record["NodeList"]


def test_submitit_job_returns_its_result(slurm, tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1)
    job = executor.submit(os.getenv, "SLURM_JOB_ID")  # runs in the job: the job's own id comes back
    # without sacct (no accounting database) submitit never learns that a job died without a result, so
    # job.result() alone could wait forever: wait for the result file with a deadline instead
    deadline = time.monotonic() + 120
    while not job.paths.result_pickle.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"no result from submitit job {job.job_id}\nstderr: {job.stderr()}\n{logs(slurm)}")
        time.sleep(0.5)
    assert job.result() == job.job_id
    record = wait_for_jobcomp(slurm, job.job_id)
    assert record["JobState"] == "COMPLETED", f"{record}\n{logs(slurm)}"
    assert record["Name"] == "submitit"
