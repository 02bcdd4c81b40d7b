"""Test session set-up: a private database for the whole run, never a configured server.

By default an embedded PostgreSQL in a temporary NNTRANSFER_HOME. With ``NNTRANSFER_TEST_BACKEND=mysql``
(set by ``tests/test_mysql.py``, which runs the tests marked ``both_backends`` again) the session uses the
throwaway MariaDB server described by ``NNTRANSFER_TEST_MYSQL`` (``host:port:user:password``).

Markers (pytest.ini): ``slow`` tests are left out of the default run (``pytest -m slow`` runs them; CI runs both);
``slurm`` tests are slow too; ``cuda`` tests skip without a GPU. Fixtures: ``clean_db`` (empty tables around a
test), ``module_db`` (for a module-scoped fixture that trains once what read-only tests share), ``cli`` (the
command line in this process), ``train_log`` (what the toy pipeline's trainer trained). pytest.ini runs one
pytest-xdist worker per core (``-n auto --dist loadfile``): each worker is a session of its own, with its own
NNTRANSFER_HOME and database, and a file's tests (and its module-scoped fixtures) stay on one worker; ``-n 0`` runs
one process. Helpers for tests: tests/toy_pipeline.py (a tiny dataset/model/trainer and ``toy()``) and
tests/slow_recipe.py (the recipe of the tests that stop, kill or requeue training).
"""
import os
import shutil
import sys
import tempfile
from typing import NamedTuple

import pytest

# Must happen before nntransfer is imported anywhere: the data dir and schema are read on first use.
_HOME = tempfile.mkdtemp(prefix="nntransfer-test-")
os.environ["NNTRANSFER_HOME"] = _HOME
os.environ["NNTRANSFER_SCHEMA"] = "nntransfer_test"
os.environ["DJ_IGNORE_CONFIG_FILE"] = "true"
# One intra-op thread per process (this one and the ones it starts), unless the caller chose: the suite's models
# are tiny, and a second thread only spins and waits while other processes (xdist workers, servers) share the
# cores; measured on 2 cores, the trainer tests need ~40 % less CPU time with one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# worker subprocesses must import tests/toy_pipeline.py
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
for _var in ("DJ_HOST", "DJ_USER", "DJ_PASS", "DJ_PORT", "DJ_BACKEND"):
    os.environ.pop(_var, None)
BACKEND = os.environ.get("NNTRANSFER_TEST_BACKEND", "postgresql")
if BACKEND == "mysql":
    _host, _port, _user, _password = os.environ["NNTRANSFER_TEST_MYSQL"].split(":")
    os.environ.update(DJ_HOST=_host, DJ_PORT=_port, DJ_USER=_user, DJ_PASS=_password, DJ_BACKEND="mysql")


def pytest_sessionfinish(session, exitstatus):
    if "nntransfer.store.db" not in sys.modules:  # no test used the database (e.g. an xdist controller)
        shutil.rmtree(_HOME, ignore_errors=True)
        return
    from nntransfer.store import db
    if BACKEND == "mysql":
        db.connection().query("DROP DATABASE IF EXISTS nntransfer_test")
        db.connection().query("DROP DATABASE IF EXISTS nntransfer_test_optuna")  # the searches' studies
        return
    data = db.data_dir()
    if "nntransfer.store.jobs" in sys.modules:  # a plain populate's heartbeat beats until exit: not into a stopped server
        sys.modules["nntransfer.store.jobs"].process_heartbeat().close()
    db.stop()
    shutil.rmtree(_HOME, ignore_errors=True)
    if not str(data).startswith(_HOME):
        shutil.rmtree(data.parent, ignore_errors=True)


def _wipe_tables():
    """Empty every nntransfer table, the job queues and the store's files.

    Children before parents with ``delete_quick``: one DELETE per table. (A cascading ``delete()`` from the root
    tables reads the whole dependency graph and every heading again, ~450 queries, even when all is empty; it
    cost the suite more than a second per test.)"""
    import datajoint as dj

    from nntransfer import store as tables
    from nntransfer.store import db

    schema = tables.bind()
    conn = schema.connection
    conn.dependencies.load()
    mine = [name for name in conn.dependencies.topo_sort()  # parents first, this schema's tables only
            if conn.adapter.split_full_table_name(name)[0] == schema.database]
    for name in reversed(mine):
        dj.FreeTable(conn, name).delete_quick()
    for name in ("TrainedModel", "TransferredTrainedModel"):
        tables.table(name).jobs.delete_quick()
    for section in ("_schema", "_hash"):  # the files of the deleted rows
        shutil.rmtree(os.path.join(db.store_location(), section, "nntransfer_test"), ignore_errors=True)
    # the searches' studies (Optuna's tables are created again when a search opens them)
    if conn.adapter.backend == "postgresql":
        conn.query("DROP SCHEMA IF EXISTS nntransfer_test_optuna CASCADE")
    else:
        conn.query("DROP DATABASE IF EXISTS nntransfer_test_optuna")
    return tables


@pytest.fixture
def clean_db():
    """Empty tables before and after a test (``nntransfer.store``, the module of every table)."""
    yield _wipe_tables()
    _wipe_tables()


@pytest.fixture
def train_log(tmp_path, monkeypatch):
    """The file tests/toy_pipeline.py's trainer appends a line to for every training it starts (``$TOY_TRAIN_LOG``,
    inherited by worker processes)."""
    log = tmp_path / "train.log"
    monkeypatch.setenv("TOY_TRAIN_LOG", str(log))
    return log


@pytest.fixture(scope="module")
def module_db():
    """Empty tables at the start and the end of a module, for a module-scoped fixture that trains once what the
    module's read-only tests share (e.g. test_analysis's finished run). A ``clean_db`` test of the same module
    empties them in between: the sharing fixture must then train again, which ``run()`` does, as it trains only
    what is missing (see ``finished`` in test_analysis.py)."""
    yield _wipe_tables()
    _wipe_tables()


class CliResult(NamedTuple):
    """What ``subprocess.run`` would give for the command (its exit code and output), without the interpreter."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """``cli("status", recipe)`` runs the ``nntransfer`` command in this process (``cli.main(argv)``): exit code,
    stdout and stderr as a :class:`CliResult`. Tests about a process (signals, kills, a fresh interpreter, import
    cost, the console script) start one instead."""
    from nntransfer.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()  # only this command's output
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit:  # argparse: --help, bad arguments
            code = exit.code
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.hookimpl(tryfirst=True)  # before -m deselects: a slurm test must count as slow
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)
    needs_cuda = [item for item in items if item.get_closest_marker("cuda")]
    if not needs_cuda:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in needs_cuda:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def nntransfer_logging_restored():
    """The command line, run in-process (``cli``, ``main([...])``), adds a stderr handler to the ``nntransfer``
    logger and sets levels, as a process of its own would: undo it after each test, so that later tests see the
    logging of a fresh process (otherwise the trainer's epoch lines reach their stderr)."""
    import logging

    loggers = [logging.getLogger(name) for name in ("nntransfer", "nntransfer.trainer")]
    saved = [(logger, list(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def _torch_globals():
    import torch

    return {"threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            "default dtype": torch.get_default_dtype(), "grad enabled": torch.is_grad_enabled(),
            "matmul precision": torch.get_float32_matmul_precision(),
            "cudnn.benchmark": torch.backends.cudnn.benchmark, "cudnn.deterministic": torch.backends.cudnn.deterministic}


@pytest.fixture(autouse=True)
def torch_globals_unchanged():
    """Code under test must leave torch's process-wide settings as it found them: a later run in the same
    process (a notebook, a worker training the next job) would otherwise compute different numbers."""
    before = _torch_globals()
    yield
    after = _torch_globals()
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    if changed:
        import torch

        torch.set_num_threads(before["threads"])  # so one leak does not fail every later test
        torch.use_deterministic_algorithms(before["deterministic"])
        torch.set_default_dtype(before["default dtype"])
        torch.set_grad_enabled(before["grad enabled"])
        torch.set_float32_matmul_precision(before["matmul precision"])
        torch.backends.cudnn.benchmark = before["cudnn.benchmark"]
        torch.backends.cudnn.deterministic = before["cudnn.deterministic"]
        pytest.fail(f"the test left torch settings changed (before, after): {changed}")
