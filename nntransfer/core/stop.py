"""Stop requests, one per run: a token that signal handlers, a job table or user code set, and the trainer checks.

Every run has a :class:`StopToken` (``Trainer(..., stop=token)``; a fresh one when none is given). The trainer
checks it at batch boundaries and before each epoch; once it is requested, the trainer writes a checkpoint and
raises ``TrainingInterrupted``. A worker treats that exception as "release the job", never as an error:
stopping is not failing. (Here, below every layer, so that workers and job tables use tokens without torch.)

Whoever cannot reach the token calls :func:`request_stop`: it requests every token that is *active* in this
process — a Trainer's while it trains, and any other that its owner keeps active with ``with token:`` (a
worker's, for as long as it takes jobs). Nothing outlives them: once those runs have ended, a new run starts with
a fresh token and trains to its end.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import weakref


class StopToken:
    """A stop request for one run (or one worker): ``request(reason)``, then ``requested`` is True for good.

    ``with token:`` makes it active (reached by :func:`request_stop`) within the block; blocks may nest (a worker's
    token handed to the trainer stays active after the trainer's block ends)."""

    def __init__(self):
        self._event = threading.Event()
        self._reason = ""

    def request(self, reason: str = "stop requested") -> None:
        if not self._event.is_set():  # the first request's reason is the one reported
            self._reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    def __enter__(self) -> "StopToken":
        with _ACTIVE_LOCK:
            _set_active(self, +1)
        return self

    def __exit__(self, *exc) -> None:
        with _ACTIVE_LOCK:
            _set_active(self, -1)

    def __repr__(self) -> str:
        return f"StopToken(requested={self.requested}, reason={self._reason!r})"


# The active tokens, held weakly: a tuple replaced as a whole, so that a signal handler can read it at any moment
# without a lock (the main thread may hold the lock when the handler runs).
_ACTIVE: tuple[weakref.ref, ...] = ()
_ACTIVE_COUNTS: "weakref.WeakKeyDictionary[StopToken, int]" = weakref.WeakKeyDictionary()
_ACTIVE_LOCK = threading.Lock()


def _set_active(token: StopToken, change: int) -> None:
    global _ACTIVE
    count = _ACTIVE_COUNTS.get(token, 0) + change
    if count > 0:
        _ACTIVE_COUNTS[token] = count
    else:
        _ACTIVE_COUNTS.pop(token, None)
    _ACTIVE = tuple(weakref.ref(t) for t in _ACTIVE_COUNTS.keys())


def active_tokens() -> list[StopToken]:
    return [token for token in (ref() for ref in _ACTIVE) if token is not None]


def request_stop(reason: str = "stop requested") -> int:
    """Request a stop of every run (and worker) in progress in this process; returns how many tokens it reached.
    Safe in a signal handler. A run that starts afterwards is not affected."""
    tokens = active_tokens()
    for token in tokens:
        token.request(reason)
    return len(tokens)


def stop_requested() -> bool:
    """Whether a stop was requested for a run or worker in progress in this process (one of the active tokens)."""
    return any(token.requested for token in active_tokens())


def stop_reason() -> str:
    """The reason of the first active token that was requested ("" if none)."""
    return next((token.reason for token in active_tokens() if token.requested), "")


@contextlib.contextmanager
def signals_deferred(signals=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, SIGTERM/SIGINT are held back and delivered when it ends (main thread; elsewhere the block
    runs as it is). For short steps a signal must not cut in half, such as putting a stopped job back in the queue:
    several workers share a Ctrl-C (the terminal's) and a SIGTERM from their parent, which come moments apart."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


__all__ = ["StopToken", "active_tokens", "request_stop", "signals_deferred", "stop_reason", "stop_requested"]
