"""Test session set-up: a private embedded database for the whole run, never a configured server."""
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


def pytest_sessionfinish(session, exitstatus):
    from nntransfer import db

    db.stop()
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def clean_db():
    """Empty every nntransfer table (cascading from the roots) before and after a test."""
    from nntransfer import tables

    def wipe():
        tables.bind()
        for name in ("Fabrikant", "Seed"):
            tables.table(name)().delete(prompt=False)

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
