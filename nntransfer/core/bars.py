"""Progress bars (tqdm) that suit terminals and notebooks alike.

One bar per training run: the trainer's epoch bar (:func:`run_bar`). The passes over the data inside
it (:func:`pass_bar`) do not open bars of their own; they show ``Training 3: 120/400`` in the run bar,
and the epoch's log line (:func:`write`) replaces that text in a notebook. So a notebook keeps one bar
per run that is updated in place, not hundreds of widget outputs or lines. In a terminal the epoch
lines are printed above the bar as before, and bars of finished runs are cleared.

Where the bars go: a Jupyter kernel with ipywidgets installed gets widget bars; anything else (a
terminal, a notebook without ipywidgets, a kernel run by nbclient) gets plain-text bars, in a notebook
refreshed at most once a second. ``NNTRANSFER_PROGRESS=text`` or ``=widget`` overrides the choice.
"""
from __future__ import annotations

import os
import sys
import time
import weakref
from typing import Iterable

# run bars that are open, innermost last; weak, so that the bar of a run that raised goes with its frame
_runs: list[weakref.ref] = []


def _open_run():
    """The innermost open run bar, or None."""
    while _runs and _runs[-1]() is None:
        _runs.pop()
    return _runs[-1]() if _runs else None


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a terminal IPython)."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and "IPKernelApp" in shell.get_ipython().config
    except AttributeError:  # IPython imported, but no shell running
        return False


def use_widgets() -> bool:
    choice = os.environ.get("NNTRANSFER_PROGRESS", "").lower()
    if choice in ("text", "widget"):
        return choice == "widget"
    if not in_notebook():
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _base():
    if use_widgets():
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


class _RunMixin:
    """A run bar: passes report into it while it is open."""

    _last_note = 0.0

    def note(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_note >= self.mininterval:
            self._last_note = now
            self.set_postfix_str(text, refresh=True)

    def close(self):
        _runs[:] = [ref for ref in _runs if ref() is not None and ref() is not self]
        super().close()


_classes: dict = {}


def _run_class(base):
    if base not in _classes:
        _classes[base] = type("RunBar", (_RunMixin, base), {})
    return _classes[base]


def run_bar(total: int | None = None, initial: int = 0, desc: str = "", disable: bool = False):
    """The one bar of a training run (update it once per epoch; close it at the end)."""
    notebook = in_notebook()
    bar = _run_class(_base())(total=total, initial=initial, desc=desc, disable=disable, leave=notebook,
                              mininterval=1.0 if notebook else 0.1, dynamic_ncols=not notebook)
    if not disable:
        _runs.append(weakref.ref(bar))
    return bar


class _Pass:
    """A pass over the data shown in the open run bar; iterate it, then ``close()`` it."""

    def __init__(self, iterable: Iterable, run, total: int | None, desc: str):
        self.iterable, self.run, self.total, self.desc = iterable, run, total, desc

    def __iter__(self):
        of = f"/{self.total}" if self.total else ""
        for i, item in enumerate(self.iterable, 1):
            yield item
            self.run.note(f"{self.desc}: {i}{of}")

    def close(self) -> None:
        pass


def pass_bar(iterable: Iterable, total: int | None = None, desc: str = "", disable: bool = False):
    """Progress of one pass over the data: inside a run bar it is shown there, otherwise as its own bar."""
    run = None if disable else _open_run()
    if run is not None:
        return _Pass(iterable, run, total, desc)
    return _base()(iterable, total=total, desc=desc, disable=disable, leave=False)


def write(line: str) -> None:
    """A log line for people watching: in a notebook it replaces the run bar's text, elsewhere it is printed
    above the bars."""
    run = _open_run() if in_notebook() else None
    if run is not None:
        run.note(line, force=True)
    else:
        _base().write(line)


__all__ = ["in_notebook", "pass_bar", "run_bar", "use_widgets", "write"]
