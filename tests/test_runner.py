"""The database-free runner: train experiments and transfer chains in memory, with the numbers the tables give."""
import os
import signal

import pytest
import torch

from nntransfer import Description, Experiment, TransferExperiment, train
from nntransfer.configs import ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.errors import TrainingInterrupted
from nntransfer.trainer import MainLoopModule, register_module

FIRST = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=128)
SECOND = ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], batch_size=128)
TRAIN = TrainerConfig(max_iter=2, optimizer_options={"lr": 0.003}, verbose=False, num_threads=1)


def chain(seed=1, **finetune) -> TransferExperiment:
    # the fine-tuning step gets a new output layer ("7"): the pretrained one learned to rule out 5-9
    finetuning = TRAIN.replace(reset=["7"], **finetune)
    return TransferExperiment([Experiment(FIRST, ModelConfig(type="mlp"), TRAIN, seed),
                               Experiment(SECOND, ModelConfig(type="mlp"), finetuning, seed)])


def test_train_runs_a_transfer_chain_without_a_database(tmp_path, monkeypatch):
    # an unreachable server is configured: training in memory must never connect
    monkeypatch.setenv("DJ_HOST", "127.0.0.1")
    monkeypatch.setenv("DJ_PORT", "1")
    result = train(chain(freeze=["1.*"]))
    assert len(result) == 2 and result.last is result[1]
    first, second = result
    assert 0.5 < second.score <= 1 and second.test["img_classification"]["accuracy"] > 0.5
    assert len(second.history["Validation"]["img_classification"]["accuracy"]) == 2
    # step 1 started from step 0's parameters and kept the frozen ones
    frozen = [name for name in first.model_state if name.startswith("1.")]
    assert frozen and all(torch.equal(first.model_state[n], second.model_state[n]) for n in frozen)
    assert not torch.equal(first.model_state["7.weight"], second.model_state["7.weight"])
    assert second.model is not None and second.provenance["wall_time"] > 0
    assert second.key == chain(freeze=["1.*"]).get_restrictions(1)


def test_shared_steps_are_trained_once_and_bad_configs_fail_before_training(capsys):
    calls = []

    @register_module("CountRuns")
    class CountRuns(MainLoopModule):
        def __init__(self, trainer):
            super().__init__(trainer)
            calls.append(1)

    counted = TRAIN.replace(main_loop_modules=["CountRuns"])
    pretrain = Experiment(FIRST, ModelConfig(type="mlp"), counted, 1)
    chains = {Description(name, 1): TransferExperiment([pretrain, Experiment(SECOND, ModelConfig(type="mlp"),
                                                                              counted.replace(**change), 1)])
              for name, change in (("all", {"reset": ["7"]}), ("frozen", {"reset": ["7"], "freeze": ["1.*"]}))}
    results = train(chains)
    assert len(calls) == 3  # one shared pretraining, two fine-tunings
    assert results[Description("all", 1)][0] is results[Description("frozen", 1)][0]
    with pytest.raises(ConfigError, match="unknown model type 'mpl'"):
        train(Experiment(FIRST, ModelConfig(type="mpl"), TRAIN, 1))
    assert len(calls) == 3


def test_train_gives_the_numbers_the_populated_tables_give(clean_db):
    from nntransfer.api import run

    experiments = {Description("chain", 2): chain(seed=2, freeze=["1.*"])}
    in_memory = train(experiments)[Description("chain", 2)]
    run(experiments, quiet=True)
    for level, step in enumerate(in_memory):
        key = experiments[Description("chain", 2)].get_restrictions(level)
        stored = (clean_db.TransferredTrainedModel.ModelStorage & key).fetch1("model_state")
        assert (clean_db.TransferredTrainedModel & key).fetch1("score") == step.score
        assert stored.keys() == step.model_state.keys()
        assert all(torch.equal(stored[name], value) for name, value in step.model_state.items()), level


@register_module("InterruptOnce")
class InterruptOnce(MainLoopModule):
    """Sends this process a SIGINT (a Ctrl-C in a notebook cell) after the first training epoch of a run."""

    def post_epoch(self, model):
        if self.mode == "Training" and self.epoch == 1 and os.environ.get("NNTRANSFER_TEST_INTERRUPT") == "1":
            os.kill(os.getpid(), signal.SIGINT)


def test_a_ctrl_c_stops_this_run_only(monkeypatch):
    exp = Experiment(FIRST, ModelConfig(type="mlp"), TRAIN.replace(max_iter=3, main_loop_modules=["InterruptOnce"]), 3)
    monkeypatch.setenv("NNTRANSFER_TEST_INTERRUPT", "1")
    with pytest.raises(TrainingInterrupted, match="SIGINT received: training stopped"):
        train(exp)
    monkeypatch.setenv("NNTRANSFER_TEST_INTERRUPT", "0")
    result = train(exp)  # the next run in the same process is not stopped by the earlier request
    assert result.output["epochs"] == 3


def test_transfer_data_of_a_model_of_several_sessions_names_each_session(tmp_path):
    import nntransfer.core.compat  # noqa: F401  (neuralpredictors needs the collections aliases)
    from nntransfer.configs import NeuralModelConfig
    from nntransfer.dataset import neural_dataset_loader, simulate_neurons
    from nntransfer.models.neural import neural_model_builder
    from nntransfer.runner.transfer import generate_transfer_data

    simulate_neurons(tmp_path / "a", n_neurons=7, image_size=12, seed=0)
    simulate_neurons(tmp_path / "b", n_neurons=5, image_size=12, seed=1)
    data = neural_dataset_loader(seed=1, data_dir=str(tmp_path), sessions=["a", "b"], batch_size=32)
    config = NeuralModelConfig(hidden_channels=4, layers=2, input_kern=5, hidden_kern=3).to_dict()
    config.pop("comment")
    model = neural_model_builder(data, seed=1, **config)
    produced = generate_transfer_data(model, data)["train"]
    assert produced["a/logits"].shape[1] == 7 and produced["b/logits"].shape[1] == 5
    assert len(produced["a/logits"]) == len(produced["a/example_indices"]) > 0
