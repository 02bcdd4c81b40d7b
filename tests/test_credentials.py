"""The database password never reaches output, logs, tables, the store or checkpoints (issue 10 item 18).

A run against a password-protected PostgreSQL server (trains, hands over data, writes a checkpoint, fails a
job), a failed connection with a wrong password and an unexpected error are made through the CLI; then
everything they wrote is searched for the passwords: stdout/stderr, every file under the data directory
and the working directory (store files, checkpoints, logs; compressed blobs and zip archives unpacked) and
every row of every table on the server (jobs tables included).
"""
import io
import os
import subprocess
import sys
import textwrap
import zipfile
import zlib

import pytest

from test_server import tcp_server  # noqa: F401  (fixture: a password-auth PostgreSQL on 127.0.0.1)

PASSWORD = "s3cret"  # the password tcp_server's user 'alice' has
WRONG = "wr0ng-Passw0rd"

RECIPE = """
import os
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import TrainerConfig
from nntransfer.trainer import MainLoopModule, register_module
from toy_pipeline import ToyData, ToyModel

@register_module("FailInEpoch2")
class FailInEpoch2(MainLoopModule):
    def pre_epoch(self, model, mode, **options):
        if mode == "Training" and self.epoch == 2:
            raise RuntimeError("planned failure after the first checkpoint")

if os.environ.get("LEAK_IN_RECIPE"):  # an error of the recipe itself: reported at its line
    raise RuntimeError("could not reach postgresql://alice:" + os.environ["DJ_PASS"] + "@db")


class Unreachable(dict):
    def items(self):  # an error after the recipe ran: unexpected, its traceback goes to a file
        raise RuntimeError("could not reach postgresql://alice:" + os.environ["DJ_PASS"] + "@db")


teacher = TrainerConfig(max_iter=2, data_transfer=True, verbose=False, comment="teacher")
failing = TrainerConfig(max_iter=3, verbose=False, main_loop_modules=["FailInEpoch2"], comment="fails")
transfer_experiments = {Description("credentials", 1): TransferExperiment([
    Experiment(ToyData(), ToyModel(), teacher, 1), Experiment(ToyData(), ToyModel(), failing, 1)])}
if os.environ.get("LEAK_IN_ERROR"):
    transfer_experiments = Unreachable(transfer_experiments)
"""


def expanded(data: bytes) -> bytes:
    """The bytes plus whatever they hide: zlib-compressed DataJoint blobs and zip archives (torch.save)."""
    parts = [data]
    start = data.find(b"ZL123\0")
    while start >= 0:
        try:
            parts.append(zlib.decompressobj().decompress(data[start + 14:]))
        except zlib.error:
            pass
        start = data.find(b"ZL123\0", start + 1)
    if data.startswith(b"PK"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                parts += [expanded(archive.read(name)) for name in archive.namelist()]
        except zipfile.BadZipFile:
            pass
    return b"".join(parts)


def files_under(*folders):
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    yield path


def server_rows(port):
    """Every value of every row of every user table on the server, as bytes."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="alice", password=PASSWORD, dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN "
                        "('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'")
            tables = cur.fetchall()
            for schema, table in tables:
                cur.execute(f'SELECT * FROM "{schema}"."{table}"')
                for row in cur.fetchall():
                    for value in row:
                        yield f"{schema}.{table}", bytes(value) if isinstance(value, memoryview) else \
                            str(value).encode()
    finally:
        conn.close()


@pytest.mark.slow  # a password-protected PostgreSQL server of its own and the command line in processes
def test_no_password_in_output_logs_tables_store_or_checkpoints(tcp_server, tmp_path):  # noqa: F811
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    (work / "recipe.py").write_text(textwrap.dedent(RECIPE))
    env = {**os.environ, "DJ_HOST": "127.0.0.1", "DJ_PORT": str(tcp_server), "DJ_USER": "alice", "DJ_PASS": PASSWORD,
           "DJ_BACKEND": "postgresql", "NNTRANSFER_HOME": str(home), "NNTRANSFER_SCHEMA": "credentials_test",
           "DJ_LOG_LEVEL": "DEBUG"}

    def cli(*args, **extra_env):
        out = subprocess.run([sys.executable, "-m", "nntransfer.cli", *args], cwd=work, env={**env, **extra_env},
                             capture_output=True, text=True, timeout=600)
        return out.returncode, out.stdout + out.stderr

    outputs = []
    code, text = cli("run", "recipe.py")
    outputs.append(text)
    assert code == 1 and "planned failure" in text, text  # step 0 trained, step 1 failed after a checkpoint
    outputs += [cli("status", "recipe.py")[1], cli("results", "recipe.py")[1], cli("db", "status")[1]]
    code, text = cli("run", "recipe.py", DJ_PASS=WRONG)  # a failed connection
    assert code != 0 and "alice" in text, text
    outputs.append(text)
    code, text = cli("status", "recipe.py", LEAK_IN_RECIPE="1")  # the recipe's error quoting the password
    assert code == 2 and "recipe.py:" in text and "postgresql://alice:***@db" in text, text
    outputs.append(text)
    code, text = cli("status", "recipe.py", LEAK_IN_ERROR="1")  # an unexpected error quoting the password
    assert code == 1 and "postgresql://alice:***@db" in text and "full traceback in" in text, text
    outputs.append(text)

    found = {"outputs": [t for t in outputs if PASSWORD in t or WRONG in t]}
    stored = list(files_under(home, work))
    assert any("logs" in path for path in stored)  # the unexpected error's traceback file
    found["files"] = [p for p in stored if any(s.encode() in expanded(open(p, "rb").read())
                                               for s in (PASSWORD, WRONG))]
    rows = list(server_rows(tcp_server))
    tables = {table for table, _ in rows}
    assert any(t.endswith(".checkpoint") for t in tables) and any(".~~" in t for t in tables), tables  # ~~: jobs
    found["rows"] = [t for t, value in rows if any(s.encode() in expanded(value) for s in (PASSWORD, WRONG))]
    assert found == {"outputs": [], "files": [], "rows": []}
