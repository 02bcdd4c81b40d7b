"""Where training is: one object that the trainer moves forward, a checkpoint saves and a resumed run restores.

Like Lightning's progress tracking, the position is data of its own, apart from what is trained (model,
optimizer, accumulators): the counters, and the decisions that read only them — is this the last epoch,
is an evaluation or a checkpoint due, has the step budget been spent — so that they can be tested without
a model.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class Progress:
    """The trainer's position.

    * ``epoch``: the epoch in progress, or the last one finished (0 before the first);
    * ``batch``: batches of this epoch's training pass done so far, cancelled ones included; 0 between
      training passes, so a position with ``batch > 0`` is in the middle of an epoch;
    * ``steps``: optimizer steps taken;
    * ``pending``: backward passes since the last optimizer step (gradient accumulation);
    * ``evaluated_at_step``: the step count at the latest validation (None before the first);
    * ``events_at_step``: the step count whose step-based evaluation and checkpoint have run;
    * ``stopped``: early stopping decided (a resumed run does not go on);
    * ``last_score``: the latest validation score, higher is better (-inf before the first);
    * ``saved_at``: the position (epoch, batch, steps) of the latest checkpoint; not saved itself (a loaded
      position is the one saved).
    """

    epoch: int = 0
    batch: int = 0
    steps: int = 0
    pending: int = 0
    evaluated_at_step: int | None = None
    events_at_step: int = 0
    stopped: bool = False
    last_score: float = -math.inf
    saved_at: tuple[int, int, int] | None = None

    # -- where --------------------------------------------------------------------------------------
    @property
    def position(self) -> tuple[int, int, int]:
        return self.epoch, self.batch, self.steps

    @property
    def mid_epoch(self) -> bool:
        return self.batch > 0

    @property
    def saved(self) -> bool:
        """A checkpoint of exactly this position exists (written, or the one this run resumed from)."""
        return self.saved_at == self.position

    def describe(self) -> str:
        where = f"in epoch {self.epoch} after batch {self.batch}" if self.mid_epoch else f"after epoch {self.epoch}"
        return f"{where} ({self.steps} steps)"

    # -- moving on ------------------------------------------------------------------------------------
    def start_epoch(self) -> None:
        """The next epoch begins, unless this position is in the middle of one (resumed): that one goes on."""
        if not self.mid_epoch:
            self.epoch += 1

    def end_training_pass(self) -> None:
        self.batch = 0

    def backward_done(self, accumulate: int) -> bool:
        """Count a backward pass; True when it completes a step of ``accumulate`` batches."""
        self.pending += 1
        return self.pending >= accumulate

    def mark_saved(self) -> None:
        self.saved_at = self.position

    # -- decisions ------------------------------------------------------------------------------------
    # ``config`` is a TrainerConfig (or anything with its fields): these read only the position and the config.
    def budget_spent(self, config) -> bool:
        return config.max_steps is not None and self.steps >= config.max_steps

    def last_epoch(self, config) -> bool:
        """Training ends after this epoch: early stopping decided, the step budget spent, or ``max_iter`` reached."""
        return self.stopped or self.budget_spent(config) or (config.max_steps is None and self.epoch >= config.max_iter)

    def finished(self, config) -> bool:
        """No epoch (or rest of one) is left to train. A resumed position in the middle of an epoch is never
        finished: the rest of that epoch comes first."""
        return not self.mid_epoch and self.last_epoch(config)

    def pass_over(self, config) -> bool:
        """The training pass ends now (early stopping, or the step budget spent mid-epoch)."""
        return self.stopped or self.budget_spent(config)

    def evaluation_due_after_epoch(self, config) -> bool:
        """At the end of an epoch: every ``interval`` epochs and after the last; with ``eval_every_steps`` only
        after the last, unless its last step was just evaluated."""
        if config.eval_every_steps:
            return self.last_epoch(config) and self.evaluated_at_step != self.steps
        return self.epoch % config.interval == 0 or self.last_epoch(config)

    def checkpoint_due_after_epoch(self, config) -> bool:
        return bool(config.save_every_n) and self.epoch % config.save_every_n == 0

    def step_events_due(self) -> bool:
        """A step was taken whose step-based evaluation and checkpoint have not run yet."""
        return self.steps != self.events_at_step

    def evaluation_due_after_step(self, config) -> bool:
        return bool(config.eval_every_steps) and self.steps % config.eval_every_steps == 0

    def checkpoint_due_after_step(self, config) -> bool:
        return bool(config.save_every_steps) and self.steps % config.save_every_steps == 0

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "steps": self.steps, "pending": self.pending,
                "evaluated_at_step": self.evaluated_at_step, "events_at_step": self.events_at_step,
                "stopped": self.stopped, "last_score": self.last_score}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch, self.steps = int(state["epoch"]), int(state.get("batch", 0)), int(state["steps"])
        self.pending = int(state.get("pending", 0))
        self.evaluated_at_step = state.get("evaluated_at_step")
        # checkpoints are written after the step events of their step count ran
        self.events_at_step = int(state.get("events_at_step", self.steps))
        self.stopped = bool(state.get("stopped", False))
        self.last_score = float(state.get("last_score", -math.inf))
        self.saved_at = self.position

    def load_checkpoint(self, checkpoint: dict) -> None:
        """Take the position of a trainer checkpoint: its ``progress`` entry, or, in checkpoints written before
        Progress existed, the same counters as flat keys (``epoch``, ``batch``, ``steps``, ``pending``, ...)."""
        self.load_state_dict(checkpoint["progress"] if "progress" in checkpoint else checkpoint)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "Progress":
        progress = cls()
        progress.load_checkpoint(checkpoint)
        return progress


__all__ = ["Progress"]
