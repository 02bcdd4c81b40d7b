"""The ``nntransfer`` command line: one module per group of commands (database, recipes, workers, analysis,
registries)."""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nntransfer",
        description="Define transfer-learning experiments in recipes; train what is missing; compare results.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from . import analysis, common, database, recipes, registries, search, workers

    database.add_commands(sub)
    recipes.add_commands(sub)
    workers.add_commands(sub)
    analysis.add_commands(sub, common.recipe_options())
    search.add_commands(sub, common.recipe_options())
    registries.add_commands(sub)
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a message comes (in-process callers, e.g. tests, swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging() -> None:
    """nntransfer's messages (stops, released jobs, reconnects) on stderr: INFO and up, except the trainer's
    per-epoch lines, which the progress bars show when ``verbose`` (its warnings still show)."""
    root = logging.getLogger("nntransfer")
    if not any(isinstance(h, _CurrentStderr) for h in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("nntransfer: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("nntransfer.trainer").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    from ..errors import ConfigError
    from ..store.db import DatabaseUnavailable

    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:  # a second Ctrl-C outside training (inside, the job in hand is released)
        print("nntransfer: stopped at once; jobs in hand resume from their last checkpoint on the next run",
              file=sys.stderr)
        return 130
    except (ConfigError, DatabaseUnavailable) as err:
        print(f"nntransfer: error: {_scrub(str(err))}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # "no such file: PATH", not "[Errno 2] No such file or directory: 'PATH'"
        what = f"no such file or folder: {err.filename}" if err.filename else str(err)
        print(f"nntransfer: error: {_scrub(what)}", file=sys.stderr)
        return 2
    except Exception as err:
        from ..store.db import is_connection_error

        if not is_connection_error(err):  # anything else: one line here, the traceback in a file
            log = _write_traceback(err, argv if argv is not None else sys.argv[1:])
            cause = _scrub(str(err)).strip().splitlines()
            print(f"nntransfer: unexpected {type(err).__name__}: {cause[0][:300] if cause else '(no message)'} "
                  f"(full traceback in {log})", file=sys.stderr)
            return 1
        first = _scrub(str(err)).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"nntransfer: error: lost the connection to the database ({first}); unfinished jobs resume from "
              "their last checkpoint on the next run", file=sys.stderr)
        return 3


def _write_traceback(err: BaseException, argv: list[str]) -> str:
    """Write the traceback to ``$NNTRANSFER_HOME/logs/`` (or the working directory); returns the path."""
    import datetime
    import os
    import traceback
    from pathlib import Path

    from ..store.db import home

    name = f"nntransfer-error-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    text = _scrub(f"nntransfer {' '.join(argv)}\n\n" + "".join(traceback.format_exception(err)))
    for folder in (home() / "logs", Path.cwd()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return str(folder / name)
        except OSError:
            continue
    return "(nowhere: neither $NNTRANSFER_HOME/logs nor the working directory is writable)"


def _scrub(text: str) -> str:
    """Remove the configured database password from ``text`` (messages and tracebacks are shown and stored)."""
    import os

    secrets = {os.environ.get("DJ_PASS", "")}
    if "datajoint" in sys.modules:
        try:
            password = sys.modules["datajoint"].config.get("database.password")
        except Exception:  # noqa: BLE001 - a broken config must not hide the original error
            password = None
        secrets.add(password.get_secret_value() if hasattr(password, "get_secret_value") else password or "")
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), "***")
    return text

