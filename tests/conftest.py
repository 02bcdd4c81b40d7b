"""Test session set-up: a private database for the whole run, never a configured server.

By default an embedded PostgreSQL in a temporary NNTRANSFER_HOME. With ``NNTRANSFER_TEST_BACKEND=mysql``
(set by ``tests/test_mysql.py``, which runs the tests marked ``both_backends`` again) the session uses the
throwaway MariaDB server described by ``NNTRANSFER_TEST_MYSQL`` (``host:port:user:password``).
"""
import os
import shutil
import tempfile

import pytest

# Must happen before nntransfer is imported anywhere: the data dir and schema are read on first use.
_HOME = tempfile.mkdtemp(prefix="nntransfer-test-")
os.environ["NNTRANSFER_HOME"] = _HOME
os.environ["NNTRANSFER_SCHEMA"] = "nntransfer_test"
os.environ["DJ_IGNORE_CONFIG_FILE"] = "true"
# worker subprocesses must import tests/toy_pipeline.py
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
for _var in ("DJ_HOST", "DJ_USER", "DJ_PASS", "DJ_PORT", "DJ_BACKEND"):
    os.environ.pop(_var, None)
BACKEND = os.environ.get("NNTRANSFER_TEST_BACKEND", "postgresql")
if BACKEND == "mysql":
    _host, _port, _user, _password = os.environ["NNTRANSFER_TEST_MYSQL"].split(":")
    os.environ.update(DJ_HOST=_host, DJ_PORT=_port, DJ_USER=_user, DJ_PASS=_password, DJ_BACKEND="mysql")


def pytest_sessionfinish(session, exitstatus):
    from nntransfer.store import db
    if BACKEND == "mysql":
        db.connection().query("DROP DATABASE IF EXISTS nntransfer_test")
        db.connection().query("DROP DATABASE IF EXISTS nntransfer_test_optuna")  # the searches' studies
        return
    data = db.data_dir()
    db.stop()
    shutil.rmtree(_HOME, ignore_errors=True)
    if not str(data).startswith(_HOME):
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture
def clean_db():
    """Empty every nntransfer table (cascading from the roots) before and after a test."""
    from nntransfer import store as tables

    def wipe():
        tables.bind()
        for name in ("Fabrikant", "Seed"):
            tables.table(name)().delete(prompt=False)
        for name in ("Checkpoint", "Worker", "JobAttempt"):
            tables.table(name)().delete_quick()
        for name in ("TrainedModel", "TransferredTrainedModel"):
            tables.table(name).jobs.delete_quick()
        from nntransfer.store import db

        for section in ("_schema", "_hash"):  # the files of the deleted rows
            shutil.rmtree(os.path.join(db.store_location(), section, "nntransfer_test"), ignore_errors=True)
        # the searches' studies (Optuna's tables are created again when a search opens them)
        conn = db.connection()
        if conn.adapter.backend == "postgresql":
            conn.query("DROP SCHEMA IF EXISTS nntransfer_test_optuna CASCADE")
        else:
            conn.query("DROP DATABASE IF EXISTS nntransfer_test_optuna")

    wipe()
    yield tables
    wipe()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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
