"""Workers: train the pending rows of a plan through DataJoint's job reservation, in one or many processes.

Every worker imports the user's code first (the recipe, ``imports=[...]`` / ``--import`` modules, the
script that called ``run()``), so that names registered there resolve in every process. SIGTERM and
SIGINT stop a worker gracefully: the trainer writes a checkpoint, the job is released, the worker
returns (exit code 0) and the next worker resumes. :func:`train_locally` is the one local dispatch that
``run()`` and the command line share.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.keys import key_ident
from ..core.stop import StopToken, signals_deferred
from ..errors import ConfigError, TrainingInterrupted
from ..store import bind, db
from ..store.jobs import JobSession, reclaim
from .plan import Target, by_table, states
from .recipes import recipe_folder_on_path, user_code_error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """How to train a plan locally: ``workers`` processes (``gpus``: the GPU ids to give them, one each,
    round-robin; default every visible GPU), what every worker imports first (``recipe`` and ``imports``: modules
    or ``.py`` files), ``poll`` seconds between looks for new work when idle, ``max_retries`` of failing jobs
    (ConfigErrors are never retried), and an optional ``timeout`` in seconds after which a worker stops looking."""

    workers: int = 1
    gpus: tuple[str, ...] | None = None
    poll: float = 1.0
    max_retries: int = 0
    recipe: str | None = None
    imports: tuple[str, ...] = ()
    timeout: float | None = None

    def __post_init__(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be 1 or more, got {self.workers!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {self.max_retries!r}")
        if self.gpus is not None:
            object.__setattr__(self, "gpus", parse_gpus(self.gpus))
        object.__setattr__(self, "imports", tuple(self.imports))
        if self.recipe is not None:  # the same file for workers that start elsewhere (a Slurm node's folder)
            object.__setattr__(self, "recipe", os.path.abspath(self.recipe))

    @property
    def user_code(self) -> list[str]:
        """What a worker imports before it takes a job: a Python recipe (its registrations), then ``imports``."""
        own = [os.path.abspath(self.recipe)] if self.recipe and str(self.recipe).endswith(".py") else []
        return own + list(self.imports)


@dataclass
class WorkResult:
    """What training a plan did: jobs trained here, errors ``[(target label, exception or message)]``, whether it
    stopped on request (SIGTERM/Ctrl-C: the job in hand was checkpointed and released), worker processes that
    died (one line each)."""

    trained: int = 0
    errors: list = field(default_factory=list)
    stopped: bool = False
    dead: list = field(default_factory=list)

    def add(self, other: "WorkResult") -> None:
        self.trained += other.trained
        self.errors += other.errors
        self.stopped |= other.stopped
        self.dead += other.dead


# -- the user's code ---------------------------------------------------------------------------
class _ScriptStopped(BaseException):
    """Raised by run() while a worker imports the script that called it: the script's work is the parent's."""


_importing_script: contextvars.ContextVar[bool] = contextvars.ContextVar("nntransfer_importing_script", default=False)


def importing_script() -> bool:
    """True while a worker imports the user's script (``run()`` then stops the import instead of running)."""
    return _importing_script.get()


def stop_script_import() -> None:
    raise _ScriptStopped()


def import_user_code(imports: list[str] | tuple[str, ...] = ()) -> None:
    """Import modules (``package.module``) and files (``path/to/file.py``) so their registrations exist here.

    A file is imported as a module (not as ``__main__``), with its folder on ``sys.path`` as Python does for a
    script (a package next to it imports): an ``if __name__ == "__main__":`` block does not run, and a top-level
    ``run(...)`` call ends the import there (what the file registered before it counts).
    """
    for item in imports:
        path = Path(item)
        if item.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"cannot import {item!r}: no such file")
            if path.suffix != ".py":
                raise ConfigError(f"cannot import {item!r}: only Python files (.py) and modules register code")
            _import_file(path.resolve())
        else:
            try:
                importlib.import_module(item)
            except ImportError as err:
                raise ConfigError(f"cannot import module {item!r} ({err}); check --import / imports= and "
                                  "PYTHONPATH (the recipe's folder is on it)") from err
            except Exception as err:  # noqa: BLE001 - an error in the user's module, reported at its line
                raise user_code_error(err) from err


def prepare_worker(settings: "WorkerSettings") -> None:
    """What every worker does before it takes a job (local, ``nntransfer worker``, Slurm): the recipe's folder on
    ``sys.path`` as for a script, then the recipe (if Python) and the ``imports``, so their registrations exist."""
    if settings.recipe:
        recipe_folder_on_path(settings.recipe)
    import_user_code(settings.user_code)


def _import_file(path: Path) -> None:
    name = f"nntransfer_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if name in sys.modules:
        return
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as Python does for a script: its siblings import
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    token = _importing_script.set(True)
    try:
        spec.loader.exec_module(module)
    except _ScriptStopped:
        pass
    except Exception as err:  # noqa: BLE001 - reported at the file's line, as when the recipe is loaded
        sys.modules.pop(name, None)
        raise user_code_error(err, path) from err
    finally:
        _importing_script.reset(token)


def caller_code(depth: int = 2) -> list[str]:
    """What a worker must import to see the registrations of the code that called ``run()``."""
    frame = sys._getframe(depth)
    name, file = frame.f_globals.get("__name__"), frame.f_globals.get("__file__")
    if name == "__main__":
        return [file] if file and file.endswith(".py") else []
    if name and not name.startswith("nntransfer.") and name in sys.modules:
        return [name]
    return []


def _own_sys_path() -> list[str]:
    """This process's import path without folders that hold a different ``nntransfer`` (e.g. a clone's parent)."""
    package = Path(__file__).resolve().parents[1]  # this nntransfer
    out = []
    for entry in sys.path:
        candidate = Path(entry or os.getcwd()) / "nntransfer"
        if candidate.exists() and candidate.resolve() != package:
            continue
        out.append(entry or os.getcwd())
    return out


# -- one worker --------------------------------------------------------------------------------
def reclaim_dead_reservations(targets: list[Target]) -> int:
    """Put jobs back in the queue whose worker is gone (see :func:`nntransfer.store.jobs.reclaim`)."""
    return sum(reclaim(table, [t.key for t in chosen]) for table, chosen in by_table(targets))


def session_for(targets: list[Target], settings: WorkerSettings, stop: StopToken,
                on_start: Callable[[str], None] | None = None,
                on_evaluation: Callable[[dict, dict], None] | None = None) -> JobSession:
    """The job session of a worker: its stop token, retries, recipe, each target's run settings and name, what to
    call with a target's name when the worker takes it (``on_start``), and who hears of every evaluation of the jobs
    it trains (``on_evaluation``, see :class:`~nntransfer.store.jobs.JobSession`)."""
    return JobSession(stop=stop, max_retries=settings.max_retries, recipe=settings.recipe,
                      run_settings={key_ident(t.key): t.run_settings for t in targets},
                      names={key_ident(t.key): t.label for t in targets}, on_start=on_start,
                      on_evaluation=on_evaluation)


def work(targets: list[Target], settings: WorkerSettings = WorkerSettings(), stop: StopToken | None = None,
         on_start: Callable[[str], None] | None = None,
         on_evaluation: Callable[[dict, dict], None] | None = None) -> WorkResult:
    """Train pending targets in this process until none is left that this or another live worker can train.

    Safe to run in many processes at once: DataJoint's job reservation hands each key to one worker. A step whose
    predecessor is still training is picked up as soon as the predecessor is done. SIGTERM/SIGINT (or ``stop``)
    stop it gracefully: the job in hand is checkpointed and released, and the result says ``stopped``.
    ``on_start(name)`` is called whenever this worker takes a job; ``on_evaluation(key, info)`` hears of every
    validation of the jobs trained here (a search prunes with it).
    """
    from ..runner.signals import stop_on_signals  # the runner (torch) is needed only where a worker trains

    stop = stop or StopToken()
    bind()
    session = session_for(targets, settings, stop, on_start, on_evaluation)
    started = time.time()
    result = WorkResult()
    tables = [(table(), chosen) for table, chosen in by_table(targets)]
    for table, _ in tables:
        table.session = session
    try:
        with stop, stop_on_signals(stop):
            reclaim_dead_reservations(targets)
            while not stop.requested:
                progressed = False
                for table, chosen in tables:
                    if stop.requested:
                        break
                    progressed |= _populate(table, [t.key for t in chosen], session, result)
                if stop.requested:
                    break
                open_work = [t for t, s in states(targets).items() if s["state"] in ("pending", "reserved")]
                if not open_work:
                    break
                if settings.timeout is not None and time.time() - started > settings.timeout:
                    logger.warning("worker stops after %.0f s with %d targets open", settings.timeout, len(open_work))
                    break
                if not progressed and reclaim_dead_reservations(targets) == 0:
                    # others are training what is left (or its predecessors), or a retry is scheduled: wait
                    try:
                        time.sleep(settings.poll)
                    except KeyboardInterrupt:
                        break
    finally:
        with signals_deferred():  # a second Ctrl-C here comes after the job in hand is back in the queue
            _release_held(session)
            session.close()
    result.stopped = stop.requested  # said by whoever started the worker (the released job was logged)
    return result


def _populate(table, keys: list[dict], session: JobSession, result: WorkResult) -> bool:
    """One round of ``populate`` over ``keys``; returns whether anything was trained or failed."""
    try:
        outcome = table.populate(keys, reserve_jobs=True, suppress_errors=True, return_exception_objects=True)
    except (SystemExit, KeyboardInterrupt) as stop:  # DataJoint's SIGTERM handler, or a second Ctrl-C between jobs
        session.stop.request(type(stop).__name__)
        return False
    except Exception as err:
        if not db.is_connection_error(err):
            raise
        _recover_lost_connection(table, session, err)  # e.g. at the final COMMIT, which DataJoint does not catch
        return True
    # a stopped job was released and said where it stopped (the job table logs it): not an error
    failed = [(session.describe(k), e) for k, e in outcome["error_list"]
              if not isinstance(e, (TrainingInterrupted, KeyboardInterrupt))]
    result.trained += outcome["success_count"]
    result.errors += failed
    return bool(outcome["success_count"] or failed)


def _recover_lost_connection(table, session: JobSession, err: Exception) -> None:
    """After a lost connection escaped ``populate``: reconnect (with backoff), then settle the job in hand: complete
    if its result committed after all, else release it (its checkpoints are intact: the next worker resumes)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    logger.warning("lost the connection to the database during a job (%s); reconnecting", first)
    db.reconnect(table.connection)
    key = session.holding
    if key is None:
        session.aborted()
        return
    if table & key:  # the COMMIT went through before the connection broke
        table.jobs.complete(key)  # ... and deletes the files of the checkpoints it dropped
        logger.info("%s: its result had committed", session.describe(key))
        return
    session.aborted()  # rolled back: the checkpoint rows, so their files, are still there
    session.hold(table, None)
    if table.jobs.release(key):
        logger.info("%s released after the lost connection; it resumes from its last checkpoint",
                    session.describe(key))


def _release_held(session: JobSession) -> None:
    """A worker that stops (or fails) while holding a job puts it back (best effort: else its heartbeat ends and
    the next worker re-queues it)."""
    held_table = session.holding_table
    if held_table is None:
        return
    with contextlib.suppress(Exception):
        held_table.jobs.release(session.holding)


# -- many local workers ------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The GPUs local workers are spread over: ``CUDA_VISIBLE_DEVICES`` if set, else all that torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def parse_gpus(gpus) -> tuple[str, ...] | None:
    """``"0,2"`` or ``["0", "2"]`` -> ``("0", "2")``; None -> None (all visible GPUs)."""
    if gpus is None:
        return None
    text = ",".join(map(str, gpus)) if isinstance(gpus, (list, tuple)) else str(gpus)
    parsed = tuple(g.strip() for g in text.split(",") if g.strip())
    if not parsed:
        raise ConfigError(f"--gpus {text!r}: give GPU ids like 0,2")
    return parsed


def _worker_process(task: Callable, settings: WorkerSettings, threads: int, sys_path: list[str],
                    environ: dict, gpu: str | None, log_levels: dict, results) -> None:
    # the caller's environment now, not the fork server's from its start (a notebook may have changed it since)
    os.environ.clear()
    os.environ.update(environ)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything starts CUDA in this process
    sys.path[:] = sys_path
    _log_like_the_parent(log_levels)
    import torch

    torch.set_num_threads(threads)
    try:
        prepare_worker(settings)
        result = task(settings)
    except (ConfigError, db.DatabaseUnavailable) as err:
        print(f"nntransfer worker {os.getpid()}: error: {err}", file=sys.stderr)
        sys.exit(2)
    # what it did, for the parent's summary (exceptions as text: not every exception pickles)
    results.put((result.trained, [(name, f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e))
                                  for name, e in result.errors], result.stopped))


#: the loggers whose levels a worker process takes from its parent (the command line sets both)
_PARENT_LOGGERS = ("nntransfer", "nntransfer.trainer")


def _parent_log_levels() -> dict[str, int]:
    return {name: logging.getLogger(name).getEffectiveLevel() for name in _PARENT_LOGGERS}


def _log_like_the_parent(levels: dict[str, int]) -> None:
    """A worker process shows nntransfer's messages as its parent does (the command line shows INFO: released jobs,
    reconnects), except the stop request itself, which the parent, whose signal it passes on, says once."""
    root = logging.getLogger("nntransfer")
    if levels["nntransfer"] <= logging.INFO and not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("nntransfer: %(message)s"))
        root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("nntransfer.runner.signals").setLevel(logging.WARNING)


#: seconds between a stop request here and passing it on to the worker processes that are still running: a Ctrl-C
#: in a terminal reaches them too (one process group), and they are then releasing their jobs
PASS_ON_AFTER = 2.0


def _wait(procs, stop: StopToken) -> None:
    """Wait for the worker processes; a stop request (SIGTERM/SIGINT here) is passed on to them once (SIGTERM)."""
    from ..runner.signals import stop_on_signals

    passed_on, requested_at = False, None
    with stop_on_signals(stop):
        while any(p.is_alive() for p in procs):
            if stop.requested and not passed_on:
                requested_at = requested_at or time.monotonic()
                if time.monotonic() - requested_at >= PASS_ON_AFTER:
                    for p in procs:
                        if p.is_alive():
                            os.kill(p.pid, signal.SIGTERM)
                    passed_on = True
            try:
                for p in procs:
                    p.join(timeout=0.2)
            except KeyboardInterrupt:
                # a second Ctrl-C: this process trains nothing now; the workers (in the terminal's process group,
                # they got it too) release their jobs, and this one waits for them rather than leave them orphaned
                continue


@contextlib.contextmanager
def _children_skip_main():
    """Start children without re-running ``__main__``.

    multiprocessing re-imports the parent's main script in every child; a script that calls ``run()`` at
    top level without an ``if __name__ == "__main__":`` guard would then start workers recursively.
    The children import the script themselves (:func:`import_user_code`), stopping at its ``run()``.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__spec__ = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


@contextlib.contextmanager
def _safe_path():
    # The fork server is started with `python -c`, whose import path begins with the current folder: a
    # folder named `nntransfer` there (e.g. the parent of a clone) must not shadow the package.
    saved = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = saved


def _start(procs_args: list[tuple], context, fallback) -> tuple[list, object]:
    """Start the worker processes through ``context`` (the fork server); once that fails (the fork server died while
    starting, e.g. killed for memory), start this one and the rest through ``fallback`` (spawn), and say so. Returns
    the processes and the queue on which each says what it did."""
    results = context.SimpleQueue()
    procs = []
    with _safe_path(), _children_skip_main():
        for name, args in procs_args:
            proc = context.Process(target=_worker_process, name=name, args=(*args, results))
            try:
                proc.start()
            except (EOFError, ConnectionError, OSError) as err:
                if context is fallback:
                    raise
                logger.warning("the fork server could not start worker processes (%s: %s); starting them with "
                               "spawn instead (slower to start, same result)", type(err).__name__, err)
                context = fallback
                proc = context.Process(target=_worker_process, name=name, args=(*args, results))
                proc.start()
            procs.append(proc)
    return procs, results


def _collect(results, into: "WorkResult") -> None:
    """Add what the finished worker processes said (a process that died said nothing: see ``dead``)."""
    while not results.empty():
        trained, errors, stopped = results.get()
        into.add(WorkResult(trained, list(errors), stopped))


def run_workers(targets: list[Target], settings: WorkerSettings, stop: StopToken | None = None) -> WorkResult:
    """Train with ``settings.workers`` local processes sharing the database, each with its share of the cores
    (:func:`run_processes` running :func:`work` on ``targets``)."""
    return run_processes(functools.partial(work, targets), settings, stop)


def run_processes(task: Callable, settings: WorkerSettings, stop: StopToken | None = None) -> WorkResult:
    """Run ``task(settings, stop)`` (a picklable callable returning a :class:`WorkResult`, e.g. :func:`work` on a
    plan, or a search worker) in ``settings.workers`` local processes sharing the database, each with its share of
    the cores.

    Without GPUs this process is one of the workers. With GPUs (``settings.gpus``, default: all visible) worker i
    gets GPU ``gpus[i % len(gpus)]`` through ``CUDA_VISIBLE_DEVICES``, set before CUDA starts in it; this process
    then only waits. The others come from a fork server that has torch and the table modules imported (fast to
    start, and safe: forking a process that already ran torch's thread pool, as this one may have, can deadlock);
    if the fork server cannot start them, they are spawned.
    """
    import multiprocessing as mp

    import torch

    stop = stop or StopToken()
    imports = settings.user_code
    if settings.recipe:
        recipe_folder_on_path(settings.recipe)
    import_user_code([m for m in imports if not (m.endswith(".py") or Path(m).is_file())])  # fail here, once
    missing = [m for m in imports if m.endswith(".py") and not Path(m).is_file()]
    if missing:
        raise ConfigError(f"cannot import {missing[0]!r}: no such file")
    devices = visible_gpus() if settings.gpus is None else list(settings.gpus)
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    children = range(settings.workers) if devices else range(1, settings.workers)
    procs_args = [(f"nntransfer-worker-{i}", (task, settings, threads, _own_sys_path(), dict(os.environ),
                                              devices[i % len(devices)] if devices else None, _parent_log_levels()))
                  for i in children]
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["torch", "nntransfer.store.trained_model", "nntransfer.store.transfer",
                                    "nntransfer.runner"])
    procs, results = _start(procs_args, context, fallback=mp.get_context("spawn"))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    result = WorkResult()
    try:
        if not devices:
            result.add(task(settings, stop))
        _wait(procs, stop)
    finally:
        torch.set_num_threads(previous_threads)
        _stop_children(procs)
        _collect(results, result)
    result.dead = [f"worker process {p.name} (pid {p.pid}) exited with code {p.exitcode}; its job is re-queued, see "
                   "its output above" for p in procs if p.exitcode != 0]
    for line in result.dead:
        logger.error(line)
    result.stopped |= stop.requested
    return result


def _stop_children(procs, grace: float = 300.0) -> None:
    """Never wait for ever on a child: ask the living ones to stop (checkpoint and release), give them ``grace``
    seconds, then kill what is left (its job is re-queued through its heartbeat)."""
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in alive:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            logger.error("worker process %s (pid %d) did not stop within %.0f s; killing it", p.name, p.pid, grace)
            p.kill()
            p.join()


def train_locally(targets: list[Target], settings: WorkerSettings, stop: StopToken | None = None) -> WorkResult:
    """The one local dispatch of ``run()`` and the command line: this process alone (one worker, no GPU list), or
    :func:`run_workers`."""
    return run_locally(functools.partial(work, targets), settings, stop)


def run_locally(task: Callable, settings: WorkerSettings, stop: StopToken | None = None) -> WorkResult:
    """``task(settings, stop)`` in this process alone (one worker, no GPU list), or in :func:`run_processes`."""
    if settings.workers == 1 and not settings.gpus:
        return task(settings, stop)
    return run_processes(task, settings, stop)


__all__ = ["WorkResult", "WorkerSettings", "caller_code", "import_user_code", "importing_script", "parse_gpus",
           "prepare_worker", "reclaim_dead_reservations", "run_locally", "run_processes", "run_workers",
           "session_for", "stop_script_import", "train_locally", "visible_gpus", "work"]
