"""The fast in-memory path: a split kept as one uint8 tensor, batches by index, augmentation on whole batches."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class InMemoryLoader:
    """Iterates ``(inputs, targets[, extra])`` batches from tensors on ``device``.

    Images are kept as uint8 ``[N, C, H, W]`` (4× less memory than floats, and crops move 4× fewer
    bytes); each batch is gathered by index, augmented — per-sample random crops after zero padding and
    horizontal flips as one ``gather``, optional rotations — then scaled to [0, 1] and normalised, the
    same steps and order as the torchvision pipeline (so padding is black, as with ``RandomCrop``).
    Shuffling draws a permutation from torch's global RNG, which the trainer seeds per epoch, like
    ``DataLoader(shuffle=True)`` does.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool,
                 mean=None, std=None, augment: dict | None = None, extra: dict | None = None,
                 num_classes: int | None = None, example_indices=None, source_split: str = "train"):
        if images.dtype != torch.uint8:
            raise TypeError(f"InMemoryLoader keeps uint8 images [N, C, H, W] (0..255), got {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.to(images.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.augment = augment or {}
        self.extra = {k: torch.as_tensor(v).to(images.device) for k, v in (extra or {}).items()}
        normalisation = (None, None) if mean is None else (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        # x / 255 then (x - mean) / std, folded into one multiply-add per batch
        channels = images.shape[1] if images.dim() == 4 else 1
        mean = torch.as_tensor(mean if mean is not None else [0.0] * channels, dtype=torch.float32)
        std = torch.as_tensor(std if std is not None else [1.0] * channels, dtype=torch.float32)
        self._scale = (1 / (255 * std)).view(1, -1, 1, 1).to(images.device)
        self._shift = (-mean / std).view(1, -1, 1, 1).to(images.device)
        self.dataset = _TensorView(self, num_classes, example_indices, source_split)
        # the normalisation, for modules that work in pixel units (noise augmentation, robustness evaluation)
        self.dataset.mean, self.dataset.std = normalisation

    @classmethod
    def from_dataset(cls, dataset, cfg, train: bool) -> "InMemoryLoader":
        """Materialise an ImageDataset once (channel conversion, resize) as uint8 tensors on ``cfg.device``."""
        device = _device(cfg.device)
        augment = {}
        if train and cfg.apply_augmentation:
            augment = {"padding": cfg.crop_padding, "flip": cfg.horizontal_flip, "rotation": cfg.rotation}
        images = dataset.pixels() if len(dataset) else torch.empty(0, 1, 1, 1, dtype=torch.uint8)
        return cls(images.to(device), torch.as_tensor(dataset.labels, dtype=torch.long), cfg.batch_size,
                   shuffle=train and cfg.shuffle, mean=dataset.mean, std=dataset.std, augment=augment,
                   extra=dataset.extra, num_classes=dataset.num_classes, example_indices=dataset.example_indices,
                   source_split=dataset.source_split)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        n, device = len(self.labels), self.images.device
        order = torch.randperm(n).to(device) if self.shuffle else torch.arange(n, device=device)
        for start in range(0, n, self.batch_size):
            yield self._batch(order[start:start + self.batch_size], augment=True)

    def unshuffled(self):
        """Batches in canonical order, without augmentation."""
        n, device = len(self.labels), self.images.device
        for start in range(0, n, self.batch_size):
            yield self._batch(torch.arange(start, min(start + self.batch_size, n), device=device), augment=False)

    def _batch(self, idx: torch.Tensor, augment: bool):
        x = self.images[idx]
        rotation = 0.0
        if augment and self.augment:
            x = random_crop_flip(x, self.augment.get("padding", 0), self.augment.get("flip", False))
            rotation = self.augment.get("rotation", 0.0)
        x = x.float()
        if rotation:
            x = random_rotation(x, rotation)
        x = x.mul_(self._scale).add_(self._shift)  # in place: faster than an out-of-place addcmul here
        batch = (x, self.labels[idx])
        if self.extra:
            batch += ({k: v[idx] for k, v in self.extra.items()},)
        return batch


def _device(name: str) -> torch.device:
    """``cfg.device`` as a torch device that exists here, or a ConfigError saying what to set instead."""
    from ..errors import ConfigError

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r} is not a torch device ({err}); use e.g. 'cpu' or 'cuda'") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                          "set device='cpu' (or another index)")
    return device


class _TensorView:
    """``loader.dataset``: length, (unaugmented) items, the class count and the examples' source indices."""

    def __init__(self, loader: InMemoryLoader, num_classes, example_indices=None, source_split: str = "train"):
        self._loader, self.num_classes = loader, num_classes
        self.example_indices, self.source_split = example_indices, source_split

    @property
    def labels(self) -> torch.Tensor:
        return self._loader.labels

    def __len__(self) -> int:
        return len(self._loader.labels)

    def __getitem__(self, i: int):
        x, y = self._loader._batch(torch.tensor([i], device=self._loader.images.device), augment=False)[:2]
        return x[0], int(y[0])


def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-sample random crop (after zero padding, back to the input size) and horizontal flip of ``[B, C, H, W]``.

    One ``gather`` per batch: each output pixel reads its source pixel of the padded image at a
    per-sample offset, with the column order reversed for flipped samples. Works on any dtype.
    """
    if not (padding or flip):
        return x
    b, c, h, w = x.shape
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
    return padded.reshape(b, c, hp * wp).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def random_rotation(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image of a float batch by its own angle in ``[-degrees, degrees]`` (nearest pixel, black
    corners, like torchvision's ``RandomRotation`` on PIL images)."""
    b = len(x)
    angles = (torch.rand(b, device=x.device) * 2 - 1) * math.radians(degrees)
    cos, sin, zeros = angles.cos(), angles.sin(), torch.zeros(b, device=x.device)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", align_corners=False)


def augment_batch(x: torch.Tensor, padding: int = 4, flip: bool = True, rotation: float = 0.0) -> torch.Tensor:
    """:func:`random_crop_flip` then, for float batches, :func:`random_rotation` (the training augmentation)."""
    x = random_crop_flip(x, padding, flip)
    if rotation:
        x = random_rotation(x if x.is_floating_point() else x.float(), rotation)
    return x
