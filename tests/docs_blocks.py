"""The ```python blocks of the documentation pages, and a runner that executes a page's blocks like a notebook.

A block is skipped when the line right before its fence is ``<!-- no-run -->`` (e.g. one that submits to Slurm).
``run_page`` runs in a process of its own (see tests/test_docs_examples.py): a fresh ``NNTRANSFER_HOME`` and
working directory for the page, one namespace for all its blocks, in order.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import traceback
import types
from pathlib import Path
from typing import NamedTuple

NO_RUN = "<!-- no-run -->"
_FENCE = re.compile(r"^```python\s*$")


class Block(NamedTuple):
    page: str
    line: int  # of the opening fence, 1-based
    code: str
    runs: bool


def blocks(page: Path) -> list[Block]:
    """Every ```python block of ``page``, with whether it runs (not marked ``<!-- no-run -->``)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"{page}:{i + 1}: a ```python block that is never closed")
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            found.append(Block(str(page), i + 1, "\n".join(lines[i + 1:end]) + "\n", before != NO_RUN))
            i = end
        i += 1
    return found


def run_page(page: str, home: str, workdir: str) -> dict:
    """Run the page's runnable blocks in order in one namespace, with ``NNTRANSFER_HOME=home`` and ``workdir`` as
    the working directory. Returns ``{"ran": n, "failed": None | {"line": ..., "traceback": ...}}``."""
    os.environ["NNTRANSFER_HOME"] = home
    os.environ["MPLBACKEND"] = "Agg"  # plots render without a display
    os.chdir(workdir)
    # the blocks are the page's __main__ module, as a script's code is (classes defined there find their module)
    main = types.ModuleType("__main__")
    main.__file__ = page
    sys.modules["__main__"] = main
    namespace = main.__dict__
    ran, failed = 0, None
    try:
        for block in blocks(Path(page)):
            if not block.runs:
                continue
            try:
                exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)  # noqa: S102 - the docs
            except BaseException:  # noqa: BLE001 - reported to the test, with the page's line numbers
                failed = {"line": block.line, "traceback": traceback.format_exc()}
                break
            ran += 1
    finally:
        _stop_database(home)
    return {"ran": ran, "failed": failed}


def _stop_database(home: str) -> None:
    """Stop the page's embedded server if a block started one (as root its data lives outside ``home``)."""
    if "nntransfer.store.db" not in sys.modules:
        return
    from nntransfer.store import db

    if db.server_configured() or not db.status().get("running"):
        return
    data = db.data_dir()
    db.stop()
    if not str(data).startswith(home):
        shutil.rmtree(data.parent, ignore_errors=True)
