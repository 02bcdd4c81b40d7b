"""Stopping a run on request (SIGTERM/SIGINT at a time limit, preemption, ``scancel``, Ctrl-C).

Whoever receives the request (a worker's signal handler) calls :func:`request_stop`; the trainer checks
:func:`stop_requested` at batch boundaries, writes a checkpoint and raises :class:`TrainingInterrupted`.
A worker treats that exception as "release the job", never as an error: stopping is not failing.
"""
from __future__ import annotations

import threading

_stop = threading.Event()
_reason = [""]


class TrainingInterrupted(Exception):
    """Training stopped on request after its state was checkpointed; the job should be released, not failed."""


def request_stop(reason: str = "stop requested") -> None:
    _reason[0] = reason
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_reason() -> str:
    return _reason[0]


def clear_stop() -> None:
    _stop.clear()
    _reason[0] = ""


__all__ = ["TrainingInterrupted", "clear_stop", "request_stop", "stop_reason", "stop_requested"]
