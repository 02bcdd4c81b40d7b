"""SIGTERM / SIGINT turn into a stop request of one run: the trainer checkpoints, the job is released.

Slurm sends SIGTERM at time limits, preemption and ``scancel``; Ctrl-C sends SIGINT. Within
:func:`stop_on_signals` the first signal requests a stop of the given :class:`~nntransfer.trainer.StopToken`;
a second SIGINT stops at once (``KeyboardInterrupt``; a job is still released, from its last checkpoint).
Outside the block nothing is left behind: the next run in the same process (a notebook) has its own token.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading

from ..trainer import StopToken

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(stop: StopToken, signals=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, the signals request ``stop`` (main thread only; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and stop.requested:
            raise KeyboardInterrupt(f"second {name}: stopping at once")
        if not stop.requested:
            logger.info("%s received: stopping after the next checkpoint%s", name,
                        "; press Ctrl-C again to stop at once" if signum == signal.SIGINT else "")
        stop.request(f"{name} received")

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["stop_on_signals"]
