"""The one DataJoint schema of nntransfer, bound to the database on first use."""
from __future__ import annotations

import threading
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No datajoint.json found")
    import datajoint as dj

# Deferred: table classes register here at import; nothing connects until bind().
schema = dj.Schema()
_lock = threading.Lock()


def bind():
    """Connect (starting the embedded database if needed) and declare all tables; idempotent."""
    from . import db

    with _lock:
        if not schema.is_activated():
            # processes starting together must not declare the same tables at once (duplicate types, lineage)
            with db.advisory_lock(f"declare:{db.schema_name()}"):
                schema.activate(db.schema_name(), connection=db.connection())
    return schema
