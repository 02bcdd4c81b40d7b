"""Store clean-up: delete files of the ``nntransfer`` store that no row references.

nntransfer deletes a checkpoint's file with its row. Files can still lose their row: a user deletes
results (``TrainedModel.delete()`` cascades through DataJoint, which leaves store files alone), or a
process dies between writing a file and inserting its row. :func:`collect` finds them with DataJoint's
own garbage collector (which knows the ``<torchstate>`` codec: it is a ``SchemaCodec``) and deletes only
files that no row references and that are older than ``min_age`` seconds, so a file a worker has just
written for a row it is about to insert is never taken.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import internals

MIN_AGE = 3600.0


def _mtime(backend, path: str) -> float | None:
    try:
        if backend.protocol == "file":
            return Path(internals.backend_path(backend, path)).stat().st_mtime
        info = backend.fs.info(internals.backend_path(backend, path))
        stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp) if stamp else None
    except (OSError, ValueError, TypeError):
        return None


def collect(dry_run: bool = True, min_age: float = MIN_AGE) -> dict:
    """Report (and unless ``dry_run`` delete) unreferenced files of the store older than ``min_age`` seconds."""
    import datajoint as dj

    from . import bind
    from .codec import _backend, remove_files
    from .db import STORE

    schema = bind()
    collector = dj.gc.GarbageCollector(schema, store=STORE)
    report = collector.collect(dry_run=True)
    if report["scan_errors"]:
        raise RuntimeError(f"the store could not be listed completely ({report['scan_errors']}); nothing deleted")
    # states written by nntransfer 0.1 sit in the hash section but are referenced from <torchstate> columns,
    # which DataJoint counts as schema-addressed references
    schema_refs = collector.schema_references()
    orphans = [p for p in report["orphaned_hash_paths"] if p not in schema_refs] + report["orphaned_schema_paths"]
    backend = _backend(STORE, internals.connection_config(schema.connection))
    now = time.time()
    old = [p for p in orphans if (_mtime(backend, p) or 0) < now - min_age]
    sizes = {}
    for path in old:
        try:
            sizes[path] = backend.size(path)
        except OSError:
            sizes[path] = 0
    removed = [] if dry_run else [p for p, _ in remove_files([(p, STORE) for p in old],
                                                             internals.connection_config(schema.connection))]
    return {"referenced": report["hash_paths_referenced"] + report["schema_paths_referenced"],
            "stored": report["hash_paths_stored"] + report["schema_paths_stored"],
            "unreferenced": len(old), "unreferenced_bytes": sum(sizes.values()),
            "recent_unreferenced_kept": len(orphans) - len(old), "deleted": len(removed),
            "not_deleted": 0 if dry_run else len(old) - len(removed),
            # what was really freed: the files that could not be deleted (logged) still take their space
            "bytes_freed": sum(sizes[p] for p in removed), "dry_run": dry_run, "files": old}


def usage() -> dict:
    """Files and bytes in the store (the whole ``nntransfer`` store, all schemas); does not connect."""
    import datajoint as dj

    from . import db
    from .codec import _backend

    if db.STORE not in dict(dj.config.stores):
        root = Path(db.store_location())
        files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        return {"store_files": len(files), "store_bytes": sum(p.stat().st_size for p in files)}
    backend = _backend(db.STORE)
    files = size = 0
    try:
        for root, _dirs, names in backend.fs.walk(internals.backend_path(backend, "")):
            for name in names:
                files += 1
                size += backend.fs.size(f"{root}/{name}")
    except FileNotFoundError:
        pass
    return {"store_files": files, "store_bytes": size}
