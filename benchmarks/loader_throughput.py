"""Loader throughput: training samples/s with augmentation, in-memory path vs the standard torchvision pipeline.

Run: python benchmarks/loader_throughput.py [--images 10000] [--rounds 3] [--threads 1]

Data: CIFAR-shaped uint8 images [N, 32, 32, 3]. Augmentation: random crop with padding 4, horizontal
flip, normalisation. Standard: a Dataset returning PIL images through RandomCrop -> RandomHorizontalFlip
-> ToTensor -> Normalize, default collate, num_workers=0. In-memory: nntransfer's InMemoryLoader (the
uint8 pixels kept as one tensor; per batch: gather by index, per-sample random crops and flips as one
gather, scale + normalise). Same data, same batch size, one process, alternating runs, median of the
rounds. Both use ``--threads`` torch intra-op threads (default 1: the standard pipeline with
num_workers=0 works on one core; on a small shared machine, intra-op threads for 1.5 MB batches can cost
more in synchronisation than they gain). Prints ``ratio: X`` (target >= 10).
"""
import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from nntransfer.dataset import InMemoryLoader

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PILDataset(Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def samples_per_second(loader, n):
    start = time.perf_counter()
    count = 0
    for x, _ in loader:
        count += len(x)
    assert count == n
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both pipelines (default 1: the standard pipeline with "
                             "num_workers=0 runs on one core, so both get one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.randint(0, 10, args.images)
    standard = DataLoader(
        PILDataset(images, labels, T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                              T.Normalize(MEAN, STD)])),
        batch_size=args.batch_size, shuffle=True, num_workers=0)
    # the in-memory path keeps the same uint8 pixels as one [N, C, H, W] tensor; normalisation runs per batch
    in_memory = InMemoryLoader(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                               args.batch_size, shuffle=True, mean=MEAN, std=STD,
                               augment={"padding": 4, "flip": True, "rotation": 0.0}, num_classes=10)

    std_rates, mem_rates = [], []
    for _ in range(args.rounds):
        std_rates.append(samples_per_second(standard, args.images))
        mem_rates.append(samples_per_second(in_memory, args.images))
    s, m = statistics.median(std_rates), statistics.median(mem_rates)
    print(f"standard torchvision pipeline: {s:,.0f} samples/s (median of {args.rounds})")
    print(f"in-memory path:                {m:,.0f} samples/s (median of {args.rounds})")
    print(f"torch threads: {torch.get_num_threads()}, images: {args.images}, batch size: {args.batch_size}")
    print(f"ratio: {m / s:.1f}")


if __name__ == "__main__":
    main()
