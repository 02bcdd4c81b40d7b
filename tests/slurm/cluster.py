"""Start and stop the throwaway one-node Slurm cluster of ``cluster.sh`` from Python (tests).

``start_cluster(folder)`` runs ``cluster.sh start`` with ``NNTRANSFER_SLURM_DIR=folder`` and returns the
environment variables that point Slurm's commands (and submitit, which calls them) at that cluster;
``stop_cluster(folder)`` stops exactly the daemons started there. Debian's packages provide the binaries
(``.ci/run`` installs them; ``binaries_or_reason`` installs them with apt when missing and apt is usable).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).with_name("cluster.sh")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "munged"]


def _missing() -> list[str]:
    return [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]


def binaries_or_reason() -> str | None:
    """None when the cluster can run here (installing Slurm with apt if possible), else why not."""
    if os.geteuid() != 0:
        return "the test Slurm cluster runs its daemons as root (SlurmUser=root); run as root"
    if not _missing():
        return None
    if shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                       capture_output=True, timeout=600, env=env)
        if not _missing():
            return None
        return f"apt-get install {' '.join(PACKAGES)} failed (missing: {', '.join(_missing())})"
    return f"Slurm is not installed ({', '.join(_missing())} missing) and apt-get is not usable"


def _run(command: str, folder: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, NNTRANSFER_SLURM_DIR=str(folder))
    return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True,
                          timeout=timeout)


def start_cluster(folder) -> dict[str, str]:
    """Start the cluster with its state in ``folder``; returns the variables a client needs."""
    folder = Path(folder).resolve()
    started = _run("start", folder, timeout=120)
    if started.returncode != 0:
        raise RuntimeError(f"cluster.sh start failed ({started.returncode}):\n{started.stdout}{started.stderr}")
    path = os.environ.get("PATH", "")
    if "/usr/sbin" not in path.split(os.pathsep):
        path = os.pathsep.join(filter(None, [path, "/usr/sbin"]))
    return {"NNTRANSFER_SLURM_DIR": str(folder), "SLURM_CONF": str(folder / "slurm.conf"), "PATH": path}


def stop_cluster(folder_or_env) -> None:
    """Cancel the cluster's jobs and stop its daemons (nothing to do when it does not run)."""
    folder = folder_or_env["NNTRANSFER_SLURM_DIR"] if isinstance(folder_or_env, dict) else folder_or_env
    stopped = _run("stop", Path(folder), timeout=120)
    if stopped.returncode != 0:
        raise RuntimeError(f"cluster.sh stop failed ({stopped.returncode}):\n{stopped.stdout}{stopped.stderr}")


def jobcomp_records(env: dict[str, str]) -> list[dict[str, str]]:
    """Every record of jobcomp/filetxt in order: one per end of a job's run. A run that ends in a requeue is
    recorded ``PENDING`` (``scontrol requeue``, submitit's requeue at a time limit) or ``PREEMPTED`` (preempted in
    REQUEUE mode); the job's last record has its final state."""
    path = Path(env["NNTRANSFER_SLURM_DIR"]) / "jobcomp.txt"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" in fields:
            records.append(fields)
    return records


def jobcomp(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """The finished-job records of jobcomp/filetxt, by job id (the last record of a requeued job wins)."""
    return {record["JobId"]: record for record in jobcomp_records(env)}


def job_history(env: dict[str, str], job_id: str) -> list[str]:
    """The states in which each run of ``job_id`` ended, e.g. ``["PENDING", "COMPLETED"]`` after one requeue."""
    return [record["JobState"] for record in jobcomp_records(env) if record["JobId"] == str(job_id)]


#: states of a jobcomp record after which the job does not run again (PREEMPTED is not one: with
#: PreemptMode=REQUEUE a preempted job runs again)
FINAL = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def wait_for_jobcomp(env: dict[str, str], job_id: str, timeout: float = 60) -> dict[str, str]:
    """The final jobcomp record of ``job_id`` once the job has finished for good (TimeoutError after ``timeout``
    s); records of runs that ended in a requeue are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        record = jobcomp(env).get(str(job_id))
        if record is not None and record["JobState"] in FINAL:
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} has no final jobcomp record after {timeout}s\n{logs(env)}")
        time.sleep(0.5)


def logs(env: dict[str, str], lines: int = 30) -> str:
    """The last lines of the cluster's logs and the queue, for failure messages."""
    folder = Path(env["NNTRANSFER_SLURM_DIR"])
    parts = []
    for log in [*sorted((folder / "log").glob("*.log")), folder / "log" / "munged.out"]:
        if not log.exists():
            continue
        parts.append(f"----- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    queue = subprocess.run(["squeue"], env=dict(os.environ, **env), capture_output=True, text=True)
    parts.append(f"----- squeue\n{queue.stdout}{queue.stderr}")
    return "\n".join(parts)
