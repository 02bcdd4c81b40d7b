"""Stop requests, one per run: a token that signal handlers, a job table or user code set, and the trainer checks.

A token belongs to one run (one ``train``/``run``/worker session), so a stop requested in one notebook cell never
leaks into the next run. :func:`request_stop` asks every run in progress in this process to stop.
"""
from __future__ import annotations

import threading
import weakref

_active: "weakref.WeakSet[StopToken]" = weakref.WeakSet()
_active_lock = threading.Lock()


class StopToken:
    """A stop request for one run: ``request(reason)`` sets it, ``requested`` tells, ``reason`` says why."""

    def __init__(self):
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str = "stop requested") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def __enter__(self) -> "StopToken":
        """While entered, :func:`request_stop` reaches this token (the run is in progress)."""
        with _active_lock:
            _active.add(self)
        return self

    def __exit__(self, *exc) -> None:
        with _active_lock:
            _active.discard(self)


def request_stop(reason: str = "stop requested") -> None:
    """Ask every run in progress in this process to stop (checkpoint, release, raise ``TrainingInterrupted``)."""
    with _active_lock:
        tokens = list(_active)
    for token in tokens:
        token.request(reason)


def stop_requested() -> bool:
    """Whether a run in progress in this process was asked to stop."""
    with _active_lock:
        return any(token.requested for token in _active)


__all__ = ["StopToken", "request_stop", "stop_requested"]
