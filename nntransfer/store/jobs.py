"""Jobs of the computed tables: DataJoint's job reservation, plus what a cluster needs.

DataJoint reserves a job atomically (``UPDATE ... WHERE status='pending'``) and records host, pid and
connection id. On top of that:

* **Heartbeats.** Every process that holds a job keeps a row in :class:`Worker` up to date from a
  background thread with its own connection (every ``NNTRANSFER_HEARTBEAT_INTERVAL`` s, default 10),
  naming the job it holds. A reservation is alive while its holder's heartbeat is fresh
  (``NNTRANSFER_HEARTBEAT_TIMEOUT`` s, default 120) or, on the same machine, while the holding process
  runs. Connection ids are not used: they change when a connection is re-opened, and MySQL hides other
  users' connections.
* **Conditional releases.** A job is put back only with a single ``UPDATE`` that also matches the
  holder's host, pid and reservation time, so a reservation another worker has taken meanwhile is
  never released.
* **Stopping is not failing.** :class:`TrainingInterrupted`, ``SystemExit`` (SIGTERM) and
  ``KeyboardInterrupt`` release the job instead of recording an error; a lost reservation or a lost
  connection records nothing.
* **Retries.** A ``ConfigError`` is recorded at once; other errors are retried up to the session's
  ``max_retries`` times (default 0) before they are recorded.

Whoever populates passes its settings as a :class:`JobSession` on the table instance (``table.session = ...``):
the stop token of its run, retries, run settings, the recipe, and the heartbeat of this worker.
"""
from __future__ import annotations

import atexit
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datajoint as dj
from datajoint.condition import make_condition
from datajoint.jobs import Job

from ..core.compat import make_hash
from ..core.keys import key_ident
from ..core.stop import StopToken, signals_deferred
from ..errors import ConfigError, TrainingInterrupted
from . import internals
from .codec import delete_files
from .schema import schema

logger = logging.getLogger(__name__)


class _StopsAreNotErrors(logging.Filter):
    """DataJoint's ``populate`` logs every exception it suppresses at ERROR, a requested stop too; a stop is not an
    error, and :meth:`ReservedJobs.error` has said it once, at INFO, with the experiment's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(record.msg, (TrainingInterrupted, KeyboardInterrupt))


logging.getLogger("datajoint").addFilter(_StopsAreNotErrors())

HEARTBEAT_INTERVAL = float(os.environ.get("NNTRANSFER_HEARTBEAT_INTERVAL", "10"))
HEARTBEAT_TIMEOUT = float(os.environ.get("NNTRANSFER_HEARTBEAT_TIMEOUT", "120"))


class LostReservation(RuntimeError):
    """Another worker took this job over (this process's heartbeat was missed for longer than the timeout)."""


@schema
class Worker(dj.Manual):
    definition = """
    # processes that hold jobs; a reservation is alive while its holder's heartbeat is fresh
    host: varchar(255)
    pid: int32
    ---
    namespace: varchar(96)          # boot id and PID namespace: where `pid` can be checked directly
    proc_start: float64             # start time of the process (a later process may reuse the PID)
    heartbeat: datetime(3)
    job_table="": varchar(64)       # the job it holds, if any
    job_hash="": varchar(32)
    gpu="": varchar(64)             # CUDA_VISIBLE_DEVICES of the process
    """


@schema
class JobAttempt(dj.Manual):
    definition = """
    # failed attempts of jobs that are retried
    job_table: varchar(64)
    job_hash: char(32)
    ---
    failures: int32
    """


# -- this process ------------------------------------------------------------------------------
def _namespace() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = platform.node()
    try:
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pid_namespace = 0
    return f"{boot}:{pid_namespace}"[:96]


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(proc.create_time(), 2)
    except psutil.Error:
        return None


def _process_alive(pid: int, start: float) -> bool:
    found = _start_time(pid)
    return found is not None and abs(found - start) < 0.05


def this_process() -> dict:
    """Which process this is, so that others can tell later whether it still runs (:func:`process_gone`)."""
    return {"host": platform.node(), "pid": os.getpid(), "namespace": _namespace(),
            "proc_start": _start_time(os.getpid()) or 0.0}


def process_gone(identity: dict) -> bool:
    """True if ``identity`` (from :func:`this_process`) is a process on this machine that no longer runs; False if it
    runs, or if it is elsewhere (another machine or PID namespace: only its heartbeat can tell)."""
    if identity.get("namespace") != _namespace() or identity.get("host") != platform.node():
        return False
    return not _process_alive(int(identity.get("pid", 0)), float(identity.get("proc_start", 0.0)))


def job_hash(pk: dict) -> str:
    return make_hash({k: pk[k] for k in sorted(pk)})


class Heartbeat:
    """This process's row in :class:`Worker`, refreshed by a daemon thread on a connection of its own."""

    def __init__(self):
        self.job = ("", "")
        self._thread = None
        self._conn = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _connection(self):
        from . import db

        if self._conn is None:
            self._conn = db.new_connection()
        return self._conn

    def beat(self) -> None:
        from . import db

        with self._lock:
            conn = self._connection()
            db.retrying(lambda: self._write(conn), conn, "the database (heartbeat)")

    def _write(self, conn) -> None:
        table = Worker.full_table_name
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        values = (_namespace(), _start_time(os.getpid()) or 0.0, self.job[0], self.job[1], gpu)
        where = (platform.node(), os.getpid())
        updated = conn.query(f"UPDATE {table} SET namespace=%s, proc_start=%s, heartbeat=CURRENT_TIMESTAMP(3), "
                             "job_table=%s, job_hash=%s, gpu=%s WHERE host=%s AND pid=%s", args=values + where)
        if updated.rowcount == 0:
            try:
                conn.query(f"INSERT INTO {table} (host, pid, namespace, proc_start, heartbeat, job_table, job_hash, "
                           "gpu) VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP(3), %s, %s, %s)", args=where + values)
            except dj.errors.DuplicateError:
                pass  # the row exists after all; the next beat updates it

    def hold(self, table_name: str, pk: dict | None) -> None:
        """Record the job this process holds (None: none) and beat now; start the thread on first use."""
        self.job = (table_name, job_hash(pk)) if pk is not None else ("", "")
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nntransfer-heartbeat", daemon=True)
            self._thread.start()
        try:
            self.beat()
        except Exception as err:  # noqa: BLE001 - a missed beat is not an error of the job; the thread retries
            logger.warning("heartbeat failed: %s", err)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            try:
                self.beat()
            except Exception as err:  # noqa: BLE001 - keep beating; the reservation check reports a lost job
                logger.warning("heartbeat failed: %s", err)

    def close(self) -> None:
        """Stop beating and remove this process's row (when a worker ends, and at exit)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)  # a later hold() starts a fresh thread instead of finding this one still alive
        if self._conn is None:
            return
        if not self._lock.acquire(timeout=2):  # a beat is waiting for the server: leave the row to time out
            return
        try:
            self._conn.query(f"DELETE FROM {Worker.full_table_name} WHERE host=%s AND pid=%s",
                             args=(platform.node(), os.getpid()), reconnect=False)
            self._conn.close()
        except Exception:  # noqa: BLE001 - at exit; a stale row is ignored once its heartbeat is old
            pass
        finally:
            self._conn = None
            self._lock.release()


_PROCESS_HEARTBEAT: dict[int, Heartbeat] = {}


def process_heartbeat() -> Heartbeat:
    """The heartbeat of this process: one :class:`Worker` row per process (its key is host and pid), so one thread
    and one connection, however many sessions (plain ``populate`` calls included) come and go. Keyed by pid: a
    forked child never shares its parent's connection."""
    pid = os.getpid()
    if pid not in _PROCESS_HEARTBEAT:
        _PROCESS_HEARTBEAT.clear()
        _PROCESS_HEARTBEAT[pid] = Heartbeat()
    return _PROCESS_HEARTBEAT[pid]


@dataclass
class JobSession:
    """What populating a table needs from whoever populates it, passed as an object (``table.session = ...``).

    ``stop``: the stop token of this run (SIGTERM/Ctrl-C request it; no new job is taken once it is set);
    ``max_retries``: retry failing jobs (other than ``ConfigError``) this many times before recording the error;
    ``recipe``: the file the experiments came from (provenance); ``run_settings``: per result key
    (:func:`~nntransfer.core.keys.key_ident`), the run fields of each config part this run uses instead of the
    stored ones (progress bars, TensorBoard, loader workers, checkpoint cadence, ...); ``names``: per result key, how
    messages name it; ``heartbeat``: this worker's row in :class:`Worker`; ``on_start``: called with a job's name
    when this worker takes it (a Slurm worker records which experiment its log holds).
    messages name it; ``heartbeat``: this worker's row in :class:`Worker`; ``on_evaluation``: called as
    ``on_evaluation(key, info)`` after every validation of a job this worker trains (``info``: ``epoch``, ``step``,
    ``score``, ``validation``; see the trainer's ``cb``), e.g. by a search that prunes trials.
    """

    stop: StopToken = field(default_factory=StopToken)
    max_retries: int = 0
    recipe: str | None = None
    run_settings: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)
    heartbeat: Heartbeat = field(default_factory=process_heartbeat)
    on_start: Callable[[str], None] | None = None
    on_evaluation: Callable[[dict, dict], None] | None = None
    #: the job this worker holds now (its primary key) and the table instance it is populating, or None
    holding: dict | None = None
    holding_table: object = None
    _after_commit: list = field(default_factory=list)
    _after_rollback: list = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {self.max_retries!r}")

    def describe(self, key: dict) -> str:
        """How messages name a job: its experiment's name, seed and step when the session knows them."""
        return self.names.get(key_ident(key)) or f"job {key_ident(key)}"

    def hold(self, table, key: dict | None) -> None:
        """Record the job in hand (None: none) and let the heartbeat name it."""
        self.holding, self.holding_table = (dict(key), table) if key is not None else (None, None)
        self.heartbeat.hold(table.table_name, key)

    def delete_after_commit(self, paths: list) -> None:
        """Store files to delete once the job's result has committed (checkpoints of a finished job)."""
        self._after_commit.extend(paths)

    def delete_on_rollback(self, paths: list) -> None:
        """Store files the job's insert wrote: deleted if its transaction rolls back (no row references them then)."""
        self._after_rollback.extend(paths)

    def committed(self) -> None:
        paths, self._after_commit, self._after_rollback = self._after_commit, [], []
        delete_files(paths)

    def aborted(self) -> None:
        # the transaction rolled back: the rows it dropped, so their files, are still there; the files it wrote for
        # its own rows are referenced by none
        paths, self._after_commit, self._after_rollback = self._after_rollback, [], []
        delete_files(paths)

    def close(self) -> None:
        self.heartbeat.close()


# -- the job table -----------------------------------------------------------------------------
class ReservedJobs(Job):
    """DataJoint's job table of one computed table, with heartbeats, conditional releases and retries."""

    def _holder(self) -> dict:
        return {"host": platform.node(), "pid": os.getpid()}

    def _update_held(self, key: dict, assignments: str, args: tuple, holder: dict) -> bool:
        """One UPDATE of the job ``key`` that only applies while ``holder`` still holds it."""
        qi = self.adapter.quote_identifier
        where = make_condition(self, internals.job_key(self, key), set())
        held = " AND ".join(f"{qi(name)}=%s" for name in holder)
        query = f"UPDATE {self.full_table_name} SET {assignments} WHERE {where} AND {qi('status')}='reserved' AND {held}"
        return self.connection.query(query, args=tuple(args) + tuple(holder.values())).rowcount == 1

    def _pending_assignments(self, delay: float) -> str:
        qi = self.adapter.quote_identifier
        return (f"{qi('status')}='pending', {qi('host')}='', {qi('pid')}=0, {qi('connection_id')}=0, "
                f"{qi('reserved_time')}=NULL, "
                f"{qi('scheduled_time')}=CURRENT_TIMESTAMP(3) + {self.adapter.interval_expr(int(delay), 'second')}")

    def release(self, key: dict, delay: float = 0, holder: dict | None = None) -> bool:
        """Put a reserved job back in the queue if ``holder`` (default: this process) still holds it."""
        return self._update_held(key, self._pending_assignments(delay), (), holder or self._holder())

    # -- DataJoint's hooks, called by populate(reserve_jobs=True) -----------------------------
    @property
    def session(self) -> JobSession:
        return self.target.session

    def reserve(self, key: dict) -> bool:
        if self.session.stop.requested:
            return False  # stopping: take no new job
        if not super().reserve(key):
            return False
        self.session.hold(self.target, internals.job_key(self, key))
        if self.session.on_start is not None:
            self.session.on_start(self.session.describe(key))
        return True

    def complete(self, key: dict, duration: float | None = None) -> None:
        self.session.hold(self.target, None)
        self.session.committed()
        super().complete(key, duration)
        (JobAttempt & {"job_table": self.target.table_name, "job_hash": job_hash(internals.job_key(self, key))}).delete_quick()

    def error(self, key: dict, error_message: str, error_stack: str | None = None) -> None:
        # a second signal (Ctrl-C again, a parent passing the stop on) waits until the job is settled: cut short, a
        # stopped job would stay reserved and a failure unrecorded
        with signals_deferred():
            self._settle(key, error_message, error_stack)

    def _settle(self, key: dict, error_message: str, error_stack: str | None) -> None:
        """Release a stopped job, or retry or record a failed one (``error``'s work; the exception is being handled)."""
        from . import db

        error = sys.exc_info()[1]
        self.session.aborted()
        self.session.hold(self.target, None)
        if isinstance(error, KeyboardInterrupt):
            self.session.stop.request("KeyboardInterrupt")
        what = self.session.describe(key)
        if isinstance(error, (TrainingInterrupted, SystemExit, KeyboardInterrupt)):
            released = self.release(key)
            logger.info("%s %s (%s)", what, "released; the next worker resumes it" if released
                        else "was not held by this worker any more", error)
            return
        if isinstance(error, LostReservation):
            logger.error("%s not recorded as failed: %s", what, error)
            return
        if error is not None and db.is_connection_error(error):
            # the job cannot go on here; once the connection is back it goes back to the queue (not an error)
            released = db.retrying(lambda: self.release(key), self.connection, "the database")
            logger.warning("%s %s after a lost connection (%s)", what, "released" if released else "not held any more",
                           str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
            return
        if not isinstance(error, ConfigError) and self._retry(key, error_message):
            return
        self._record_error(key, error_message, error_stack)

    def _retry(self, key: dict, error_message: str) -> bool:
        ident = {"job_table": self.target.table_name, "job_hash": job_hash(internals.job_key(self, key))}
        failures = 1 + (int((JobAttempt & ident).fetch1("failures")) if JobAttempt & ident else 0)
        if failures > self.session.max_retries:
            (JobAttempt & ident).delete_quick()
            return False
        if failures == 1:
            JobAttempt.insert1(dict(ident, failures=failures), skip_duplicates=True)
        else:
            JobAttempt.update1(dict(ident, failures=failures))
        delay = min(300, 5 * 2 ** (failures - 1))
        if self.release(key, delay=delay):
            logger.warning("%s failed (attempt %d of %d): %s; retrying in %d s", self.session.describe(key), failures,
                           self.session.max_retries + 1, error_message.splitlines()[0] if error_message else "", delay)
        return True

    def _record_error(self, key: dict, error_message: str, error_stack: str | None) -> None:
        from datajoint.jobs import ERROR_MESSAGE_LENGTH, TRUNCATION_APPENDIX

        if len(error_message) > ERROR_MESSAGE_LENGTH:
            error_message = error_message[: ERROR_MESSAGE_LENGTH - len(TRUNCATION_APPENDIX)] + TRUNCATION_APPENDIX
        qi = self.adapter.quote_identifier
        assignments = f"{qi('status')}='error', {qi('completed_time')}=CURRENT_TIMESTAMP(3), {qi('error_message')}=%s"
        if self._update_held(key, assignments, (error_message,), self._holder()):
            if error_stack is not None:
                self.update1({**internals.job_key(self, key), "error_stack": error_stack})
        else:
            logger.error("%s failed but is no longer held by this worker: %s", self.session.describe(key), error_message)

    # -- for the keep-alive callback ------------------------------------------------------------
    def still_held(self, key: dict) -> bool:
        """False if another worker holds the job now (True if this process holds it or nobody reserved it)."""
        rows = (self & internals.job_key(self, key)).proj("status", "host", "pid", "connection_id").to_dicts()
        if not rows or rows[0]["status"] != "reserved":
            return True  # populated without reservation (a pending or error row is nobody's), or reclaimed, not yet taken
        row = rows[0]
        held = row["host"] == platform.node() and row["pid"] == os.getpid()
        if held and row["connection_id"] != self.connection.connection_id:  # re-opened: re-take the reservation
            qi = self.adapter.quote_identifier
            self._update_held(key, f"{qi('connection_id')}=%s", (self.connection.connection_id,), self._holder())
        return held


class _JobsDescriptor:
    """``Table.jobs`` giving a :class:`ReservedJobs` (on the class and on instances)."""

    def __get__(self, obj, objtype=None):
        if obj is None:
            obj = objtype()
        if obj._jobs is None:
            jobs = ReservedJobs(obj)
            if not jobs.is_declared:
                from . import db

                with db.advisory_lock(f"declare:{jobs.database}", jobs.connection):
                    if not jobs.is_declared:
                        jobs.declare()
            obj._jobs = jobs
        return obj._jobs


def keep_alive(table, key: dict, every: float = 5.0):
    """The trainer's ``cb``: keeps the connection open and stops training if the reservation was lost.

    Cheap enough to be called per batch: it touches the database at most every ``every`` seconds.
    """
    from . import db

    conn = table.connection
    jobs = table.jobs
    last = [0.0]

    def cb(*_args, **_kwargs):
        now = time.monotonic()
        if now - last[0] < every:
            return
        last[0] = now
        with db.lock:
            held = db.retrying(lambda: jobs.still_held(key), conn, "the database")
        if not held:
            raise LostReservation(f"job {internals.job_key(jobs, key)} was taken over by another worker after this one's "
                                  f"heartbeat was missing for {HEARTBEAT_TIMEOUT:.0f} s; stopping this copy")

    return cb


def reporting_evaluations(cb, on_evaluation: Callable[[dict, dict], None], key: dict):
    """``cb`` that also hands every evaluation the trainer reports (``info`` with a ``score``) to ``on_evaluation``."""

    def composed(*args, **kwargs):
        cb(*args, **kwargs)
        info = kwargs.get("info")
        if isinstance(info, dict) and info.get("score") is not None:
            on_evaluation(dict(key), dict(info, epoch=kwargs.get("epoch")))

    return composed


# -- reclaiming the jobs of dead workers ---------------------------------------------------------
def _reservations(table, keys: list[dict] | None) -> list[tuple[dict, dict, bool]]:
    """``(job key, job row, alive)`` of the reserved jobs of ``table`` (of ``keys``, or all).

    Alive: on this machine, the holding process still runs and names the job (or reserved it less than
    ``HEARTBEAT_TIMEOUT`` ago); elsewhere, its heartbeat is fresh and names the job, or the reservation is that young.
    """
    jobs = table.jobs
    conn = jobs.connection
    qi = jobs.adapter.quote_identifier
    timeout = jobs.adapter.interval_expr(int(HEARTBEAT_TIMEOUT), "second")
    pk = jobs.primary_key
    cols = ", ".join(qi(c) for c in pk)
    reserved = conn.query(
        f"SELECT {cols}, {qi('host')}, {qi('pid')}, {qi('reserved_time')}, "
        f"({qi('reserved_time')} >= CURRENT_TIMESTAMP(3) - {timeout}) AS fresh "
        f"FROM {jobs.full_table_name} WHERE {qi('status')}='reserved'", as_dict=True).fetchall()
    if keys is not None:
        wanted = {job_hash({k: key[k] for k in pk}) for key in keys}
        reserved = [r for r in reserved if job_hash({k: r[k] for k in pk}) in wanted]
    if not reserved:
        return []
    workers = {(w["host"], w["pid"]): w for w in conn.query(
        f"SELECT host, pid, namespace, proc_start, job_table, job_hash, "
        f"(heartbeat >= CURRENT_TIMESTAMP(3) - {timeout}) AS fresh FROM {Worker.full_table_name}",
        as_dict=True).fetchall()}
    here = _namespace()
    out = []
    for row in reserved:
        key = {k: row[k] for k in pk}
        worker = workers.get((row["host"], row["pid"]))
        holds = worker is not None and (worker["job_table"], worker["job_hash"]) == (table.table_name, job_hash(key))
        if worker is not None and worker["namespace"] == here:  # the holder's PID can be checked directly
            alive = _process_alive(row["pid"], worker["proc_start"]) and (holds or bool(row["fresh"]))
        else:
            alive = (holds and bool(worker["fresh"])) or bool(row["fresh"])
        out.append((key, row, alive))
    return out


def dead_reservations(table, keys: list[dict] | None = None) -> list[dict]:
    """Keys of the reserved jobs (of ``keys``, or all) whose holder is dead: the next :func:`reclaim` re-queues them."""
    return [key for key, _, alive in _reservations(table, keys) if not alive]


def reclaim(table, keys: list[dict] | None = None) -> int:
    """Put back the reserved jobs (of ``keys``, or all) whose holder is dead; returns how many.

    Dead: on this machine, the holding process is gone; anywhere, its heartbeat is older than
    ``HEARTBEAT_TIMEOUT`` (or it never beat and the reservation is older than that).
    """
    jobs = table.jobs
    # rows of processes that died without cleaning up (SIGKILL) are dropped after a day
    jobs.connection.query(f"DELETE FROM {Worker.full_table_name} WHERE heartbeat < CURRENT_TIMESTAMP(3) - "
                          f"{jobs.adapter.interval_expr(1, 'day')}")
    count = 0
    for key, row, alive in _reservations(table, keys):
        if alive:
            continue
        holder = {"host": row["host"], "pid": row["pid"], "reserved_time": row["reserved_time"]}
        if jobs.release(key, holder=holder):
            logger.warning("re-queued job %s of %s, whose worker %s:%s is gone", key, _table_name(table),
                           row["host"], row["pid"])
            count += 1
    return count


def _table_name(table) -> str:
    """The class name of a table given as its class or an instance (``TrainedModel``)."""
    return table.__name__ if isinstance(table, type) else type(table).__name__


def worker_rows() -> dict:
    """``{(host, pid): {"gpu": ..., "fresh": bool}}`` of the processes that beat."""
    from . import bind

    bind()
    timeout = Worker().adapter.interval_expr(int(HEARTBEAT_TIMEOUT), "second")
    rows = Worker.connection.query(
        f"SELECT host, pid, gpu, (heartbeat >= CURRENT_TIMESTAMP(3) - {timeout}) AS fresh "
        f"FROM {Worker.full_table_name}", as_dict=True).fetchall()
    return {(r["host"], r["pid"]): {"gpu": r["gpu"], "fresh": bool(r["fresh"])} for r in rows}


__all__ = ["Heartbeat", "JobAttempt", "JobSession", "LostReservation", "ReservedJobs", "Worker", "dead_reservations",
           "keep_alive", "process_gone", "reclaim", "reporting_evaluations", "this_process", "worker_rows"]
