"""``nntransfer db ...``: the embedded database."""
from __future__ import annotations

import argparse
import json


def _db(args: argparse.Namespace) -> int:
    from .. import db

    if args.action == "path":
        print(db.home())
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
    print(json.dumps(info, indent=2, default=str))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("db", help="manage the embedded database", description="Manage the embedded PostgreSQL "
                       "database (ignored when DJ_HOST or a datajoint.json points at a server).")
    p.add_argument("action", choices=["status", "start", "stop", "path"],
                   help="status: where the data lives and whether the server runs; start/stop the server; "
                        "path: print the data directory")
    p.set_defaults(handler=_db)
