"""Where the trainer keeps its full state between epochs, so that a killed run resumes exactly.

A store implements :class:`CheckpointStore`. The DataJoint table store lives in
``nntransfer.tables.trained_model``; here are an in-memory one and one on a directory. States
contain only tensors, plain containers and numbers, so they load with ``weights_only=True``.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


class CheckpointStore(Protocol):
    def latest(self) -> dict | None:
        """The newest saved training state, or None."""

    def save(self, epoch: int, score: float, state: dict) -> None:
        """Save the state of ``epoch`` with its validation ``score`` (higher is better)."""

    def prune(self, keep_last_n: int, keep_best_n: int) -> None:
        """Delete all but the newest ``keep_last_n`` and the best ``keep_best_n`` checkpoints."""


def _choose(entries: list[tuple[int, float]], keep_last_n: int, keep_best_n: int) -> set[int]:
    """Epochs to keep among ``(epoch, score)`` entries."""
    by_epoch = sorted(entries)
    keep = {e for e, _ in by_epoch[-keep_last_n:]} if keep_last_n > 0 else set()
    if keep_best_n > 0:
        keep |= {e for e, _ in sorted(entries, key=lambda x: x[1], reverse=True)[:keep_best_n]}
    return keep


class MemoryCheckpointStore:
    """Checkpoints in a dict (tests, notebooks)."""

    def __init__(self):
        self.states: dict[int, tuple[float, dict]] = {}

    def latest(self):
        if not self.states:
            return None
        return self.states[max(self.states)][1]

    def save(self, epoch, score, state):
        # a copy: the state's tensors are the live parameters and optimizer buffers
        self.states[int(epoch)] = (float(score), _clone(state))

    def prune(self, keep_last_n, keep_best_n):
        keep = _choose([(e, s) for e, (s, _) in self.states.items()], keep_last_n, keep_best_n)
        self.states = {e: v for e, v in self.states.items() if e in keep}


class DirectoryCheckpointStore:
    """One file per checkpoint, ``epoch-<n>_score-<s>.pt``, written atomically (temp file + rename)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _entries(self) -> dict[int, tuple[float, Path]]:
        out = {}
        for file in self.path.glob("epoch-*_score-*.pt"):
            epoch, score = file.stem.split("_score-")
            out[int(epoch.removeprefix("epoch-"))] = (float(score), file)
        return out

    def latest(self):
        entries = self._entries()
        if not entries:
            return None
        return torch.load(entries[max(entries)][1], map_location="cpu", weights_only=True)

    def save(self, epoch, score, state):
        fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".tmp")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, self.path / f"epoch-{int(epoch)}_score-{float(score)!r}.pt")

    def prune(self, keep_last_n, keep_best_n):
        entries = self._entries()
        keep = _choose([(e, s) for e, (s, _) in entries.items()], keep_last_n, keep_best_n)
        for epoch, (_, file) in entries.items():
            if epoch not in keep:
                file.unlink()


def _clone(value):
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


# -- random number generator states as tensors --------------------------------------------------
def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(plain) -> tuple:
    version, internal, gauss = plain
    return version, tuple(internal), gauss
