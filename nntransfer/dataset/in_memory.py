"""The fast in-memory path: a split kept as one tensor, batches by index, augmentation on whole batches."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class InMemoryLoader:
    """Iterates ``(inputs, targets[, extra])`` batches from tensors on ``device``.

    Shuffling draws a permutation from torch's global RNG (seeded per epoch by the trainer), and
    augmentation — per-sample random crops after zero padding, horizontal flips, rotations — runs
    on the whole batch at once instead of per sample through PIL.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool,
                 augment: dict | None = None, extra: dict | None = None, num_classes: int | None = None):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.augment = augment or {}
        self.extra = extra or {}
        self.dataset = _TensorView(images, labels, num_classes)

    @classmethod
    def from_dataset(cls, dataset, cfg, train: bool, mean, std) -> "InMemoryLoader":
        """Materialise an ImageDataset once (resize, channel conversion, normalisation) as tensors."""
        plain = dataset.without_augmentation()
        images = torch.stack([plain[i][0] for i in range(len(plain))]) if len(plain) else torch.empty(0)
        labels = torch.as_tensor(plain.labels, dtype=torch.long)
        augment = {}
        if train and cfg.apply_augmentation:
            augment = {"padding": cfg.crop_padding, "flip": cfg.horizontal_flip, "rotation": cfg.rotation}
        device = torch.device(cfg.device)
        extra = {k: torch.as_tensor(v).to(device) for k, v in dataset.extra.items()}
        return cls(images.to(device), labels.to(device), cfg.batch_size, shuffle=train and cfg.shuffle,
                   augment=augment, extra=extra, num_classes=dataset.num_classes)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n).to(self.images.device) if self.shuffle else torch.arange(n, device=self.images.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self._batch(idx, augment=True)

    def unshuffled(self):
        for start in range(0, len(self.labels), self.batch_size):
            yield self._batch(torch.arange(start, min(start + self.batch_size, len(self.labels)),
                                           device=self.images.device), augment=False)

    def _batch(self, idx, augment: bool):
        x = self.images[idx]
        if augment and self.augment:
            x = augment_batch(x, **self.augment)
        batch = (x, self.labels[idx])
        if self.extra:
            batch += ({k: v[idx] for k, v in self.extra.items()},)
        return batch


class _TensorView:
    """``loader.dataset``: length, items and the class count, like a Dataset."""

    def __init__(self, images, labels, num_classes):
        self.images, self.labels, self.num_classes = images, labels, num_classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def augment_batch(x: torch.Tensor, padding: int = 4, flip: bool = True, rotation: float = 0.0) -> torch.Tensor:
    """Per-sample random crop (after zero padding), horizontal flip and rotation of a batch ``[B, C, H, W]``.

    Crop and flip are one ``gather`` per batch: each output pixel reads its source pixel of the padded
    image, at a per-sample offset, with the column order reversed for flipped samples.
    """
    b, c, h, w = x.shape
    if padding or flip:
        device = x.device
        hp, wp = h + 2 * padding, w + 2 * padding
        padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
        oy = torch.randint(0, 2 * padding + 1, (b, 1), device=device)
        ox = torch.randint(0, 2 * padding + 1, (b, 1), device=device)
        cols = torch.arange(w, device=device).expand(b, w)
        if flip:
            flipped = torch.rand(b, 1, device=device) < 0.5
            cols = torch.where(flipped, w - 1 - cols, cols)
        rows = oy + torch.arange(h, device=device)                      # [B, H]
        index = (rows[:, :, None] * wp + (ox + cols)[:, None, :]).view(b, 1, h * w)
        x = padded.reshape(b, c, hp * wp).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)
    if rotation:
        angles = (torch.rand(b, device=x.device) * 2 - 1) * math.radians(rotation)
        cos, sin = angles.cos(), angles.sin()
        zeros = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, align_corners=False)
    return x
