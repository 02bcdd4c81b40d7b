"""GPU benchmark of nntransfer's Trainer against the best hand-written PyTorch loop (and Lightning, if installed).

Run on a machine with a CUDA GPU:   python benchmarks/gpu_trainer.py            (about 3 minutes on an H100)
Smoke run anywhere (tiny sizes):    python benchmarks/gpu_trainer.py --quick

One process, the same model, data and optimizer for every loop, data already on the GPU (nntransfer's
in-memory loader), timed with CUDA synchronisation around each epoch, medians over the timed epochs:

(a) ResNet-18 (CIFAR stem), 32x32x3 inputs, 10 classes, batch 512, SGD with momentum: the Trainer with its
    fastest settings (precision="bf16", channels_last=True, compile=True) against the best hand-written loop
    (bf16 autocast + channels_last + torch.compile + the fused optimizer the Trainer picks on CUDA), and
    PyTorch Lightning with the same settings when `lightning` imports. Trainer and hand loop alternate epoch by
    epoch after one warm-up (compilation) epoch each; Lightning runs its epochs after them.
(b) A tiny MLP (784-256-10), batch 128, fp32, Adam: per-step overhead. The plain hand loop uses
    ``torch.optim.Adam(model.parameters())`` as users write it; a second hand loop uses the fused Adam the
    Trainer picks on CUDA (so the Trainer's own per-step cost shows on its own).
(c) Checkpoint cost: the Trainer of (a) with a checkpoint (model + optimizer + best state) written to a
    DirectoryCheckpointStore on local disk every epoch, against the same epochs without checkpoints (blocks
    of epochs alternating, the last write waited for).

Prints tables and ``ratio: X`` = Trainer / best hand loop (images/s) on (a). Targets: (a) >= 0.95,
(b) >= 1.0 of the plain hand loop, (c) <= 5 % per epoch. Without CUDA (and without --quick) it says so and
exits 0.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock

from nntransfer.configs import TrainerConfig
from nntransfer.dataset.in_memory import InMemoryLoader
from nntransfer.models.resnet import ClassificationResNet
from nntransfer.trainer import DirectoryCheckpointStore, Trainer
from nntransfer.trainer.optim import make_optimizer


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def image_loader(n, shape, batch_size, device, seed=0) -> InMemoryLoader:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    channels = shape[0]
    return InMemoryLoader(images.to(device), labels, batch_size, shuffle=True, mean=[0.5] * channels,
                          std=[0.25] * channels, num_classes=10)


def resnet18(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return ClassificationResNet(BasicBlock, [2, 2, 2, 2], 3, 10, cifar_stem=True, dropout=0.0)


def mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


class HandLoop:
    """The best hand-written loop: one epoch = zero_grad, forward under autocast, loss, backward, step."""

    def __init__(self, model, loader, device, optimizer, options, precision, channels_last, compile):
        self.model = model.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compile else self.model
        self.optimizer = optimizer(self.model.parameters(), **options)
        self.loader, self.device, self.channels_last = loader, device, channels_last
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def epoch(self):
        self.model.train()
        for x, y in self.loader:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                loss = F.cross_entropy(self.forward(x), y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def make_trainer(model, loader, device, optimizer, options, checkpoints=None, **settings) -> Trainer:
    config = TrainerConfig(optimizer=optimizer, optimizer_options=options, loss_functions={"img": "CrossEntropyLoss"},
                           verbose=False, save_every_n=0, keep_last_n=1, keep_best_n=0, max_iter=10**6,
                           early_stopping=False, force_cpu=device.type != "cuda", **settings)
    return Trainer(model, {"train": {"img": loader}, "validation": {}}, seed=0, config=config, checkpoints=checkpoints)


def lightning_epochs(model, loader, device, options, epochs, precision, channels_last, compile) -> list[float] | str:
    """Seconds per epoch of PyTorch Lightning with the same settings, or why it did not run."""
    try:
        import lightning as L
    except ImportError:
        try:
            import pytorch_lightning as L
        except ImportError:
            return "not installed (pip install lightning)"
    try:
        class Module(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.model = model.to(memory_format=torch.channels_last) if channels_last else model
                self.forward_model = torch.compile(self.model) if compile else self.model

            def training_step(self, batch, batch_idx):
                x, y = batch
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                return F.cross_entropy(self.forward_model(x), y)

            def configure_optimizers(self):
                return make_optimizer("SGD", self.model.parameters(), options, device)

        times = []

        class EpochTimer(L.Callback):
            def on_train_epoch_start(self, trainer, module):
                synchronize(device)
                self.start = time.perf_counter()

            def on_train_epoch_end(self, trainer, module):
                synchronize(device)
                times.append(time.perf_counter() - self.start)

        trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                            precision={"bf16": "bf16-mixed", "fp16": "16-mixed"}.get(precision, "32-true"),
                            max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, callbacks=[EpochTimer()])
        trainer.fit(Module(), train_dataloaders=loader)
        return times
    except Exception as err:  # a broken Lightning set-up must not cost the other numbers
        return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"


def table(title, rows, columns):
    print(f"\n{title}")
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def part_a(args, device, settings):
    n, batch = args.images, args.batch_size
    loader = image_loader(n, (3, 32, 32), batch, device)
    options = {"lr": 0.05, "momentum": 0.9}
    fused = make_optimizer("SGD", [nn.Parameter(torch.zeros(1, device=device))], options, device).defaults
    hand_options = {**options, **({"fused": True} if fused.get("fused") else {})}
    hand = HandLoop(resnet18(), loader, device, torch.optim.SGD, hand_options, **settings)
    trainer = make_trainer(resnet18(), loader, device, "SGD", options,
                           checkpoints=DirectoryCheckpointStore(tempfile.mkdtemp(prefix="gpu-trainer-ckpt-")),
                           **settings)
    warm_hand, warm_trainer = timed(device, hand.epoch), timed(device, trainer.train_epoch)
    times = {"hand": [], "trainer": []}
    for _ in range(args.rounds):
        times["hand"].append(timed(device, hand.epoch))
        times["trainer"].append(timed(device, trainer.train_epoch))
    lightning = lightning_epochs(resnet18(), loader, device, options, args.rounds + 1, **settings)
    per_s = {k: n / statistics.median(v) for k, v in times.items()}
    rows = [("hand-written loop (best)", f"{per_s['hand']:,.0f}", f"{warm_hand:.1f}"),
            ("nntransfer Trainer", f"{per_s['trainer']:,.0f}", f"{warm_trainer:.1f}")]
    if isinstance(lightning, list):
        rows.append(("PyTorch Lightning", f"{n / statistics.median(lightning[1:] or lightning):,.0f}",
                     f"{lightning[0]:.1f}"))
    else:
        rows.append(("PyTorch Lightning", lightning, ""))
    table(f"(a) ResNet-18 CIFAR-shape, batch {batch}, {n} images/epoch, {settings}, median of {args.rounds} epochs",
          rows, ["loop", "images/s", "first epoch s (compile)"])
    ratio = per_s["trainer"] / per_s["hand"]
    print(f"Trainer / hand loop: {ratio:.3f} (target >= 0.95)")
    return ratio, trainer, n


def part_b(args, device):
    steps = args.mlp_steps
    loader = image_loader(steps * 128, (1, 28, 28), 128, device, seed=1)
    options = {"lr": 1e-3}
    plain = HandLoop(mlp(), loader, device, torch.optim.Adam, options, precision="32", channels_last=False,
                     compile=False)
    fused_options = {**options, "fused": True} if device.type == "cuda" else options
    fused = HandLoop(mlp(), loader, device, torch.optim.Adam, fused_options, precision="32", channels_last=False,
                     compile=False)
    trainer = make_trainer(mlp(), loader, device, "Adam", options)
    loops = {"plain": plain.epoch, "fused": fused.epoch, "trainer": trainer.train_epoch}
    for run in loops.values():  # warm-up
        run()
    times = {k: [] for k in loops}
    for _ in range(args.rounds + 2):
        for name, run in loops.items():
            times[name].append(timed(device, run))
    per_s = {k: steps / statistics.median(v) for k, v in times.items()}
    table(f"(b) MLP 784-256-10, batch 128, fp32, Adam, {steps} steps/epoch, median of {args.rounds + 2} epochs",
          [("hand-written loop, torch.optim.Adam(model.parameters())", f"{per_s['plain']:,.0f}"),
           ("hand-written loop, fused Adam (the Trainer's choice on CUDA)", f"{per_s['fused']:,.0f}"),
           ("nntransfer Trainer (tracking: loss and accuracy per pass)", f"{per_s['trainer']:,.0f}")],
          ["loop", "steps/s"])
    ratio = per_s["trainer"] / per_s["plain"]
    print(f"Trainer / plain hand loop: {ratio:.3f} (target >= 1.0); Trainer / fused hand loop: "
          f"{per_s['trainer'] / per_s['fused']:.3f}")
    return ratio


def part_c(args, device, trainer, n):
    def block(save):
        trainer.config.save_every_n = 1 if save else 0

        def epochs():
            for _ in range(args.rounds):
                trainer.train_epoch()
            trainer.wait_for_checkpoint()

        return timed(device, epochs)

    times = {True: [], False: []}
    for _ in range(2):
        for save in (False, True):
            times[save].append(block(save))
    with_ckpt, without = min(times[True]), min(times[False])
    state = trainer.state_dict()
    megabytes = sum(t.numel() * t.element_size() for t in _tensors(state)) / 2**20
    store = trainer.checkpoints
    direct = timed(device, lambda: store.save(10**6, 0.0, {k: v for k, v in state.items()}))
    overhead = (with_ckpt - without) / without
    table(f"(c) checkpoint every epoch (DirectoryCheckpointStore on local disk, {megabytes:.0f} MB per checkpoint), "
          f"{args.rounds} epochs per block, best of 2 blocks",
          [("without checkpoints", f"{without / args.rounds:.3f}", f"{n * args.rounds / without:,.0f}"),
           ("checkpoint every epoch (background write)", f"{with_ckpt / args.rounds:.3f}",
            f"{n * args.rounds / with_ckpt:,.0f}"),
           ("one synchronous store.save of the same state", f"{direct:.3f}", "")],
          ["", "s per epoch", "images/s"])
    print(f"checkpoint overhead per epoch: {100 * overhead:.1f} % (target <= 5 %)")
    return overhead


def _tensors(value):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (also on the CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per loop")
    parser.add_argument("--images", type=int, default=512 * 97, help="images per epoch in (a) (a multiple of the "
                                                                     "batch size: no smaller last batch to recompile)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--mlp-steps", type=int, default=300)
    parser.add_argument("--no-compile", action="store_true", help="(a) and (c) without torch.compile")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("No CUDA device: nothing to measure here (the benchmark is for GPUs; --quick runs a CPU smoke test).")
        return 0
    device = torch.device("cuda" if cuda else "cpu")
    if args.quick:
        args.rounds, args.batch_size, args.images, args.mlp_steps = 1, 16, 32, 20
    # on the CPU (smoke run) compiling ResNet-18 takes minutes and bf16 convolutions are emulated (slow)
    settings = {"precision": "bf16" if cuda else "32", "channels_last": True, "compile": cuda and not args.no_compile}
    torch.backends.cudnn.benchmark = True  # for every loop (the Trainer sets it too when not deterministic)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; python {sys.version.split()[0]}"
          f"{'; QUICK SMOKE RUN: numbers mean nothing' if args.quick else ''}")
    started = time.perf_counter()
    ratio_a, trainer, n = part_a(args, device, settings)
    ratio_b = part_b(args, device)
    overhead_c = part_c(args, device, trainer, n)
    shutil.rmtree(trainer.checkpoints.path, ignore_errors=True)
    print(f"\nsummary: (a) {ratio_a:.3f} (>= 0.95), (b) {ratio_b:.3f} (>= 1.0), (c) {100 * overhead_c:.1f} % (<= 5 %); "
          f"total {time.perf_counter() - started:.0f} s")
    print(f"ratio: {ratio_a:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
