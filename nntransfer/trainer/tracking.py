"""Per-epoch (and optionally per-batch) objectives, stored as the ``output`` of a trained model."""
from __future__ import annotations

import logging

logger = logging.getLogger("nntransfer.trainer")


class Tracker:
    """Objectives by mode and task: ``log["Validation"]["img_classification"]["accuracy"] == [0.81, 0.85, ...]``.

    ``epochs[i]`` is the epoch of the i-th value of a mode that is evaluated every ``interval`` epochs;
    ``state_dict()`` is plain nested dicts and lists (a DataJoint blob and a weights-only checkpoint).
    """

    def __init__(self):
        self.log: dict = {}
        self.epochs: dict = {}
        self.iterations: dict = {}

    def add(self, mode: str, task: str, objective: str, value: float) -> None:
        self.log.setdefault(mode, {}).setdefault(task, {}).setdefault(objective, []).append(float(value))

    def add_epoch(self, mode: str, epoch: int) -> None:
        self.epochs.setdefault(mode, []).append(int(epoch))

    def add_iteration(self, mode: str, task: str, loss: float) -> None:
        self.iterations.setdefault(mode, {}).setdefault(task, []).append(float(loss))

    def last(self, mode: str, task: str, objective: str) -> float:
        return self.log[mode][task][objective][-1]

    def mean_last(self, mode: str, objective: str) -> float:
        """Mean over tasks of the latest value of ``objective`` in ``mode``."""
        values = [objs[objective][-1] for objs in self.log.get(mode, {}).values() if objective in objs]
        if not values:
            raise KeyError(f"no {objective!r} was tracked in mode {mode!r}")
        return sum(values) / len(values)

    def epoch_line(self, epoch: int) -> str:
        parts = [f"epoch {epoch}"]
        for mode, tasks in self.log.items():
            if self.epochs.get(mode) and self.epochs[mode][-1] == epoch:
                for task, objectives in tasks.items():
                    shown = ", ".join(f"{k} {v[-1]:.4g}" for k, v in objectives.items())
                    parts.append(f"{mode}/{task}: {shown}")
        return " | ".join(parts)

    def state_dict(self) -> dict:
        return {"log": _copy(self.log), "epochs": _copy(self.epochs), "iterations": _copy(self.iterations)}

    def load_state_dict(self, state: dict) -> None:
        self.log = _copy(state["log"])
        self.epochs = _copy(state["epochs"])
        self.iterations = _copy(state.get("iterations", {}))


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
