"""Trainer overhead: steps/s of nntransfer's Trainer against a hand-written PyTorch loop.

Run: python benchmarks/trainer_overhead.py [--rounds 5] [--batches 200]

All loops train the same MLP on the same in-memory data with the same optimizer, one training epoch
per measurement, in one process, alternating (hand, trainer, trainer with pass-through hooks, hand, ...).
The Trainer runs with two no-op main-loop modules (they inherit the base class's hooks, which the
trainer skips), tracking on (per-batch loss and predictions, reduced once per epoch) and progress bars
off. A second Trainer runs two modules that override every per-batch hook with a pass-through, the
cost of calling hooks. Prints the median steps/s of each and the ratios to the hand-written loop
(target >= 0.95).
"""
import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nntransfer.configs import TrainerConfig
from nntransfer.trainer import MainLoopModule, Trainer, register_module


@register_module("NoOpA")
class NoOpA(MainLoopModule):
    pass


@register_module("NoOpB")
class NoOpB(MainLoopModule):
    pass


@register_module("PassThrough")
class PassThrough(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        return outputs, loss, targets

    def post_backward(self, model):
        pass

    def pre_optimizer(self, model):
        pass

    def post_optimizer(self, model):
        pass


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def hand_written_epoch(model, loader, optimizer, loss_fn):
    model.train()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier timings; all loops get the same

    n = args.batches * args.batch_size
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    loaders = {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}

    hand_model = make_model()
    hand_opt = torch.optim.Adam(hand_model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def make_trainer(modules):
        config = TrainerConfig(optimizer="Adam", optimizer_options={"lr": 1e-3},
                               loss_functions={"t": "CrossEntropyLoss"}, main_loop_modules=modules, verbose=False,
                               save_every_n=0)
        return Trainer(make_model(), loaders, seed=0, config=config)

    trainers = {"no-op": make_trainer(["NoOpA", "NoOpB"]), "pass-through": make_trainer(["PassThrough", "PassThrough"])}

    def trainer_epoch(trainer):
        trainer.progress.epoch += 1
        trainer.run_epoch("Training", loaders["train"])

    hand_written_epoch(hand_model, loader, hand_opt, loss_fn)  # warm-up all
    for trainer in trainers.values():
        trainer_epoch(trainer)
    hand, ours = [], {name: [] for name in trainers}
    for _ in range(args.rounds):
        start = time.perf_counter()
        hand_written_epoch(hand_model, loader, hand_opt, loss_fn)
        hand.append(args.batches / (time.perf_counter() - start))
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer_epoch(trainer)
            ours[name].append(args.batches / (time.perf_counter() - start))
    h = statistics.median(hand)
    print(f"hand-written loop: {h:.0f} steps/s (median of {args.rounds})")
    for name, label in (("no-op", "2 no-op modules"), ("pass-through", "2 modules overriding every per-batch hook")):
        t = statistics.median(ours[name])
        print(f"nntransfer Trainer, {label}: {t:.0f} steps/s (tracking on, no progress bar); "
              f"ratio {t / h:.3f}")
    print(f"ratio: {statistics.median(ours['no-op']) / h:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
