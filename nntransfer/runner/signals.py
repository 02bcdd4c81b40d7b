"""SIGTERM / SIGINT turn into a stop request: the trainer checkpoints, the job is released, the worker exits 0.

Slurm sends SIGTERM at time limits, preemption and ``scancel``; Ctrl-C sends SIGINT. The first signal
calls :func:`nntransfer.trainer.interrupt.request_stop`; a second SIGINT stops at once
(``KeyboardInterrupt``; the job is still released, from its last checkpoint).
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading

from ..trainer.interrupt import request_stop, stop_requested

logger = logging.getLogger(__name__)


def _handler(signum, frame):
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and stop_requested():
        raise KeyboardInterrupt(f"second {name}: stopping at once")
    request_stop(f"{name} received")
    logger.warning("%s received: stopping after the next checkpoint%s", name,
                   "; press Ctrl-C again to stop at once" if signum == signal.SIGINT else "")


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, the signals request a graceful stop (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["stop_on_signals"]
