"""Where the trainer keeps its full state, so that a killed or stopped run resumes exactly.

A store implements :class:`CheckpointStore`. The DataJoint table store lives in
``nntransfer.store.trained_model``; here are an in-memory one and one on a directory. States
contain only tensors, plain containers and numbers, so they load with ``weights_only=True``.

The trainer writes checkpoints in the background (:class:`BackgroundWriter`): it snapshots its state off
the accelerator and calls ``store.save`` then ``store.prune`` from a writer thread while training goes on.
"""
from __future__ import annotations

import logging
import os
import random
import tempfile
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

logger = logging.getLogger("nntransfer.trainer")


class CheckpointStore(Protocol):
    """Checkpoints of one training run, keyed by epoch.

    ``save`` and ``prune`` may be called from a background thread (never two at once, and never at the same
    time as ``latest``) while the training thread goes on, e.g. calling the trainer's ``cb``; a store that
    shares a resource with other code (a database connection) must be safe for that. The ``state`` given to
    ``save`` is a snapshot whose tensors the trainer reuses for its next checkpoint: a store copies what it
    keeps (serialising it does that). A ``save`` that fails half-way must leave the previous checkpoints as
    they were.
    """

    def latest(self) -> dict | None:
        """The newest saved training state (highest epoch), or None."""

    def save(self, epoch: int, score: float, state: dict) -> None:
        """Save the state of ``epoch`` with its validation ``score`` (higher is better). A later state of the
        same epoch (a checkpoint in the middle of an epoch, then the one at its end) replaces the earlier."""

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
        # a copy: what is loaded from it (optimizer buffers) is then trained in place
        return _clone(self.states[max(self.states)][1])

    def save(self, epoch, score, state):
        # a copy: the trainer reuses the snapshot's buffers
        self.states[int(epoch)] = (float(score), _clone(state))

    def prune(self, keep_last_n, keep_best_n):
        keep = _choose([(e, s) for e, (s, _) in self.states.items()], keep_last_n, keep_best_n)
        self.states = {e: v for e, v in self.states.items() if e in keep}


class DirectoryCheckpointStore:
    """One file per checkpoint, ``epoch-<n>_score-<s>.pt``, written atomically (temp file, fsync, rename).

    A crash while writing leaves only a ``*.tmp`` file, which is ignored (and removed by the next prune).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _files(self) -> dict[int, list[tuple[int, float, Path]]]:
        """epoch -> [(mtime_ns, score, file)] (two files of one epoch exist only after a crash between the
        rename of the new one and the removal of the old one: the newer wins)."""
        out: dict[int, list] = {}
        for file in self.path.glob("epoch-*_score-*.pt"):
            epoch, score = file.stem.split("_score-")
            out.setdefault(int(epoch.removeprefix("epoch-")), []).append((file.stat().st_mtime_ns, float(score), file))
        return {epoch: sorted(versions) for epoch, versions in out.items()}

    def _entries(self) -> dict[int, tuple[float, Path]]:
        return {epoch: versions[-1][1:] for epoch, versions in self._files().items()}

    def latest(self):
        entries = self._entries()
        if not entries:
            return None
        return torch.load(entries[max(entries)][1], map_location="cpu", weights_only=True)

    def save(self, epoch, score, state):
        fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(state, file)
                file.flush()
                os.fsync(file.fileno())  # on disk before it replaces anything
            target = self.path / f"epoch-{int(epoch)}_score-{float(score)!r}.pt"
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for _, _, older in self._files().get(int(epoch), []):  # an earlier state of the same epoch
            if older != target:
                older.unlink(missing_ok=True)

    def prune(self, keep_last_n, keep_best_n):
        entries = self._entries()
        keep = _choose([(e, s) for e, (s, _) in entries.items()], keep_last_n, keep_best_n)
        for epoch, (_, file) in entries.items():
            if epoch not in keep:
                file.unlink()
        for stale in self.path.glob("*.tmp"):  # left by a crash mid-write (at most one write runs at a time)
            stale.unlink(missing_ok=True)


class CheckpointWriteFailed(RuntimeError):
    """Writing a checkpoint in the background failed (the previous checkpoints are unchanged)."""


class BackgroundWriter:
    """Writes checkpoints to ``store`` in a background thread, at most one in flight.

    :meth:`submit` waits for the previous write, snapshots the state (tensors on an accelerator are copied
    into reused pinned host buffers with non-blocking copies; CPU tensors are cloned), and starts a thread
    that waits for the copies, then calls ``store.save`` and ``store.prune``. The training thread never
    waits for the device. :meth:`wait` joins the pending write and raises :class:`CheckpointWriteFailed`
    if it failed; interrupted (Ctrl-C) while it waits, it lets the write finish before the interrupt goes on,
    so that no write outlives the run that started it.
    """

    def __init__(self, store: CheckpointStore, keep_last_n: int, keep_best_n: int):
        self.store, self.keep_last_n, self.keep_best_n = store, keep_last_n, keep_best_n
        self._buffers: dict = {}
        self._thread: threading.Thread | None = None
        self._written = threading.Event()  # set when the write in flight has ended (stored or failed)
        self._error: BaseException | None = None

    def submit(self, epoch: int, score: float, state: dict) -> None:
        self.wait()
        snapshot, copies_done = _snapshot(state, self._buffers)
        self._written = threading.Event()
        self._thread = threading.Thread(target=self._write, args=(epoch, score, snapshot, copies_done, self._written),
                                        name="nntransfer-checkpoint-writer")
        self._thread.start()

    def _write(self, epoch, score, snapshot, copies_done, written: threading.Event) -> None:
        try:
            for event in copies_done:
                event.synchronize()
            self.store.save(epoch, score, snapshot)
            self.store.prune(self.keep_last_n, self.keep_best_n)
        except BaseException as err:  # reported by the training thread (wait / the next submit)
            self._error = err
        finally:
            written.set()

    def wait(self) -> None:
        thread = self._thread
        if thread is not None:
            _wait_through_interrupts(self._written)
            thread.join()  # returns at once: the write has ended
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise CheckpointWriteFailed(f"writing a checkpoint failed: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        """Wait for the pending write (logging, not raising, a failure) and free the pinned buffers."""
        try:
            self.wait()
        except CheckpointWriteFailed as err:
            logger.error("%s", err)
        finally:
            self._buffers.clear()


def _wait_through_interrupts(written: threading.Event) -> None:
    """Wait until ``written`` is set; a KeyboardInterrupt meanwhile (a second Ctrl-C while a stop waits for its
    checkpoint) is raised only once it is. Abandoning the write would leave the store being written while the caller
    goes on (a resumed run could read it half-way), and the run without its last checkpoint. (An event, not
    ``Thread.join``: on Python 3.11 a join interrupted by KeyboardInterrupt marks a running thread as finished.)"""
    interrupted = None
    while True:
        try:
            written.wait()
            break
        except KeyboardInterrupt as err:
            if interrupted is None:
                logger.warning("finishing the checkpoint write in progress before stopping")
            interrupted = err
    if interrupted is not None:
        raise interrupted


def _snapshot(state, buffers: dict):
    """A copy of ``state`` on the host, and CUDA events that mark when its device-to-host copies are done."""
    devices = set()

    def copy(value, path):
        if torch.is_tensor(value):
            value = value.detach()
            if value.device.type == "cpu":
                return value.clone()
            if value.device.type != "cuda":  # other accelerators: a plain (synchronous) copy
                return value.to("cpu")
            buffer = buffers.get(path)
            if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype \
                    or buffer.stride() != value.stride():
                buffer = torch.empty_like(value, device="cpu", pin_memory=True)
                buffers[path] = buffer
            buffer.copy_(value, non_blocking=True)
            devices.add(value.device)
            return buffer
        if isinstance(value, dict):
            return {k: copy(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(copy(v, path + (i,)) for i, v in enumerate(value))
        return value

    snapshot = copy(state, ())
    events = []
    for device in devices:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        events.append(event)
    return snapshot, events


def map_tensors(fn, value):
    """``value`` with ``fn`` applied to every tensor in its dicts, lists and tuples."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, v) for v in value)
    return value


def _clone(value):
    return map_tensors(lambda tensor: tensor.detach().clone(), value)


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
