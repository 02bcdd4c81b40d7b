"""Per-pass (and optionally per-batch) objectives, stored as the ``output`` of a trained model."""
from __future__ import annotations

import contextlib
import logging

logger = logging.getLogger("nntransfer.trainer")


class Tracker:
    """Objectives by mode and task, one value per pass.

    ``log["Validation"]["img_classification"]["accuracy"] == [0.81, 0.85, ...]``: the history of the passes
    during training; ``epochs[mode][i]`` and ``steps[mode][i]`` are the epoch and the optimizer step count
    at the i-th pass of ``mode``. ``final[mode][task][objective]`` holds the single values of the final
    passes after training (the validation of the returned, by default restored-best, parameters and the
    test), so that they never show up as a jump at the end of a history. ``iterations`` has every batch's
    loss when ``track_iterations`` is on. ``state_dict()`` is plain nested dicts and lists (a DataJoint
    blob and a weights-only checkpoint).
    """

    def __init__(self):
        self.log: dict = {}
        self.epochs: dict = {}
        self.steps: dict = {}
        self.final: dict = {}
        self.iterations: dict = {}
        self._recording_final = False

    def add(self, mode: str, task: str, objective: str, value: float) -> None:
        if self._recording_final:
            self.final.setdefault(mode, {}).setdefault(task, {})[objective] = float(value)
        else:
            self.log.setdefault(mode, {}).setdefault(task, {}).setdefault(objective, []).append(float(value))

    def add_pass(self, mode: str, epoch: int, step: int) -> None:
        """Mark a pass of ``mode`` as ended at ``epoch`` / ``step`` (not for the final passes)."""
        if not self._recording_final:
            self.epochs.setdefault(mode, []).append(int(epoch))
            self.steps.setdefault(mode, []).append(int(step))

    @contextlib.contextmanager
    def recording_final(self):
        """Values added inside go to ``final`` (one value per mode, task and objective)."""
        self._recording_final = True
        try:
            yield
        finally:
            self._recording_final = False

    def add_iteration(self, mode: str, task: str, loss: float) -> None:
        self.iterations.setdefault(mode, {}).setdefault(task, []).append(float(loss))

    def epoch_line(self, epoch: int) -> str:
        parts = [f"epoch {epoch}"]
        for mode, tasks in self.log.items():
            if self.epochs.get(mode) and self.epochs[mode][-1] == epoch:
                for task, objectives in tasks.items():
                    shown = ", ".join(f"{k} {v[-1]:.4g}" for k, v in objectives.items())
                    parts.append(f"{mode}/{task}: {shown}")
        return " | ".join(parts)

    def state_dict(self) -> dict:
        return {"log": _copy(self.log), "epochs": _copy(self.epochs), "steps": _copy(self.steps),
                "final": _copy(self.final), "iterations": _copy(self.iterations)}

    def load_state_dict(self, state: dict) -> None:
        self.log = _copy(state["log"])
        self.epochs = _copy(state["epochs"])
        self.steps = _copy(state.get("steps", {}))
        self.final = _copy(state.get("final", {}))
        self.iterations = _copy(state.get("iterations", {}))


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
