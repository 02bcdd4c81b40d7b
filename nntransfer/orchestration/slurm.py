"""Workers on a cluster through submitit (``pip install nntransfer[slurm]``).

Every submitted worker puts the recipe's folder on ``sys.path``, imports the recipe and ``--import`` modules,
then runs :func:`nntransfer.orchestration.workers.work` on the same plan against the same database. The nodes must
reach a shared server (``DJ_HOST``/``DJ_USER``/``DJ_PASS``/``DJ_BACKEND`` in the environment the jobs
inherit) and a shared ``nntransfer`` store: submitting Slurm workers with the default store, a folder
under ``$NNTRANSFER_HOME`` on this machine, is refused unless ``allow_local_store=True``.

Time limits and preemption: Slurm signals the job (submitit asks for USR2 shortly before the limit;
SIGTERM on preemption and ``scancel``). The worker then stops gracefully: the trainer checkpoints, the
job is released, and on USR2 submitit requeues the worker, which resumes from that checkpoint.
"""
from __future__ import annotations

import os
import signal

from ..core.stop import StopToken
from ..errors import ConfigError
from ..store import db
from .plan import Target
from .workers import WorkerSettings, prepare_worker, work


class RemoteWorker:
    """The callable submitit runs on a node; checkpointable, so submitit requeues it after a time limit."""

    def __init__(self, targets: list[Target], settings: WorkerSettings):
        self.targets, self.settings = targets, settings

    def __call__(self) -> dict:
        import torch

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cpus))
        stop = StopToken()
        requeue = {}

        def time_limit(signum, frame):  # submitit's USR2: stop gracefully first, then let submitit requeue
            stop.request(f"{signal.Signals(signum).name}: time limit or preemption")
            requeue["handler"], requeue["signum"] = submitit_handler, signum

        usr2 = getattr(signal, "SIGUSR2", None)
        submitit_handler = signal.getsignal(usr2) if usr2 is not None else None
        if usr2 is not None and callable(submitit_handler):
            signal.signal(usr2, time_limit)
        prepare_worker(self.settings)
        result = work(self.targets, self.settings, stop)
        if requeue:
            requeue["handler"](requeue["signum"], None)  # checkpoint() below, requeue, exit
        return {"trained": result.trained, "errors": [(name, str(err)) for name, err in result.errors],
                "stopped": result.stopped}

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(RemoteWorker(self.targets, self.settings))


def check_shared_store(allow_local_store: bool = False) -> None:
    """Refuse Slurm workers that would write to this machine's private default store."""
    if allow_local_store or not db.store_is_default():
        return
    raise ConfigError(
        f"the DataJoint store 'nntransfer' is the default folder {db.store_location()} on this machine, which other "
        "nodes do not see (later steps would not find earlier steps' states). Configure a shared store in "
        "datajoint.json, e.g. \"stores\": {\"nntransfer\": {\"protocol\": \"file\", \"location\": "
        "\"/shared/path/nntransfer-store\"}} (or an s3 store), or pass --allow-local-store / allow_local_store=True "
        "if every node shares this machine's $NNTRANSFER_HOME"
    )


def submit_workers(targets: list[Target], settings: WorkerSettings, jobs: int = 1, folder: str = "nntransfer_jobs",
                   cluster: str | None = None, partition: str | None = None, gpus: int = 0, cpus: int = 4,
                   time_min: int = 24 * 60, mem_gb: int = 16, allow_local_store: bool = False):
    """Submit ``jobs`` workers; returns the submitit jobs (``job.result()`` waits for one).

    ``gpus``: GPUs per job. Every worker imports ``settings.recipe`` and ``settings.imports`` before it takes a job.
    """
    try:
        import submitit
    except ImportError as err:
        raise ConfigError("submitting workers needs submitit: pip install 'nntransfer[slurm]'") from err

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    if executor.cluster == "slurm":
        if not db.server_configured():
            raise ConfigError("Slurm workers need a shared database server: set DJ_HOST, DJ_USER, DJ_PASS "
                               "(and DJ_BACKEND) before submitting; the embedded database is local to this machine")
        check_shared_store(allow_local_store)
    params = {"timeout_min": time_min, "cpus_per_task": cpus, "mem_gb": mem_gb, "name": "nntransfer-worker"}
    if gpus:
        params["gpus_per_node"] = gpus
    if partition:
        params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return [executor.submit(RemoteWorker(targets, settings)) for _ in range(jobs)]
