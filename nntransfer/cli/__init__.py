"""The ``nntransfer`` command line: one module per group of commands (database, recipes, workers, registries)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nntransfer",
        description="Define transfer-learning experiments in recipes; train what is missing; compare results.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from . import database, recipes, registries, workers

    database.add_commands(sub)
    recipes.add_commands(sub)
    workers.add_commands(sub)
    registries.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..configs.errors import ConfigError
    from ..db import DatabaseUnavailable

    try:
        return args.handler(args) or 0
    except (ConfigError, DatabaseUnavailable, FileNotFoundError) as err:
        print(f"nntransfer: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from ..db import is_connection_error

        if not is_connection_error(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"nntransfer: error: lost the connection to the database ({first}); unfinished jobs resume from "
              "their last checkpoint on the next run", file=sys.stderr)
        return 3

