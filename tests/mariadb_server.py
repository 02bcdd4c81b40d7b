"""A throwaway MariaDB server for tests: own data directory, Unix socket and a free TCP port on 127.0.0.1.

Debian's ``mariadb-server`` provides the binaries (``.ci/run`` installs it; here it is installed with apt
when missing and apt is usable). A user with a password gets all privileges on ``nntransfer%`` schemas only
(no PROCESS or other global privileges, as on a shared lab server).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

USER, PASSWORD = "alice", "s3cret-maria"


def binaries_or_reason() -> str | None:
    """None when the MariaDB binaries are there (installing them with apt if possible), else why not."""
    if shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists():
        return None
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "mariadb-server"], capture_output=True, timeout=600)
        if Path("/usr/sbin/mariadbd").exists():
            return None
        return "apt-get install mariadb-server failed"
    return "MariaDB is not installed and apt-get is not usable (not root); install mariadb-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MariaDB:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.socket = self.folder / "mysqld.sock"
        self.port = _free_port()
        self.process = None

    def start(self) -> "MariaDB":
        self.folder.mkdir(parents=True, exist_ok=True)
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", *user,
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=300)
        log = open(self.folder / "server.log", "w")
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.process = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--skip-log-bin", "--innodb-buffer-pool-size=64M", *user],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not self.socket.exists():
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"MariaDB did not start; see {self.folder / 'server.log'}")
            time.sleep(0.2)
        self.sql(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; "
                 f"GRANT ALL PRIVILEGES ON `nntransfer%`.* TO '{USER}'@'%';")
        return self

    def sql(self, statement: str) -> str:
        deadline = time.time() + 30
        while True:
            out = subprocess.run(["mariadb", "-S", str(self.socket), "-u", "root", "-N", "-e", statement],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.3)  # the socket appears before the server accepts connections
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout

    def env(self) -> dict:
        return {"NNTRANSFER_TEST_BACKEND": "mysql", "NNTRANSFER_TEST_MYSQL": f"127.0.0.1:{self.port}:{USER}:{PASSWORD}"}

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)
