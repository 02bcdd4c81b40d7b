"""TrainedModel end to end on the offline digits: populate, load_model, divergence, resume from the Checkpoint table."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nntransfer import Experiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.trainer import MainLoopModule, TrainingInterrupted, register_module, trainer


def digits_experiment(seed=1, **trainer_options):
    options = dict(max_iter=4, verbose=False, optimizer_options={"lr": 0.003})
    options.update(trainer_options)
    return Experiment(ImageDatasetConfig(dataset_cls="digits", batch_size=32), ModelConfig(type="lenet"),
                      TrainerConfig(**options), seed)


@pytest.mark.both_backends
def test_populate_digits_lenet_and_load_model_reproduces_the_score(clean_db):
    exp = digits_experiment(max_iter=8)
    exp.add_to_table()
    clean_db.TrainedModel.populate(exp.get_key(), reserve_jobs=True)
    row = (clean_db.TrainedModel & exp.get_key()).fetch1()
    assert row["score"] > 0.9  # validation accuracy; chance is 0.1
    test_accuracy = row["output"]["test"]["img_classification"]["accuracy"]
    assert test_accuracy > 0.9  # issue 5's end-to-end bar for LeNet on digits
    dataloaders, model = clean_db.TrainedModel().load_model(exp.get_key())
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in dataloaders["validation"]["img_classification"]:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    assert correct / total == pytest.approx(row["score"], abs=1e-9)
    assert len(clean_db.Checkpoint()) == 0  # checkpoints are removed once the result is stored


def test_diverging_training_writes_no_row(clean_db):
    exp = digits_experiment(optimizer="SGD", optimizer_options={"lr": 1e30})
    exp.add_to_table()
    result = clean_db.TrainedModel.populate(exp.get_key(), reserve_jobs=True, suppress_errors=True)
    assert result["success_count"] == 0
    assert len(clean_db.TrainedModel()) == 0 and len(clean_db.TrainedModel.ModelStorage()) == 0
    error = clean_db.TrainedModel.jobs.errors.to_dicts()[0]["error_message"]
    assert "TrainingDiverged" in error and "epoch 1, batch" in error


STOP_AT = []  # the (epoch, batch) of the training batch after which RecordsAndStops asks its run to stop; empty: never
TRAINED_BATCHES = []


@register_module("RecordsAndStops")
class RecordsAndStops(MainLoopModule):
    """Records the training batches and asks for a stop after ``STOP_AT`` (as a preempted worker's SIGTERM does)."""

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training":
            TRAINED_BATCHES.append((self.epoch, self.batch_index))
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode == "Training" and STOP_AT and (self.epoch, self.batch_index) == STOP_AT[0]:
            self.trainer.stop.request("preempted (test)")
        return outputs, loss, targets


@pytest.mark.both_backends
def test_a_stopped_populate_resumes_from_the_checkpoint_table_bit_identically(clean_db):
    """In-process: a populate stopped mid-epoch leaves a Checkpoint row and a pending job; the next populate resumes
    from that row (TableCheckpointStore) and ends where an uninterrupted run ends, bit for bit."""
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.models import classification_model_builder
    from nntransfer.store.trained_model import TableCheckpointStore

    exp = Experiment(ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="mlp"),
                     TrainerConfig(max_iter=3, verbose=False, deterministic=True, early_stopping=False,
                                   main_loop_modules=["NoiseAugmentation", "RecordsAndStops"],
                                   module_options={"NoiseAugmentation": {"std": 0.2}}), 2)
    key = exp.get_key()
    exp.add_to_table()
    STOP_AT[:], TRAINED_BATCHES[:] = [(2, 4)], []
    try:
        with pytest.raises(TrainingInterrupted, match=r"preempted \(test\): training stopped in epoch 2 after batch 5"):
            clean_db.TrainedModel.populate(key, reserve_jobs=True)
    finally:
        STOP_AT.clear()
    assert len(clean_db.TrainedModel()) == 0 and len(clean_db.TrainedModel.jobs.errors) == 0
    assert (clean_db.TrainedModel.jobs & key).proj("status").to_dicts()[0]["status"] == "pending"  # released
    saved = TableCheckpointStore(clean_db.TrainedModel.table_name, key).latest()
    assert (saved["progress"]["epoch"], saved["progress"]["batch"]) == (2, 5)  # where the stop came

    TRAINED_BATCHES.clear()
    clean_db.TrainedModel.populate(key, reserve_jobs=True)
    assert TRAINED_BATCHES[0] == (2, 5)  # it went on with the batch after the stop, not from scratch
    assert len(clean_db.Checkpoint()) == 0  # the result is stored: its checkpoints are gone
    stored = (clean_db.TrainedModel.ModelStorage & key).fetch1("model_state")
    score, output = (clean_db.TrainedModel & key).fetch1("score", "output")

    data = image_dataset_loader(seed=2, **exp.dataset.to_dict())
    model = classification_model_builder(data, seed=2, **exp.model.to_dict())
    ref_score, ref_output, ref_state = trainer(model, data, seed=2, **exp.trainer.to_dict())  # never stopped
    assert score == ref_score and output["tracker"] == ref_output["tracker"]
    assert set(stored) == set(ref_state)
    for name, value in ref_state.items():
        assert torch.equal(stored[name], value), name


KILLED_POPULATE = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_trained_model import digits_experiment
    from nntransfer import tables
    from nntransfer.trainer import MainLoopModule, register_module

    TRAINED_EPOCHS = []

    @register_module("KillAfterEpoch3")
    class KillAfterEpoch3(MainLoopModule):
        def pre_epoch(self, model, mode, **options):
            super().pre_epoch(model, mode, **options)
            if mode == "Training":
                TRAINED_EPOCHS.append(self.epoch)

        def post_epoch(self, model):
            if self.mode == "Validation" and self.epoch == 3 and os.environ.get("KILL") == "1":
                self.trainer.wait_for_checkpoint()  # epoch 2's checkpoint is written in the background
                os.kill(os.getpid(), signal.SIGKILL)

    options = json.loads(os.environ["TRAINER_OPTIONS"])
    exp = digits_experiment(max_iter=5, main_loop_modules=["KillAfterEpoch3"], module_options={{}}, **options)
    exp.add_to_table()
    tables.TrainedModel.populate(exp.get_key(), reserve_jobs=True)
    print("trained epochs", TRAINED_EPOCHS)
""")


@pytest.mark.slow  # a populating process killed with SIGKILL (in-process: the stopped populate above)
@pytest.mark.both_backends
@pytest.mark.parametrize("options", [{"force_cpu": True},  # bit-identity on the CPU needs nothing more
                                     pytest.param({"deterministic": True}, marks=pytest.mark.cuda, id="cuda")])
def test_killed_populate_resumes_from_the_checkpoint_table_bit_identically(clean_db, tmp_path, options):
    import json

    from test_trained_model import digits_experiment as same_definition  # the script builds the same key

    script = tmp_path / "populate.py"
    script.write_text(KILLED_POPULATE.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "TRAINER_OPTIONS": json.dumps(options)}
    killed = subprocess.run([sys.executable, str(script)], env={**env, "KILL": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(clean_db.TrainedModel()) == 0
    assert sorted(clean_db.Checkpoint().to_arrays("epoch")) == [2]  # epochs 1, 2 saved; only the last kept
    from nntransfer.orchestration.plan import Target
    from nntransfer.orchestration.workers import reclaim_dead_reservations

    # the dead worker's reservation is re-queued, then a new populate resumes at epoch 3
    exp_key = same_definition(max_iter=5, main_loop_modules=["KillAfterEpoch3"], module_options={}, **options).get_key()
    target = Target(None, 0, "TrainedModel", exp_key)
    deadline = time.time() + 30  # the server notices the dead client's connection within moments
    while not (reclaimed := reclaim_dead_reservations([target])) and time.time() < deadline:
        time.sleep(0.2)
    assert reclaimed == 1
    resumed = subprocess.run([sys.executable, str(script)], env={**env, "KILL": "0"}, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "trained epochs [3, 4, 5]" in resumed.stdout  # resumed after the checkpoint of epoch 2
    stored = (clean_db.TrainedModel.ModelStorage & exp_key).fetch1("model_state")
    score = (clean_db.TrainedModel & exp_key).fetch1("score")

    # the same training without any interruption, directly through the trainer function
    exp = same_definition(max_iter=5, **options)
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.models import classification_model_builder

    data = image_dataset_loader(seed=1, **exp.dataset.to_dict())
    model = classification_model_builder(data, seed=1, **exp.model.to_dict())
    ref_score, _, ref_state = trainer(model, data, seed=1, **exp.trainer.to_dict())
    assert score == ref_score
    for name, value in ref_state.items():
        assert torch.equal(stored[name], value), name
