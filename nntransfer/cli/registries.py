"""``nntransfer list ...``: what configs can name (models, dataset sources, losses, metrics, modules, neural cores)."""
from __future__ import annotations

import argparse

KINDS = ("models", "sources", "losses", "metrics", "modules", "cores")


def _list(args: argparse.Namespace) -> int:
    from ..configs.registries import REGISTRIES
    from ..errors import ConfigError

    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown kind {unknown[0]!r}; use {', '.join(KINDS)}")
    for kind in args.kinds or KINDS:
        registry = REGISTRIES[kind]
        print(f"{kind} ({registry.option}): {', '.join(registry.names())}")
    print("Anything else can be named by import path, e.g. 'mypackage.models:MyNet'.")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("list", help="list registered models, dataset sources, losses, metrics, main-loop modules and neural cores",
                       description="What a config can name by registered name. Everything can also be named by "
                                   "import path ('package.module:Name').")
    p.add_argument("kinds", nargs="*", metavar="KIND", help=f"one of {', '.join(KINDS)} (default: all)")
    p.set_defaults(handler=_list)
