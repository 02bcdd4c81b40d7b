"""Workers on a Slurm cluster through submitit (``pip install nntransfer[slurm]``).

Every submitted worker puts the recipe's folder on ``sys.path``, imports the recipe and ``--import`` modules,
then runs :func:`nntransfer.orchestration.workers.work` on the same plan against the same database. The nodes must
reach a shared server (``DJ_HOST``/``DJ_USER``/``DJ_PASS``/``DJ_BACKEND`` in the environment the jobs
inherit) and a shared ``nntransfer`` store. Where every node is this machine (a workstation with Slurm),
``single_node=True`` lets the jobs use this machine's embedded database and default store instead.

How a job ends early, and what the worker does (see docs/how-to/slurm.md):

* **Time limit**: Slurm sends USR2 ``signal_delay_s`` seconds before the limit (submitit's ``--signal``). The
  worker stops gracefully (the trainer checkpoints, the job is released), then submitit requeues the Slurm job
  (at most ``max_requeues`` times) and the next attempt resumes from that checkpoint.
* **Preemption, ``scontrol requeue``**: SIGTERM, then SIGKILL after the cluster's ``KillWait`` (preemption:
  ``GraceTime``). The worker checkpoints and releases on SIGTERM; Slurm requeues the job itself.
* **``scancel``**: SIGTERM: checkpoint and release; the experiment stays pending for the next worker.

Nothing here trusts submitit's job states: without Slurm accounting (``sacct``) they stay UNKNOWN, and a result
file is written by every attempt of a requeued job. :func:`wait_for_workers` follows the jobs with ``squeue``
and the experiments with the tables.
"""
from __future__ import annotations

import logging
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..core.keys import key_ident
from ..core.stop import StopToken
from ..errors import ConfigError
from ..store import db
from .plan import Target, states
from .workers import WorkerSettings, prepare_worker, work

logger = logging.getLogger(__name__)

#: the file in the jobs folder that says which job log holds which experiment's training
EXPERIMENT_INDEX = "experiments.log"
#: Slurm job states after which a job never runs again (a requeued job is PENDING again, not one of these)
FINAL_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                          "DEADLINE", "PREEMPTED", "REVOKED"})
#: the state :func:`job_states` gives a job the controller no longer lists (it finished longer than MinJobAge ago)
GONE = "GONE"


class RemoteWorker:
    """The callable submitit runs in a Slurm job; checkpointable, so submitit requeues it after a time limit.

    It runs :func:`~nntransfer.orchestration.workers.work` on ``targets``, or ``task(settings, stop)`` when given
    (e.g. a search worker, which finds its targets as it goes)."""

    def __init__(self, targets: list[Target], settings: WorkerSettings, submit_host: str | None = None,
                 task: Callable | None = None):
        self.targets, self.settings, self.task = targets, settings, task
        #: set for single-node submissions: the jobs must run on the machine whose embedded database they use
        self.submit_host = submit_host

    def __call__(self) -> dict:
        import torch

        _log_to_stderr()
        if self.submit_host is not None and platform.node() != self.submit_host:
            raise ConfigError(f"this job runs on {platform.node()}, but it was submitted with single_node "
                              f"(--single-node) from {self.submit_host}, whose embedded database and store it "
                              "cannot reach; use a shared server and store for a cluster of several machines")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cpus))
        stop = StopToken()
        requeue = {}

        def time_limit(signum, frame):  # submitit's USR2: stop gracefully first, then let submitit requeue
            stop.request(f"{signal.Signals(signum).name} received: the job's time limit is near")
            logger.info("%s received: the time limit is near; checkpointing, then the job is requeued",
                        signal.Signals(signum).name)
            requeue["handler"], requeue["signum"] = submitit_handler, signum

        usr2 = getattr(signal, "SIGUSR2", None)
        submitit_handler = signal.getsignal(usr2) if usr2 is not None else None
        if usr2 is not None and callable(submitit_handler):
            signal.signal(usr2, time_limit)
        prepare_worker(self.settings)
        result = self.task(self.settings, stop) if self.task is not None \
            else work(self.targets, self.settings, stop, on_start=_record_start)
        # the job log's last line of nntransfer: how this worker ended (the test and a user reading the log wait for it)
        logger.info("worker %s: %d trained, %d failed", "stopped on request" if result.stopped else "done",
                    result.trained, len(result.errors))
        if requeue and result.stopped:
            requeue["handler"](requeue["signum"], None)  # checkpoint() below, scontrol requeue, exit
        return {"trained": result.trained, "errors": [(name, str(err)) for name, err in result.errors],
                "stopped": result.stopped}

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(RemoteWorker(self.targets, self.settings, self.submit_host,
                                                                self.task))


def _log_to_stderr() -> None:
    """nntransfer's messages (job taken, stop, release) go to the job's log (its stderr)."""
    root = logging.getLogger("nntransfer")
    if not any(getattr(h, "nntransfer_job_log", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.nntransfer_job_log = True
        handler.setFormatter(logging.Formatter("%(asctime)s nntransfer: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("nntransfer.trainer").setLevel(logging.WARNING)


def _record_start(name: str) -> None:
    """In a Slurm job: say in the job's log, and in the folder's index, that this job trains ``name`` now."""
    import submitit

    env = submitit.JobEnvironment()
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0")) + 1
    log = env.paths.stderr
    logger.info("training %s (Slurm job %s, attempt %d)", name, env.job_id, attempt)
    line = f"{datetime.now().isoformat(timespec='seconds')}\tjob {env.job_id} attempt {attempt}\t{name}\t{log}\n"
    try:  # one short append per line: lines of jobs writing at once do not mix
        with open(Path(env.paths.folder) / EXPERIMENT_INDEX, "a") as index:
            index.write(line)
    except OSError as err:  # the index is a convenience: never a reason to stop training
        logger.warning("could not add to %s: %s", Path(env.paths.folder) / EXPERIMENT_INDEX, err)


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
                   time_min: int = 24 * 60, mem_gb: int = 16, allow_local_store: bool = False,
                   signal_delay_s: int = 90, max_requeues: int = 3, single_node: bool = False,
                   task: Callable | None = None, name: str = "nntransfer-worker"):
    """Submit ``jobs`` workers; returns the submitit jobs (follow them with :func:`wait_for_workers`).

    ``gpus``: GPUs per job; ``time_min``: each job's time limit; ``signal_delay_s``: how long before it the worker is
    told to checkpoint (USR2); ``max_requeues``: how often a job that reaches its limit is requeued. ``single_node``:
    every node of the cluster is this machine, so the jobs may use its embedded database and default store (a job
    that lands elsewhere stops with an error). Every worker imports ``settings.recipe`` and ``settings.imports``
    before it takes a job. ``task``: what each job runs instead of training ``targets`` (see :class:`RemoteWorker`);
    ``name``: the jobs' name.
    """
    try:
        import submitit
    except ImportError as err:
        raise ConfigError("submitting workers needs submitit: pip install 'nntransfer[slurm]'") from err
    for name, value in (("signal_delay_s (--signal-delay)", signal_delay_s), ("max_requeues (--max-requeues)",
                                                                           max_requeues)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a whole number of 0 or more, got {value!r}")
    if time_min * 60 <= signal_delay_s:
        raise ConfigError(f"the time limit ({time_min} min) must be longer than the warning before it "
                          f"({signal_delay_s} s): raise --time or lower --signal-delay")

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=max_requeues)
    submit_host = None
    if executor.cluster == "slurm":
        if single_node:
            submit_host = platform.node()
        else:
            if not db.server_configured():
                raise ConfigError("Slurm workers need a shared database server: set DJ_HOST, DJ_USER, DJ_PASS "
                                  "(and DJ_BACKEND) before submitting; the embedded database is local to this "
                                  "machine (if every Slurm node is this machine, pass --single-node / "
                                  "single_node=True)")
            check_shared_store(allow_local_store)
    params = {"timeout_min": time_min, "cpus_per_task": cpus, "mem_gb": mem_gb, "name": name,
              "slurm_signal_delay_s": signal_delay_s}
    if gpus:
        params["gpus_per_node"] = gpus
    if partition:
        params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return [executor.submit(RemoteWorker(targets, settings, submit_host, task)) for _ in range(jobs)]


# -- following submitted jobs ------------------------------------------------------------------
def is_slurm_job(job) -> bool:
    """True for a job submitted to Slurm (not to submitit's local or debug executor)."""
    import submitit

    return isinstance(job, submitit.SlurmJob)


@dataclass(frozen=True)
class JobState:
    """A Slurm job as ``squeue`` shows it: ``state`` (``PENDING``, ``RUNNING``, ``COMPLETED``, ...; :data:`GONE` once
    the controller forgot it) and ``reason`` (why it waits, e.g. ``BeginTime`` after a requeue)."""

    job_id: str
    state: str
    reason: str = ""

    @property
    def finished(self) -> bool:
        """Finished for good: it will not run again (a requeued job is PENDING, not finished)."""
        return self.state in FINAL_STATES or self.state == GONE


def _slurm(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as err:
        raise ConfigError(f"{command[0]} not found: run this where Slurm's commands are on PATH") from err


def job_states(job_ids: list[str]) -> dict[str, JobState]:
    """``{job id: JobState}`` from ``squeue`` (every state, including recently finished jobs).

    A job the controller no longer lists finished longer ago than its ``MinJobAge``: :data:`GONE`. Raises
    ``RuntimeError`` when the controller cannot be asked.
    """
    if not job_ids:
        return {}
    out = _slurm(["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(job_ids), "--format=%i|%T|%r"])
    if out.returncode != 0 and "Invalid job id" not in out.stderr:  # squeue's answer when none of them is known
        raise RuntimeError(f"squeue failed ({out.returncode}): {out.stderr.strip()}")
    listed = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        listed[job_id.strip()] = JobState(job_id.strip(), state.strip(), "" if reason == "None" else reason.strip())
    return {job_id: listed.get(job_id, JobState(job_id, GONE)) for job_id in job_ids}


def accounting_problem() -> str | None:
    """None when Slurm's accounting (``sacct``) answers, else its complaint (e.g. accounting storage is disabled)."""
    try:
        out = _slurm(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID", "--starttime=now"])
    except ConfigError:
        return "sacct is not installed"
    text = (out.stderr or out.stdout).strip()
    return None if out.returncode == 0 and "disabled" not in text else (text.splitlines() or ["sacct failed"])[0]


def final_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: final state}`` from ``sacct`` for jobs ``squeue`` no longer lists (needs accounting)."""
    out = _slurm(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                  "--jobs=" + ",".join(job_ids)])
    found = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        job_id, _, state = line.partition("|")
        found[job_id] = state.split()[0] if state else ""
    return found


@dataclass
class WaitResult:
    """What :func:`wait_for_workers` saw: experiment steps ``trained`` and failed (``errors``: their labels) while it
    waited, steps still ``open`` (pending or reserved) at the end, each job's final state and log, and whether it
    gave up at its deadline (``timed_out``). A step several chains share (one pretraining) counts once."""

    trained: int = 0
    errors: list[str] = field(default_factory=list)
    open: list[str] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False


def _summary(jobs: dict[str, JobState], current: dict) -> str:
    by_state: dict[str, int] = {}
    for job in jobs.values():
        label = f"{job.state} ({job.reason})" if job.reason and job.state == "PENDING" else job.state
        by_state[label] = by_state.get(label, 0) + 1
    experiments: dict[str, int] = {}
    for state in current.values():
        experiments[state["state"]] = experiments.get(state["state"], 0) + 1
    return ("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) + "; experiments: " +
            ", ".join(f"{n} {s}" for s, n in sorted(experiments.items())))


def wait_for_workers(jobs: list, targets: list[Target], before: dict | None = None, poll: float = 10.0,
                     timeout: float | None = None, say: Callable[[str], None] = print) -> WaitResult:
    """Wait until every submitted job has finished for good (a requeued job has not), then count from the tables.

    ``jobs``: submitit jobs (or anything with ``job_id`` and ``paths.stderr``); ``before``: the targets' states when
    they were submitted (default: now), so that ``trained`` and ``errors`` count what changed meanwhile; ``poll``:
    seconds between looks; ``timeout``: seconds after which it stops waiting (``timed_out``; the jobs go on).
    Job states come from ``squeue`` (submitit's come from ``sacct``, which clusters without accounting lack, and its
    result files are written by every attempt of a requeued job); ``say`` gets a line whenever they change.
    """
    # one row per key: chains that share a step (one pretraining for several fine-tunings) count it once
    distinct = list({(t.table, key_ident(t.key)): t for t in targets}.values())
    before = before if before is not None else states(distinct)
    ids = [str(job.job_id) for job in jobs]
    problem = accounting_problem()
    if problem:
        say(f"Slurm has no accounting here (sacct: {problem}): job states come from squeue, experiment states "
            "from the tables")
    deadline = None if timeout is None else time.monotonic() + timeout
    result = WaitResult(logs={str(job.job_id): str(job.paths.stderr) for job in jobs})
    last_line, unreachable_since = "", None
    while True:
        try:
            current_jobs = job_states(ids)
            unreachable_since = None
        except RuntimeError as err:  # the controller may be restarting: keep asking, within the deadline
            if unreachable_since is None:
                unreachable_since = time.monotonic()
                say(f"cannot ask Slurm for the jobs' states ({err}); trying again")
            current_jobs = None
        if current_jobs is not None:
            line = _summary(current_jobs, states(distinct))
            if line != last_line:
                say(line)
                last_line = line
            if all(job.finished for job in current_jobs.values()):
                break
        if deadline is not None and time.monotonic() > deadline:
            result.timed_out = True
            say(f"stopped waiting after {timeout:.0f} s; the jobs go on (nntransfer status RECIPE shows their progress)")
            break
        time.sleep(poll)
    after = states(distinct)
    result.trained = sum(1 for t in distinct if after[t]["state"] == "done" and before[t]["state"] != "done")
    result.errors = [t.label for t in distinct if after[t]["state"] == "error" and before[t]["state"] != "error"]
    result.open = [t.label for t in distinct if after[t]["state"] in ("pending", "reserved")]
    final = job_states(ids) if current_jobs is None else current_jobs
    gone = [job_id for job_id, job in final.items() if job.state == GONE]
    accounted = final_states(gone) if gone and not problem else {}
    result.jobs = {job_id: accounted.get(job_id, "finished") if job.state == GONE else job.state
                   for job_id, job in final.items()}
    return result


__all__ = ["EXPERIMENT_INDEX", "FINAL_STATES", "GONE", "JobState", "RemoteWorker", "WaitResult", "accounting_problem",
           "check_shared_store", "is_slurm_job", "job_states", "submit_workers", "wait_for_workers"]
