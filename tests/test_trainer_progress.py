"""The trainer's position (Progress): alone, without a model, and as checkpoints of today and before it existed."""
import copy
import math

import pytest
import torch

from nntransfer.configs import TrainerConfig
from nntransfer.trainer import MainLoopModule, MemoryCheckpointStore, Option, Progress, TrainingInterrupted, \
    register_module
from test_trainer import loaders, model, train


# -- alone --------------------------------------------------------------------------------------------------
def test_state_round_trip_and_a_loaded_position_counts_as_saved():
    progress = Progress(epoch=3, batch=5, steps=17, pending=1, evaluated_at_step=15, events_at_step=17, stopped=True,
                        last_score=0.75)
    assert not progress.saved
    loaded = Progress.from_checkpoint({"progress": progress.state_dict(), "model": {}})
    assert loaded.state_dict() == progress.state_dict()
    assert loaded.saved and loaded.saved_at == (3, 5, 17)
    assert set(progress.state_dict()) == {"epoch", "batch", "steps", "pending", "evaluated_at_step",
                                          "events_at_step", "stopped", "last_score"}  # saved_at is not saved


def test_checkpoints_written_before_progress_existed_are_read_from_their_flat_keys():
    old = {"epoch": 2, "batch": 3, "steps": 7, "stopped": False, "last_score": 0.5, "evaluated_at_step": 6,
           "pending": 1, "model": {}, "pass": {"batches": 3, "tasks": {}}}
    progress = Progress.from_checkpoint(old)
    assert (progress.epoch, progress.batch, progress.steps, progress.pending) == (2, 3, 7, 1)
    assert (progress.evaluated_at_step, progress.last_score, progress.stopped) == (6, 0.5, False)
    assert progress.events_at_step == 7  # checkpoints were written after their step's events ran
    fresh = Progress.from_checkpoint({"epoch": 0, "steps": 0})  # the oldest had neither batch nor pending
    assert fresh.position == (0, 0, 0) and fresh.pending == 0 and fresh.last_score == -math.inf


def test_mid_epoch_and_end_of_epoch_positions():
    config = TrainerConfig(max_iter=3)
    progress = Progress()
    progress.start_epoch()
    assert progress.position == (1, 0, 0) and not progress.mid_epoch
    progress.batch, progress.steps = 4, 4
    assert progress.mid_epoch and progress.describe() == "in epoch 1 after batch 4 (4 steps)"
    progress.start_epoch()  # resumed in the middle of epoch 1: that epoch goes on
    assert progress.epoch == 1
    progress.end_training_pass()
    assert progress.describe() == "after epoch 1 (4 steps)"
    progress.epoch, progress.batch = 3, 2  # the last epoch, not done yet
    assert progress.last_epoch(config) and not progress.finished(config)
    progress.end_training_pass()
    assert progress.finished(config)


def test_gradient_accumulation_counts_backward_passes_to_a_step():
    progress = Progress()
    assert [progress.backward_done(3) for _ in range(3)] == [False, False, True] and progress.pending == 3


@pytest.mark.parametrize("fields,epoch,steps,due", [
    ({"max_iter": 10, "interval": 3}, 3, 30, True), ({"max_iter": 10, "interval": 3}, 4, 40, False),
    ({"max_iter": 10, "interval": 3}, 10, 100, True),  # and after the last epoch
    ({"max_iter": 10, "eval_every_steps": 5}, 4, 40, False),  # evaluated inside epochs...
    ({"max_iter": 10, "eval_every_steps": 5}, 10, 100, True),  # ...and after the last, unless just done (below)
    ({"max_steps": 50, "interval": 5}, 2, 50, True),  # the step budget is spent: the last epoch
    ({"max_steps": 50, "interval": 5}, 2, 20, False),
])
def test_an_evaluation_is_due_at_the_end_of_an_epoch(fields, epoch, steps, due):
    config = TrainerConfig(**fields)
    progress = Progress(epoch=epoch, steps=steps)
    assert progress.evaluation_due_after_epoch(config) is due
    progress.evaluated_at_step = steps
    if config.eval_every_steps:
        assert not progress.evaluation_due_after_epoch(config)


def test_step_events_and_checkpoints_are_due_by_their_counts():
    config = TrainerConfig(eval_every_steps=3, save_every_steps=2, save_every_n=2, max_steps=10)
    progress = Progress(epoch=2, steps=6)
    assert progress.step_events_due()
    assert progress.evaluation_due_after_step(config) and progress.checkpoint_due_after_step(config)
    progress.events_at_step = 6
    assert not progress.step_events_due()
    progress.steps = 7
    assert not progress.evaluation_due_after_step(config) and not progress.checkpoint_due_after_step(config)
    assert progress.checkpoint_due_after_epoch(config) and not Progress(epoch=3).checkpoint_due_after_epoch(config)
    assert not progress.checkpoint_due_after_epoch(config.replace(save_every_n=0))
    progress.steps = 10
    assert progress.budget_spent(config) and progress.pass_over(config)
    assert Progress(stopped=True).pass_over(TrainerConfig())


# -- in checkpoints ---------------------------------------------------------------------------------------
@register_module("StopsInEpochTwo")
class StopsInEpochTwo(MainLoopModule):
    """Requests a stop of its run in training batch ``batch`` of epoch 2 (a mid-epoch checkpoint)."""

    options_declared = {"batch": Option(2, int)}

    def post_backward(self, model):
        if self.mode == "Training" and self.epoch == 2 and self.batch_index == self.option("batch"):
            self.trainer.stop.request("test")


def as_written_before_progress(state: dict) -> dict:
    """A checkpoint of today in the format written before Progress: the counters as flat keys, and the pass's
    batch count in the pass's state."""
    state = copy.deepcopy(state)
    progress = state.pop("progress")
    del progress["events_at_step"]
    state.update(progress)
    if state["pass"] is not None:
        state["pass"] = {"batches": progress["batch"], **state["pass"]}
    return state


@pytest.mark.parametrize("mid_epoch", [False, True])
def test_a_checkpoint_written_before_progress_existed_still_resumes_bit_identically(mid_epoch):
    options = dict(data=loaders(n_train=160, batch_size=16), max_iter=3, accumulate_gradients=2,
                   early_stopping=False, deterministic=True, main_loop_modules=["NoiseAugmentation", "StopsInEpochTwo"],
                   module_options={"NoiseAugmentation": {"std": 0.2}, "StopsInEpochTwo": {"batch": 99}})
    _, reference, reference_state = train(model(dropout=0.3), **options)
    store = MemoryCheckpointStore()
    if mid_epoch:  # stopped in epoch 2 after batch 3, between the two halves of a step
        stop_at = dict(options, module_options={**options["module_options"], "StopsInEpochTwo": {"batch": 2}})
        with pytest.raises(TrainingInterrupted):
            train(model(dropout=0.3), checkpoints=store, save_every_n=0, **stop_at)
    else:
        train(model(dropout=0.3), checkpoints=store, keep_last_n=3, keep_best_n=0, **options)
    score, state = store.states[2]
    assert (state["progress"]["batch"], state["progress"]["pending"]) == ((3, 1) if mid_epoch else (0, 0))
    old = MemoryCheckpointStore()
    old.save(2, score, as_written_before_progress(state))
    assert "progress" not in old.latest() and old.latest()["epoch"] == 2
    _, output, resumed = train(model(dropout=0.3), checkpoints=old, **options)
    assert output["tracker"] == reference["tracker"]
    assert all(torch.equal(resumed[k], reference_state[k]) for k in reference_state)
    assert "progress" in old.states[max(old.states)][1]  # and the resumed run writes today's format
