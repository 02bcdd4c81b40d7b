"""Workers on a cluster through submitit (``pip install nntransfer[slurm]``).

Every submitted worker runs :func:`nntransfer.recipes.workers.work` on the same plan against the same
database, so the cluster nodes must reach a shared server: set ``DJ_HOST``/``DJ_USER``/``DJ_PASS``
(and ``DJ_BACKEND``) in the environment the jobs inherit. The embedded database only serves
workers on the machine it runs on (``cluster="local"``).
"""
from __future__ import annotations

import os

from .plan import Target
from .workers import work


def _remote_worker(targets: list[Target]) -> dict:
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cpus))
    return work(targets)


def submit_workers(targets: list[Target], jobs: int = 1, folder: str = "nntransfer_jobs", cluster: str | None = None,
                   partition: str | None = None, gpus: int = 0, cpus: int = 4, time_min: int = 24 * 60,
                   mem_gb: int = 16):
    """Submit ``jobs`` workers; returns the submitit jobs (``job.result()`` waits for one)."""
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError("submitting workers needs submitit: pip install 'nntransfer[slurm]'") from err
    from .. import db

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    if executor.cluster == "slurm" and not db.server_configured():
        raise RuntimeError("Slurm workers need a shared database server: set DJ_HOST, DJ_USER, DJ_PASS "
                           "(and DJ_BACKEND) before submitting; the embedded database is local to this machine")
    params = {"timeout_min": time_min, "cpus_per_task": cpus, "mem_gb": mem_gb, "name": "nntransfer-worker"}
    if gpus:
        params["gpus_per_node"] = gpus
    if partition:
        params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return [executor.submit(_remote_worker, targets) for _ in range(jobs)]
