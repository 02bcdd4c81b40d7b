"""Checkpoint cost on CPU: one save through the table store vs ``torch.save`` of the same state to local disk.

Run: python benchmarks/checkpoint_cost.py [--rounds 7]

The state is what the trainer checkpoints for a ResNet-18 (CIFAR stem) trained with Adam: model
parameters and buffers, the optimizer's two moment buffers, step counters and RNG states (~135 MB).
Alternating, one process, median of ``--rounds``: (a) ``torch.save(state, file)`` in the same folder as
the store; (b) ``TableCheckpointStore.save`` on a temporary embedded database: the state written once,
straight to its file in the store (its archive carries a CRC-32 per record), then the row inserted
(then the previous checkpoint pruned, file included). Target: (b) / (a) <= 1.3.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time


def training_state():
    import torch
    import torchvision

    from nntransfer.trainer.checkpointing import rng_state

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    return {"epoch": 1, "steps": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": rng_state()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="nntransfer-bench-")
    os.environ.update(NNTRANSFER_HOME=home, NNTRANSFER_SCHEMA="nntransfer_bench", DJ_IGNORE_CONFIG_FILE="true")
    for var in ("DJ_HOST", "DJ_USER", "DJ_PASS", "DJ_PORT", "DJ_BACKEND"):
        os.environ.pop(var, None)
    import torch

    from nntransfer import db
    from nntransfer.store.trained_model import TableCheckpointStore

    state = training_state()
    size = sum(t.numel() * t.element_size() for t in _tensors(state)) / 1e6
    store = TableCheckpointStore("Benchmark", {"benchmark": 1})
    store.save(0, 0.0, state)  # warm-up: database, tables, folders
    local = os.path.join(db.store_location(), "plain")
    os.makedirs(local, exist_ok=True)
    plain, table = [], []
    try:
        for epoch in range(1, args.rounds + 1):
            started = time.perf_counter()
            torch.save(state, os.path.join(local, f"epoch-{epoch}.pt"))
            plain.append(time.perf_counter() - started)
            os.remove(os.path.join(local, f"epoch-{epoch}.pt"))
            started = time.perf_counter()
            store.save(epoch, float(epoch), state)
            table.append(time.perf_counter() - started)
            store.prune(keep_last_n=1, keep_best_n=0)
        a, b = statistics.median(plain), statistics.median(table)
        print(f"state: {size:.0f} MB of tensors; median of {args.rounds} rounds")
        print(f"torch.save to local disk:     {a:.3f} s")
        print(f"TableCheckpointStore.save:    {b:.3f} s")
        print(f"ratio: {b / a:.2f} (target <= 1.3)")
    finally:
        store.clear()
        from nntransfer.store.jobs import HEARTBEAT

        HEARTBEAT.close()
        data = db.data_dir()
        db.stop()
        shutil.rmtree(home, ignore_errors=True)
        if not str(data).startswith(home):
            shutil.rmtree(data.parent, ignore_errors=True)


def _tensors(value):
    import torch

    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


if __name__ == "__main__":
    sys.exit(main())
