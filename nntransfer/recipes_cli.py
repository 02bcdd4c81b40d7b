"""Recipe commands of the CLI (run, worker, status, results, clear-errors)."""
from __future__ import annotations


def add_commands(sub) -> None:
    """Register the recipe sub-commands (filled in with the transfer/recipes work)."""
