"""The server tests (tables, populate, checkpoints, workers, reclaim, store clean-up) on MariaDB too.

A throwaway MariaDB server is started once; the tests marked ``both_backends`` run again in a pytest
subprocess whose session uses it instead of the embedded PostgreSQL (see conftest.py).
"""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a MariaDB server, and the both_backends tests again on it

from mariadb_server import MariaDB, binaries_or_reason


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    if os.environ.get("NNTRANSFER_TEST_BACKEND") == "mysql":
        pytest.skip("already running against MariaDB")
    reason = binaries_or_reason()
    if reason:
        pytest.skip(reason)
    server = MariaDB(tmp_path_factory.mktemp("mariadb")).start()
    try:
        yield server
    finally:
        server.stop()


def test_server_tests_pass_on_mariadb(mariadb):
    env = {**os.environ, **mariadb.env()}
    # one process (-n 0): every session of this run shares the one MariaDB schema
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "0", "-m",
                          "both_backends", os.path.dirname(__file__)], env=env, capture_output=True, text=True,
                         timeout=1500)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


def test_mariadb_user_has_no_global_privileges(mariadb):
    grants = mariadb.sql("SHOW GRANTS FOR 'alice'@'%'")
    assert "PROCESS" not in grants and "ALL PRIVILEGES ON *.*" not in grants
