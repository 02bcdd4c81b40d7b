"""Where Optuna keeps its studies: the results database, in a schema of its own.

A search's study lives in the database the results live in, so that workers on several machines (or Slurm jobs)
join one study by name, as Optuna's distributed optimisation works: the embedded PostgreSQL through its Unix
socket, or the configured server (``DJ_HOST``: PostgreSQL, MySQL or MariaDB). Optuna's tables (``studies``,
``trials``, ...) go to their own schema, ``<NNTRANSFER_SCHEMA>_optuna`` (a PostgreSQL schema in the same database,
or a MySQL database; created if missing), so they never collide with DataJoint's.

The SQLAlchemy URL names no password: it is passed to the driver as a connection argument, so the URL can be
shown (``nntransfer search --status``) and Optuna, which keeps the URL, never holds it in text.
"""
from __future__ import annotations

import contextlib
import logging

from ..errors import ConfigError
from . import db

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'nntransfer[search]' (Optuna)"


def require_optuna():
    """The ``optuna`` module, or a ConfigError that says how to install it."""
    try:
        import optuna
    except ImportError as err:
        raise ConfigError(f"hyperparameter search needs Optuna, which is not installed ({err}): {INSTALL_HINT}") \
            from None
    return optuna


def study_schema() -> str:
    """The schema (PostgreSQL) or database (MySQL) of Optuna's tables: ``<NNTRANSFER_SCHEMA>_optuna``."""
    return f"{db.schema_name()}_optuna"


def _url_and_arguments() -> tuple[object, dict]:
    """``(sqlalchemy URL without a password, the driver's connection arguments)`` for the configured database."""
    from sqlalchemy.engine import URL

    schema = study_schema()
    if not db.server_configured():
        info = db.embedded_server()
        url = URL.create("postgresql+psycopg2", username="postgres", database="postgres",
                         query={"host": str(info.socket_dir), "port": str(info.port)})
        return url, {"options": f"-c search_path={schema}", "sslmode": "disable"}
    login = db.server_login()
    tls = login["use_tls"]
    if login["backend"] == "postgresql":
        url = URL.create("postgresql+psycopg2", username=login["user"], host=login["host"], port=login["port"],
                         database=login["database"] or "postgres")
        arguments = {"options": f"-c search_path={schema}", "password": login["password"]}
        if tls is not None:  # None: libpq's default (TLS if the server offers it), as DataJoint does
            arguments["sslmode"] = "require" if tls else "disable"
        return url, arguments
    if login["backend"] == "mysql":
        url = URL.create("mysql+pymysql", username=login["user"], host=login["host"], port=login["port"],
                         database=schema, query={"charset": "utf8mb4"})
        arguments = {"password": login["password"]}
        if tls:
            arguments["ssl"] = tls if isinstance(tls, dict) else {"check_hostname": False}
        return url, arguments
    raise ConfigError(f"DJ_BACKEND={login['backend']!r}: searches need postgresql or mysql")


def storage_url() -> str:
    """The SQLAlchemy URL of the study storage, safe to show (no password)."""
    url, _ = _url_and_arguments()
    return url.render_as_string(hide_password=True)


def _create_schema(conn) -> None:
    schema = study_schema()
    if conn.adapter.backend == "postgresql":
        conn.query(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    else:
        conn.query(f"CREATE DATABASE IF NOT EXISTS `{schema}`")


def has_studies() -> bool:
    """Whether Optuna's tables exist in this database (cheap: no Optuna import; ``status`` and ``results`` ask)."""
    conn = db.connection()
    found = conn.query("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=%s AND table_name=%s",
                       args=(study_schema(), "studies")).fetchone()[0]
    return bool(found)


def open_storage(create: bool = True, **options):
    """An Optuna ``RDBStorage`` on the study schema; ``create``: make the schema and Optuna's tables if missing
    (a search does; reading studies, e.g. for ``status``, writes nothing).

    ``options``: keyword arguments of ``RDBStorage`` (heartbeat_interval, grace_period,
    heartbeat_stale_trial_callback, ...). Processes that start together create the schema and tables one at a time.
    """
    require_optuna()
    from optuna.storages import RDBStorage

    url, arguments = _url_and_arguments()
    engine = {"connect_args": arguments, "pool_pre_ping": True}  # a worker may wait hours between two trials
    conn = db.connection()
    with db.advisory_lock(f"optuna:{study_schema()}", conn) if create else contextlib.nullcontext():
        if create:
            _create_schema(conn)
        try:
            return RDBStorage(url.render_as_string(hide_password=False), engine_kwargs=engine,
                              skip_table_creation=not create, **options)
        except Exception as err:
            if db.is_connection_error(err) or type(err).__module__.startswith("sqlalchemy"):
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                if arguments.get("password"):
                    first = first.replace(arguments["password"], "***")
                raise db.DatabaseUnavailable(f"cannot open the study storage {storage_url()}: {first}") from None
            raise


__all__ = ["INSTALL_HINT", "has_studies", "open_storage", "require_optuna", "storage_url", "study_schema"]
