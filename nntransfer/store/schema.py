"""The one DataJoint schema of nntransfer, bound to the database on first use."""
from __future__ import annotations

import inspect
import threading
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No datajoint.json found")
    import datajoint as dj

from . import internals

# Deferred: table classes register here at import; nothing connects until bind().
schema = dj.Schema()
_lock = threading.Lock()


def bind():
    """Connect (starting the embedded database if needed) and declare the tables that are missing; idempotent."""
    from . import db

    with _lock:
        if not schema.is_activated():
            conn = db.connection()
            # processes starting together must not declare the same tables at once (duplicate types, lineage)
            with db.advisory_lock(f"declare:{db.schema_name()}", conn):
                # Activating with create_tables=True loads every declared table's heading to look for missing
                # lineage rows (left by older DataJoint versions or an interrupted declare): ~120 catalog queries,
                # most of `nntransfer status`'s database time. Activate without declaring, declare what is missing
                # (a fresh database, a table an upgrade adds), and look for tables without lineage in one query.
                schema.activate(db.schema_name(), connection=conn, create_tables=False)
                schema.create_tables = True  # a table class decorated after this is declared as usual
                tables, declared = list(table_classes()), set(schema.list_tables())
                missing = [table for table in tables if table.table_name not in declared]
                for table in missing:
                    table().declare(table.declaration_context)
                if missing:
                    conn.dependencies.clear()
                with_lineage = {name.split(".")[1] for name in schema.lineage}  # "schema.table.attribute"
                for table in tables:
                    if table.table_name not in with_lineage:
                        internals.refresh_lineage(table)
    return schema


def table_classes():
    """Every table class of the schema with its part tables, in declaration order (masters before parts)."""
    for master, _context in schema.declare_list:
        yield master
        # only capitalised names: other class attributes of a table (heading, primary_key) query the database
        for part in (getattr(master, name) for name in dir(master) if name[:1].isupper()):
            if inspect.isclass(part) and issubclass(part, dj.Part):
                yield part
