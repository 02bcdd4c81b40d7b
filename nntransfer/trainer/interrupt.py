"""Stopping a run on request (SIGTERM/SIGINT at a time limit, preemption, ``scancel``, Ctrl-C).

Whoever receives the request (a signal handler, a job table) sets the run's :class:`StopToken`; the trainer
checks it at batch boundaries, writes a checkpoint and raises :class:`TrainingInterrupted`. A worker treats
that exception as "release the job", never as an error: stopping is not failing.
"""
from __future__ import annotations

from ..core.stop import StopToken, request_stop, stop_requested
from ..errors import TrainingInterrupted

__all__ = ["StopToken", "TrainingInterrupted", "request_stop", "stop_requested"]
