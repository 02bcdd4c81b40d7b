"""TrainedModel calls dataset, model and trainer functions the way nnfabrik does (issue 10 item 6).

nnfabrik's own example functions (``nnfabrik.examples.mnist``) train through ``TrainedModel`` on a small
MNIST written here in torchvision's raw IDX layout (offline: the example asks torchvision to download, which
it skips when the files are there).
"""
import numpy as np
import torch

from nntransfer import Description, Experiment, run
from nntransfer.configs import BaseConfig, DatasetConfig, ModelConfig, TrainerConfig
from test_datasets import write_idx


class NNFabrikMNIST(DatasetConfig):
    fn = "nnfabrik.examples.mnist.dataset:mnist_dataset_fn"


class NNFabrikModel(ModelConfig):
    fn = "nnfabrik.examples.mnist.model:mnist_model_fn"
    h_dim: int = 5


class NNFabrikTrainer(TrainerConfig):
    fn = "nnfabrik.examples.mnist.trainer:mnist_trainer_fn"
    epochs: int = 1


def test_nnfabrik_example_functions_populate_trained_model(clean_db, tmp_path, monkeypatch):
    write_idx(tmp_path / "data", "MNIST", n_train=64, n_test=32)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # the example reads "../data"
    exp = Experiment(NNFabrikMNIST(batch_size=16), NNFabrikModel(h_dim=7), NNFabrikTrainer(epochs=2), seed=3)
    rows = run({Description("nnfabrik mnist", 3): exp}, quiet=True)
    assert [r["state"] for r in rows] == ["done"], clean_db.TrainedModel.jobs.errors.to_dicts()
    score, output = (clean_db.TrainedModel & exp.get_key()).fetch1("score", "output")
    accuracies, epochs = output  # the example's (accuracies, epochs) tuple is stored as it is
    assert int(epochs) == 2 and len(accuracies) == 2 and score == accuracies[-1]
    state = (clean_db.TrainedModel.ModelStorage & exp.get_key()).fetch1("model_state")
    assert state["fc1.weight"].shape == (7, 28 * 28)


class StrictTrainer(BaseConfig):
    """A trainer config for a function that takes exactly nnfabrik's arguments and its own."""

    config_name = "trainer"
    fn = "test_nnfabrik_contract:strict_trainer"
    steps: int = 2


CALLS = []


def strict_trainer(model, dataloaders, seed, uid, cb, steps=2):
    """nnfabrik's signature without **kwargs: a `checkpoints=` argument would be a TypeError."""
    CALLS.append({"uid": uid, "seed": seed})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, (x, y, *_) in zip(range(steps), dataloaders["train"]["toy"]):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        cb(uid=uid, epoch=step, model=model, info={"step": step})  # nnfabrik's callback takes keywords
    return 0.5, ["any", "blob-able", "output", np.arange(3)], model.state_dict()


def test_uid_is_the_key_dict_cb_takes_keywords_and_checkpoints_is_not_forced(clean_db):
    from toy_pipeline import ToyData, ToyModel

    CALLS.clear()
    exp = Experiment(ToyData(), ToyModel(), StrictTrainer(steps=3), seed=4)
    rows = run({Description("strict", 4): exp}, quiet=True)
    assert [r["state"] for r in rows] == ["done"], clean_db.TrainedModel.jobs.errors.to_dicts()
    assert CALLS == [{"uid": exp.get_key(), "seed": 4}]
    output = (clean_db.TrainedModel & exp.get_key()).fetch1("output")
    assert list(output[:3]) == ["any", "blob-able", "output"] and list(output[3]) == [0, 1, 2]
