"""A tiny, fast dataset/model/trainer trio for testing the pipeline machinery (recipes, workers, transfer).

Importable by worker subprocesses: conftest puts this folder on PYTHONPATH.
"""
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from nntransfer import Experiment
from nntransfer.core.compat import make_hash
from nntransfer.configs import DatasetConfig, ModelConfig, TrainerConfig


class ToyData(DatasetConfig):
    fn = "toy_pipeline.toy_data"
    n: int = 64


class ToyModel(ModelConfig):
    fn = "toy_pipeline.toy_model"
    hidden: int = 8


class ToyTrainer(TrainerConfig):
    fn = "toy_pipeline.toy_trainer"
    lr: float = 0.1
    fail_if_exists: str = ""   # raise while this file exists
    fail_times_file: str = ""  # a file holding a count: raise (and count down) while it is above 0
    config_error: bool = False  # raise a ConfigError
    sleep: float = 0.0
    loss_weights: list[float] = [1.0]


def toy(seed=1, **trainer) -> Experiment:
    """An experiment of the trio; ``trainer``: ToyTrainer fields."""
    return Experiment(ToyData(), ToyModel(), ToyTrainer(**trainer), seed)


def toy_data(seed, n=64, batch_size=16, transfer_data=None, **_):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    tensors = [x, y]
    if transfer_data is not None:
        tensors.append(torch.tensor(transfer_data["train"]["logits"]))
    train = DataLoader(TensorDataset(*tensors), batch_size=batch_size)
    test = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    return {"train": {"toy": train}, "validation": {"toy": test}, "test": {"toy": test}}


def toy_model(dataloaders, seed, hidden=8, **_):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))


def toy_trainer(model, dataloaders, seed, uid=None, cb=None, checkpoints=None, lr=0.1, max_iter=2, fail_if_exists="",
                sleep=0.0, fail_times_file="", config_error=False, verbose=True, save_every_n=1, **_):
    log = os.environ.get("TOY_TRAIN_LOG")
    if log:
        with open(log, "a") as f:
            # uid: the entry's key dict, as nnfabrik passes it
            f.write(f"{make_hash(uid)} {os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')} "
                    f"{torch.cuda.device_count()}\n")
    if fail_if_exists and os.path.exists(fail_if_exists):
        raise RuntimeError(f"toy failure requested by {fail_if_exists}")
    if fail_times_file and int(open(fail_times_file).read()) > 0:
        left = int(open(fail_times_file).read())
        open(fail_times_file, "w").write(str(left - 1))
        raise RuntimeError(f"toy failure, {left - 1} more to come")
    if config_error:
        from nntransfer.configs import ConfigError

        raise ConfigError("toy config error: nothing a retry can fix")
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    received = []
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _epoch in range(max_iter):
        for batch in dataloaders["train"]["toy"]:
            x, y = batch[0], batch[1]
            if len(batch) > 2:
                received.append(batch[2].numpy())
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        if cb:
            cb()
        time.sleep(sleep)
    with torch.no_grad():
        x, y = dataloaders["test"]["toy"].dataset.tensors
        acc = float((model(x).argmax(1) == y).float().mean())
    # run fields as this call got them (they come from whoever trains, not from the stored config)
    output = {"initial_state": initial, "test": {"toy": {"accuracy": acc}},
              "received": {"verbose": verbose, "save_every_n": save_every_n}}
    if received:
        output["received_transfer_data"] = np.concatenate(received)
    return acc, output, model.state_dict()
