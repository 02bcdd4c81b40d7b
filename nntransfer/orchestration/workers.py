"""Workers: train the pending rows of a plan through DataJoint's job reservation, in one or many processes.

Every worker imports the user's code first (the recipe, ``imports=[...]`` / ``--import`` modules, the
script that called ``run()``), so that names registered there resolve in every process. SIGTERM and
SIGINT stop a worker gracefully: the trainer writes a checkpoint, the job is released, the worker
returns (exit code 0) and the next worker resumes.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from .plan import TRAINED, TRANSFERRED, Target, states

logger = logging.getLogger(__name__)


# -- the user's code ---------------------------------------------------------------------------
class _ScriptStopped(BaseException):
    """Raised by run() while a worker imports the script that called it: the script's work is the parent's."""


_importing_script = [False]


def importing_script() -> bool:
    """True while a worker imports the user's script (``run()`` then stops the import instead of running)."""
    return _importing_script[0]


def stop_script_import() -> None:
    raise _ScriptStopped()


def import_user_code(imports: list[str] | tuple[str, ...] = ()) -> None:
    """Import modules (``package.module``) and files (``path/to/file.py``) so their registrations exist here.

    A file is imported as a module (not as ``__main__``): an ``if __name__ == "__main__":`` block does not
    run, and a top-level ``run(...)`` call ends the import there (what the file registered before it counts).
    """
    from ..errors import ConfigError

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
                                  "PYTHONPATH") from err


def _import_file(path: Path) -> None:
    name = f"nntransfer_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if name in sys.modules:
        return
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as Python does for a script: its siblings import
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _importing_script[0] = True
    try:
        spec.loader.exec_module(module)
    except _ScriptStopped:
        pass
    finally:
        _importing_script[0] = False


def recipe_imports(recipe: str | None, imports=()) -> list[str]:
    """What a worker imports first: a Python recipe (its registrations; a YAML/JSON one has none), then ``imports``."""
    own = [os.path.abspath(recipe)] if recipe and str(recipe).endswith(".py") else []
    return own + list(imports)


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
    package = Path(importlib.import_module("nntransfer").__file__).resolve().parent
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
    from .. import store as tables
    from ..store.jobs import reclaim

    count = 0
    for table_name in (TRAINED, TRANSFERRED):
        keys = [t.key for t in targets if t.table == table_name]
        if keys:
            count += reclaim(tables.table(table_name), keys)
    return count


def work(targets: list[Target], poll: float = 1.0, timeout: float | None = None, max_retries: int = 0) -> dict:
    """Train pending targets until none is left that this or another live worker can train.

    Safe to run in many processes at once: DataJoint's job reservation hands each key to one worker.
    A step whose predecessor is still training is picked up as soon as the predecessor is done.
    Returns ``{"trained": n, "errors": [(key, exception), ...], "stopped": bool}``; ``stopped`` is True
    after SIGTERM/SIGINT (the job in hand was checkpointed and released).
    """
    from .. import store as tables
    from ..runner.signals import stop_on_signals
    from ..store.jobs import set_max_retries
    from ..trainer.interrupt import TrainingInterrupted, stop_requested

    tables.bind()
    set_max_retries(max_retries)
    started = time.time()
    trained, errors = 0, []
    with stop_on_signals():
        reclaim_dead_reservations(targets)
        while not stop_requested():
            progressed = False
            for table_name in (TRAINED, TRANSFERRED):
                keys = [t.key for t in targets if t.table == table_name]
                if not keys or stop_requested():
                    continue
                try:
                    result = tables.table(table_name).populate(keys, reserve_jobs=True, suppress_errors=True,
                                                               return_exception_objects=True)
                except (SystemExit, KeyboardInterrupt) as stop:  # DataJoint's SIGTERM handler, or a second
                    from ..trainer.interrupt import request_stop   # Ctrl-C between jobs; a held job was released

                    request_stop(f"{type(stop).__name__}")
                    break
                stopped = [(k, e) for k, e in result["error_list"] if isinstance(e, (TrainingInterrupted,
                                                                                       KeyboardInterrupt))]
                failed = [(k, e) for k, e in result["error_list"] if (k, e) not in stopped]
                for _, interrupted in stopped:  # where it stopped, so users know what the next worker resumes
                    logger.warning("%s", interrupted)
                trained += result["success_count"]
                errors += failed
                progressed |= bool(result["success_count"] or failed)
            if stop_requested():
                break
            current = states(targets)
            open_work = [t for t, s in current.items() if s["state"] in ("pending", "reserved")]
            if not open_work:
                break
            if timeout is not None and time.time() - started > timeout:
                logger.warning("worker stops after %.0f s with %d targets open", timeout, len(open_work))
                break
            if not progressed:
                # others are training what is left (or its predecessors), or a retry is scheduled: wait
                if reclaim_dead_reservations(targets) == 0:
                    try:
                        time.sleep(poll)
                    except KeyboardInterrupt:
                        break
    if stop_requested():
        logger.warning("worker stopped on request; %d trained", trained)
    return {"trained": trained, "errors": errors, "stopped": stop_requested()}


# -- many local workers ------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The GPUs local workers are spread over: ``CUDA_VISIBLE_DEVICES`` if set, else all that torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def parse_gpus(text: str | None) -> list[str] | None:
    """``"0,2"`` -> ``["0", "2"]``; None -> None (all visible GPUs)."""
    from ..errors import ConfigError

    if text is None:
        return None
    gpus = [g.strip() for g in str(text).split(",") if g.strip()]
    if not gpus:
        raise ConfigError(f"--gpus {text!r}: give GPU ids like 0,2")
    return gpus


def _worker_process(targets: list[Target], threads: int, poll: float, imports: list[str], sys_path: list[str],
                    environ: dict, gpu: str | None, max_retries: int) -> None:
    # the caller's environment now, not the fork server's from its start (a notebook may have changed it since)
    os.environ.clear()
    os.environ.update(environ)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything starts CUDA in this process
    sys.path[:] = sys_path
    import torch

    torch.set_num_threads(threads)
    from ..errors import ConfigError
    from ..store.db import DatabaseUnavailable

    try:
        import_user_code(imports)
        work(targets, poll=poll, max_retries=max_retries)
    except (ConfigError, DatabaseUnavailable) as err:
        print(f"nntransfer worker {os.getpid()}: error: {err}", file=sys.stderr)
        sys.exit(2)


def _wait(procs) -> None:
    """Wait for the worker processes; a stop request (SIGTERM/SIGINT here) is passed on to them once."""
    import signal

    from ..runner.signals import stop_on_signals
    from ..trainer.interrupt import stop_requested

    passed_on = False
    with stop_on_signals():
        while any(p.is_alive() for p in procs):
            if stop_requested() and not passed_on:
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGTERM)
                passed_on = True
            for p in procs:
                p.join(timeout=0.2)


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


def run_workers(targets: list[Target], workers: int, poll: float = 0.2, recipe: str | None = None,
                imports: list[str] | tuple[str, ...] = (), gpus: list[str] | None = None,
                max_retries: int = 0) -> list[str]:
    """Train with ``workers`` local processes sharing the database, each with its share of the cores.

    Without GPUs this process is one of the workers. With GPUs (``gpus``, default: all visible) worker i
    gets GPU ``gpus[i % len(gpus)]`` through ``CUDA_VISIBLE_DEVICES``, set before CUDA starts in it; this
    process then only waits. The others come from a fork server that has torch and the table modules
    imported (fast to start, and safe: forking a process that already ran torch's thread pool, as this
    one may have, can deadlock). Returns a one-line report per worker process that died.
    """
    import multiprocessing as mp

    import torch

    imports = recipe_imports(recipe, imports)
    import_user_code([m for m in imports if not (m.endswith(".py") or Path(m).is_file())])  # fail here, once
    missing = [m for m in imports if m.endswith(".py") and not Path(m).is_file()]
    if missing:
        from ..errors import ConfigError

        raise ConfigError(f"cannot import {missing[0]!r}: no such file")
    devices = visible_gpus() if gpus is None else gpus
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "nntransfer.store.trained_model", "nntransfer.store.transfer"])
    children = range(workers) if devices else range(1, workers)
    procs = [ctx.Process(target=_worker_process, name=f"nntransfer-worker-{i}",
                         args=(targets, threads, poll, imports, _own_sys_path(), dict(os.environ),
                               devices[i % len(devices)] if devices else None, max_retries))
             for i in children]
    # The fork server is started with `python -c`, whose import path begins with the current folder: a
    # folder named `nntransfer` there (e.g. the parent of a clone) must not shadow the package.
    safe_path = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        with _children_skip_main():
            for p in procs:
                p.start()
    finally:
        if safe_path is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = safe_path
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if not devices:
            work(targets, poll=poll, max_retries=max_retries)
        _wait(procs)
    finally:
        torch.set_num_threads(previous_threads)
        for p in procs:
            p.join()
    dead = [f"worker process {p.name} (pid {p.pid}) exited with code {p.exitcode}; its job is re-queued, see its "
            "output above" for p in procs if p.exitcode != 0]
    for line in dead:
        logger.error(line)
    return dead
