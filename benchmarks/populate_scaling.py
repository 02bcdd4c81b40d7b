"""Populate scaling: 20 tiny experiments with 1 worker vs 2 workers, and per-experiment overhead.

Run: python benchmarks/populate_scaling.py [--experiments 20] [--steps 1500]

Each experiment trains a small MLP on CPU for a fixed number of optimizer steps (``--steps``, about
half a second of compute; the same work whatever the number of workers). Overhead per experiment = (wall time with 1 worker - summed training time) / experiments:
everything nntransfer and DataJoint add (job reservation, fetching configs, building, storing
results and model state). Uses its own temporary embedded database.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def bench_data(seed, n=512, **_):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    return {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}


def bench_model(dataloaders, seed, **_):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2))


def bench_trainer(model, dataloaders, seed, uid=None, cb=None, checkpoints=None, steps=1500, **_):
    import itertools

    import torch

    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in itertools.islice(itertools.cycle(dataloaders["train"]["t"]), steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    seconds = time.perf_counter() - start
    return 0.0, {"train_seconds": seconds}, model.state_dict()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per worker count (alternating)")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per experiment")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="nntransfer-bench-")
    os.environ["NNTRANSFER_HOME"] = home
    os.environ.pop("DJ_HOST", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, HERE)

    from nntransfer import Description, Experiment, db, run, tables
    from nntransfer.configs import DatasetConfig, ModelConfig, TrainerConfig

    class Data(DatasetConfig):
        fn = "populate_scaling.bench_data"

    class Net(ModelConfig):
        fn = "populate_scaling.bench_model"

    class Train(TrainerConfig):
        fn = "populate_scaling.bench_trainer"
        steps: int = 1500
        round: int = 0  # a new value gives a fresh set of keys for each measured run

    try:
        results = {}
        # round 0 warms up (starts the database, declares tables, starts the worker fork server)
        for rnd, workers in enumerate([2] + [1, 2] * args.rounds):
            experiments = {Description(f"b{i}", i): Experiment(Data(), Net(), Train(steps=args.steps, round=rnd), i)
                           for i in range(args.experiments)}
            start = time.perf_counter()
            run(experiments, workers=workers, quiet=True)
            wall = time.perf_counter() - start
            keys = [e.get_key() for e in experiments.values()]
            outputs = (tables.TrainedModel & keys).to_arrays("output")
            assert len(outputs) == args.experiments, "not every experiment was trained"
            train_seconds = sum(o["train_seconds"] for o in outputs)
            print(f"round {rnd}: workers={workers}: wall {wall:.2f} s, training {train_seconds:.2f} s"
                  + (" (warm-up, not counted)" if rnd == 0 else ""))
            if rnd:
                results.setdefault(workers, []).append((wall, train_seconds))
        wall1 = statistics.median(w for w, _ in results[1])
        wall2 = statistics.median(w for w, _ in results[2])
        overhead = statistics.median((w - t) / args.experiments for w, t in results[1])
        print(f"median wall: 1 worker {wall1:.2f} s, 2 workers {wall2:.2f} s")
        print(f"speed-up 2 workers vs 1: {wall1 / wall2:.2f}x (target >= 1.7x)")
        print(f"overhead per experiment (1 worker, excluding training): {overhead:.3f} s (target <= 0.2 s)")
    finally:
        db.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
