"""Stopping a run on request (SIGTERM/SIGINT at a time limit, preemption, ``scancel``, Ctrl-C): the trainer checks
its :class:`StopToken` at batch boundaries, writes a checkpoint and raises :class:`TrainingInterrupted`. The token
lives in :mod:`nntransfer.core.stop` (workers and job tables use it without torch); the names are here too.
"""
from ..core.stop import StopToken, active_tokens, request_stop, stop_reason, stop_requested
from ..errors import TrainingInterrupted

__all__ = ["StopToken", "TrainingInterrupted", "active_tokens", "request_stop", "stop_reason", "stop_requested"]
