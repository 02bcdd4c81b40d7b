"""``nntransfer db ...``: the embedded database and the store."""
from __future__ import annotations

import argparse
import json


def _db(args: argparse.Namespace) -> int:
    from ..store import db

    if args.action == "path":
        print(db.home())
        return 0
    if args.action == "gc":
        from ..store.gc import collect

        report = collect(dry_run=args.dry_run, min_age=args.min_age)
        verb = "would delete" if args.dry_run else "deleted"
        for path in report.pop("files"):
            print(f"{verb} {path}")
        print(json.dumps(report, indent=2))
        return 0
    if args.action == "start":
        if db.server_configured():
            print("a database server is configured (DJ_HOST or datajoint.json); nothing to start")
            return 0
        info = db.start()
    elif args.action == "stop":
        if db.server_configured():
            print("a database server is configured; the embedded one is not used")
            return 0
        stopped = db.stop()
        print("stopped" if stopped else "not running")
        return 0
    else:
        info = db.status()
        if db.server_configured() or info["running"]:
            from ..store.gc import usage

            info.update(usage())
    print(json.dumps(info, indent=2, default=str))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("db", help="manage the embedded database and the store",
                       description="Manage the embedded PostgreSQL database (start/stop are ignored when DJ_HOST "
                                   "or a datajoint.json points at a server) and clean the store.")
    p.add_argument("action", choices=["status", "start", "stop", "path", "gc"],
                   help="status: where the data lives, whether the server runs, the store's size; start/stop the "
                        "server; path: print the data directory; gc: delete store files no row references")
    p.add_argument("--dry-run", action="store_true", help="gc: only list what would be deleted")
    p.add_argument("--min-age", type=float, default=3600.0,
                   help="gc: keep unreferenced files younger than this many seconds (a worker may be about to "
                        "insert their row; default 3600)")
    p.set_defaults(handler=_db)
