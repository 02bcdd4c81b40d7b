"""The ``nntransfer`` command line: one module per group of commands (database, recipes, analysis, registries)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nntransfer",
        description="Define transfer-learning experiments in recipes; train what is missing; compare results.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from . import analysis, database, recipes, registries

    database.add_commands(sub)
    recipes.add_commands(sub)
    analysis.add_commands(sub, recipes.recipe_options())
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

