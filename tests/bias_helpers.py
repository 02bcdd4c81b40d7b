"""Small data, models and trainers shared by the tests of the bias-transfer modules (regularised transfer,
representation transfer, augmentation and pruning, robustness)."""
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nntransfer.configs import TrainerConfig
from nntransfer.trainer import trainer
from nntransfer.trainer.handover import Handover, copy_model


def points(n=64, batch_size=16, seed=0, rule=0, shuffle=True):
    """Two classes of points in 6 dimensions; ``rule`` picks which coordinate decides the class (another task)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, rule] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)
    return {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}


def net(seed=0, hidden=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def fit(model=None, data=None, handover=None, **config):
    """nntransfer's trainer on the toy task with quiet defaults; returns ``(score, output, state)``."""
    config = {"loss_functions": {"t": "CrossEntropyLoss"}, "verbose": False, "save_every_n": 0, "max_iter": 2,
              **config}
    return trainer(model if model is not None else net(), data or points(), seed=5, handover=handover, **config)


def handover_from(state, output=None, model=None) -> Handover:
    """What a chain hands to the step after one that returned ``state`` and ``output`` (``model``: its network)."""
    teacher = model if model is not None else net()
    teacher.load_state_dict(state)
    return Handover(model_state=state, transfer_data=(output or {}).get("transfer_data"), transferred=tuple(state),
                    previous_model=copy_model(teacher))


def started_from(state, seed=0):
    """A fresh network loaded with ``state`` (as a transfer step's model is built)."""
    model = net(seed)
    model.load_state_dict(state)
    return model


def fake_trainer(model, handover=None, **config):
    """The least a module needs of a trainer (model, config, device, seed, handover)."""
    config = {"loss_functions": {"t": "CrossEntropyLoss"}, **config}
    return SimpleNamespace(model=model, config=TrainerConfig(**config), device=torch.device("cpu"), seed=3,
                           handover=handover or Handover())


class Pixels(Dataset):
    """Normalised images ``(pixel - mean) / std`` of constant grey pixels, with ``mean``/``std`` like nntransfer's
    image datasets (so modules working in pixel units can read them)."""

    def __init__(self, n=256, channels=2, size=6, grey=0.5, mean=(0.3, 0.6), std=(0.2, 0.4)):
        self.mean, self.std = mean, std
        pixels = torch.full((n, channels, size, size), grey)
        m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.x = (pixels - m) / s
        self.y = torch.arange(n) % 2

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def pixel_batches(n=256, batch_size=256, **kwargs):
    loader = DataLoader(Pixels(n, **kwargs), batch_size=batch_size)
    return {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}


def image_net(channels=2, size=6, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * size * size, 2))
