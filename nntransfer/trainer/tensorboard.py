"""TensorBoard event files of a training run (``TrainerConfig(tensorboard=True)``; ``pip install 'nntransfer[tensorboard]'``).

Where: ``$NNTRANSFER_HOME/runs/keys/<key hash>/``, one directory per trained entry; the key hash is
``make_hash`` of the entry's key (the ``key_hash`` column of ``results_frame``). The trainer does not know
the experiment's name (one key can belong to several named experiments), so names are added when you look:
``nntransfer results RECIPE --tensorboard`` links every entry of the recipe as
``$NNTRANSFER_HOME/runs/<recipe>/<name>/seed<seed>-step<step>`` and prints the ``tensorboard --logdir`` command.

What: every value the tracker records, as the scalar ``<mode>/<task>/<metric>`` (e.g.
``Validation/img_classification/accuracy``) at its epoch, written after every epoch; with
``track_iterations`` also ``<mode>/<task>/batch_loss`` per batch. The evaluation of the restored best
parameters at the end repeats the last epoch; it is written as ``final/<mode>/<task>/<metric>``. A resumed
run rewrites its history from the restored tracker (earlier events of the directory are purged).
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from ..core.compat import make_hash
from ..core.settings import home
from ..errors import ConfigError

RUNS = "runs"
KEYS = "keys"


def runs_root() -> Path:
    return home() / RUNS


def run_dir(uid) -> Path:
    """The event directory of an entry: ``uid`` is its key (dict) or the key's hash (nnfabrik passes either)."""
    if isinstance(uid, dict):
        name = make_hash(dict(uid))
    elif uid:
        name = str(uid)
    else:  # a trainer called by hand, not by a table's make
        name = f"unkeyed-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    return runs_root() / KEYS / name


class TensorBoardLog:
    """Writes what the tracker gained since the last call (``write`` after each epoch, ``write_final`` once
    training ended, then ``close``)."""

    def __init__(self, directory: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError("TrainerConfig.tensorboard=True needs the tensorboard package: "
                              "pip install 'nntransfer[tensorboard]'") from err
        resumed = directory.is_dir() and any(directory.iterdir())
        directory.mkdir(parents=True, exist_ok=True)
        # a resumed run writes its whole history again: hide the earlier events of this directory
        self.writer = SummaryWriter(str(directory), purge_step=1 if resumed else None)
        self.directory = directory
        self._written: dict = {}  # series -> number of values written

    def write(self, tracker) -> None:
        for mode, tasks in tracker.log.items():
            epochs = tracker.epochs.get(mode, [])
            for task, metrics in tasks.items():
                for metric, values in metrics.items():
                    self._series(f"{mode}/{task}/{metric}", values, epochs)
        for mode, tasks in tracker.iterations.items():
            for task, losses in tasks.items():
                tag = f"{mode}/{task}/batch_loss"
                for step in range(self._written.get(tag, 0), len(losses)):
                    self.writer.add_scalar(tag, losses[step], step + 1)
                self._written[tag] = len(losses)
        self.writer.flush()

    def _series(self, tag: str, values: list, epochs: list) -> None:
        start = self._written.get(tag, 0)
        for i in range(start, len(values)):
            # a series with one value per pass has its epochs; others (per-batch logs) are numbered
            self.writer.add_scalar(tag, values[i], epochs[i] if len(epochs) == len(values) else i + 1)
        self._written[tag] = len(values)

    def write_final(self, tracker) -> None:
        """The final passes (validation of the returned parameters, test) under ``final/``, at the last epoch."""
        self.write(tracker)
        last = max((e[-1] for e in tracker.epochs.values() if e), default=0)
        for mode, tasks in tracker.final.items():
            for task, metrics in tasks.items():
                for metric, value in metrics.items():
                    self.writer.add_scalar(f"final/{mode}/{task}/{metric}", value, last)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NoLog:
    """Stands in for TensorBoardLog when ``tensorboard`` is off."""

    def write(self, tracker) -> None:
        pass

    def write_final(self, tracker) -> None:
        pass

    def close(self) -> None:
        pass


def open_log(config, uid) -> TensorBoardLog | NoLog:
    """The run's TensorBoard log if ``config.tensorboard`` is set, else one that writes nothing."""
    return TensorBoardLog(run_dir(uid)) if config.tensorboard else NoLog()


__all__ = ["NoLog", "TensorBoardLog", "open_log", "run_dir", "runs_root"]
