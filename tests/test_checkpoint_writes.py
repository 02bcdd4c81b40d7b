"""Checkpoints written in the background (issue 8 item 5): snapshots, one write in flight, failures, crash safety."""
import signal
import threading
import time

import pytest
import torch

from nntransfer.trainer import (
    BackgroundWriter,
    CheckpointWriteFailed,
    DirectoryCheckpointStore,
    MainLoopModule,
    MemoryCheckpointStore,
    register_module,
)
from test_trainer import loaders, model, train


class SlowStore(MemoryCheckpointStore):
    """Each save (but the last epoch's) waits until training has taken another optimizer step."""

    def __init__(self, last_epoch):
        super().__init__()
        self.last_epoch = last_epoch
        self.steps = 0
        self.condition = threading.Condition()
        self.waited_for_training = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.threads = set()

    def step_taken(self):
        with self.condition:
            self.steps += 1
            self.condition.notify_all()

    def save(self, epoch, score, state):
        with self.condition:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            start = self.steps
            if epoch < self.last_epoch:  # a synchronous save would block training: the wait would time out
                self.waited_for_training.append(self.condition.wait_for(lambda: self.steps > start, timeout=60))
        self.threads.add(threading.current_thread().name)
        super().save(epoch, score, state)
        with self.condition:
            self.in_flight -= 1


STORE = []


@register_module("SignalsTraining")
class SignalsTraining(MainLoopModule):
    def post_optimizer(self, model):
        if STORE:
            STORE[0].step_taken()


def test_checkpoints_are_written_in_the_background_while_training_goes_on():
    store = SlowStore(last_epoch=3)
    STORE[:] = [store]
    train(max_iter=3, checkpoints=store, keep_last_n=3, keep_best_n=0, early_stopping=False,
          main_loop_modules=["SignalsTraining"], data=loaders(n_train=128))
    STORE.clear()
    assert store.waited_for_training == [True, True]  # epochs 1 and 2 were saved while the next epoch trained
    # and the last epoch's write was waited for before train() returned
    assert sorted(store.states) == [1, 2, 3] and store.most_in_flight == 1
    assert store.threads == {"nntransfer-checkpoint-writer"}


def test_the_snapshot_is_a_copy_taken_when_the_checkpoint_is_submitted():
    store = MemoryCheckpointStore()
    writer = BackgroundWriter(store, keep_last_n=5, keep_best_n=0)
    live = {"w": torch.zeros(3), "nested": [torch.ones(2), 7]}
    writer.submit(1, 0.5, live)
    live["w"].add_(1)
    live["nested"][0].add_(1)
    writer.submit(2, 0.6, live)
    writer.wait()
    assert torch.equal(store.states[1][1]["w"], torch.zeros(3)) and torch.equal(store.states[2][1]["w"], torch.ones(3))
    assert store.states[1][1]["nested"][1] == 7 and torch.equal(store.states[1][1]["nested"][0], torch.ones(2))


class InterruptedWhileSaving(MemoryCheckpointStore):
    """While it saves, the main thread gets SIGINT (a second Ctrl-C while a stop waits for its checkpoint)."""

    def save(self, epoch, score, state):
        time.sleep(0.2)  # the main thread is waiting for this write by now
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.5)  # a write that takes a while
        super().save(epoch, score, state)
        self.finished_at = time.monotonic()


def test_ctrl_c_while_waiting_for_a_checkpoint_write_lets_it_finish_before_stopping():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        store = InterruptedWhileSaving()
        writer = BackgroundWriter(store, keep_last_n=5, keep_best_n=0)
        with pytest.raises(KeyboardInterrupt):
            writer.submit(1, 0.5, {"w": torch.ones(3)})
            writer.wait()
        interrupted_at = time.monotonic()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert 1 in store.states and store.finished_at <= interrupted_at  # written, and before the interrupt went on
    writer.close()  # nothing left in flight


class FailingDirectoryStore(DirectoryCheckpointStore):
    """Crashes half-way through writing the checkpoint of epoch ``fail_at`` (a full disk, a killed writer)."""

    fail_at = 2

    def save(self, epoch, score, state):
        if epoch == self.fail_at:
            original = torch.save

            def half_then_fail(obj, file, *args, **kwargs):
                file.write(b"PK\x03\x04 half a checkpoint")
                raise OSError("No space left on device")

            torch.save = half_then_fail
            try:
                return super().save(epoch, score, state)
            finally:
                torch.save = original
        return super().save(epoch, score, state)


def test_a_failed_write_keeps_the_last_good_checkpoint_and_fails_the_run(tmp_path):
    store = FailingDirectoryStore(tmp_path)
    with pytest.raises(CheckpointWriteFailed, match="No space left on device"):
        train(max_iter=4, checkpoints=store, early_stopping=False)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # the half-written file is gone
    assert store.latest()["progress"]["epoch"] == 1  # the last good checkpoint is untouched
    store.fail_at = None
    _, output, _ = train(max_iter=4, checkpoints=store, early_stopping=False)  # and resuming from it works
    assert output["epochs"] == 4


def test_a_later_state_of_an_epoch_replaces_the_earlier_one(tmp_path):
    store = DirectoryCheckpointStore(tmp_path)
    store.save(3, 0.5, {"batch": 4})
    store.save(3, 0.7, {"batch": 0})
    assert len(list(tmp_path.glob("epoch-3_*.pt"))) == 1 and store.latest() == {"batch": 0}


@pytest.mark.cuda
def test_device_tensors_are_copied_into_reused_pinned_buffers():
    store = MemoryCheckpointStore()
    writer = BackgroundWriter(store, keep_last_n=5, keep_best_n=0)
    weights = torch.arange(1000.0, device="cuda")
    writer.submit(1, 0.0, {"w": weights})
    writer.wait()
    buffer = writer._buffers[("w",)]
    assert buffer.is_pinned() and buffer.device.type == "cpu"
    weights.mul_(2)  # training goes on in place on the device
    writer.submit(2, 0.0, {"w": weights})
    writer.wait()
    assert writer._buffers[("w",)].data_ptr() == buffer.data_ptr()  # reused
    assert torch.equal(store.states[1][1]["w"], torch.arange(1000.0))
    assert torch.equal(store.states[2][1]["w"], 2 * torch.arange(1000.0))
