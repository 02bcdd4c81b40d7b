"""The image dataset loader: selection, splits, transforms, and two ways to batch (DataLoader or in memory)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..configs.dataset import ImageDatasetConfig
from ..configs.errors import ConfigError
from .in_memory import InMemoryLoader
from .sources import Source, load_source


# -- which examples ---------------------------------------------------------------------------------
def select(labels: np.ndarray, filter_classes, examples_per_class, seed: int) -> np.ndarray:
    """Indices kept by the class filter and the per-class limit (seeded choice, original order kept)."""
    keep = np.arange(len(labels))
    if filter_classes is not None:
        keep = keep[np.isin(labels, filter_classes)]
    if examples_per_class is not None:
        rng = np.random.RandomState(seed)
        chosen = [rng.permutation(keep[labels[keep] == c])[:examples_per_class] for c in np.unique(labels[keep])]
        keep = np.sort(np.concatenate(chosen)) if chosen else keep[:0]
    return keep


def split(indices: np.ndarray, valid_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train/validation indices; the same seed gives the same split."""
    order = np.random.RandomState(seed).permutation(len(indices))
    n_valid = int(round(valid_size * len(indices)))
    return np.sort(indices[order[n_valid:]]), np.sort(indices[order[:n_valid]])


# -- samples ----------------------------------------------------------------------------------------
class ImageDataset(Dataset):
    """Images (uint8 arrays or file paths) with labels and a torchvision transform.

    Item ``i`` is ``(image, label)``, or ``(image, label, extra)`` when per-example transfer data is
    attached (row ``i`` of each array belongs to item ``i``).
    """

    def __init__(self, images, labels, transform, eval_transform, num_classes: int, extra: dict | None = None):
        self.images, self.labels = images, labels
        self.transform, self.eval_transform = transform, eval_transform
        self.num_classes = num_classes
        self.extra = extra or {}

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        image = self.images[i]
        if isinstance(image, (str, Path)):
            return Image.open(image).convert("RGB")
        return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)

    def __getitem__(self, i: int):
        item = (self.transform(self.image(i)), int(self.labels[i]))
        if self.extra:
            return item + ({k: torch.as_tensor(v[i]) for k, v in self.extra.items()},)
        return item

    def without_augmentation(self) -> "ImageDataset":
        return ImageDataset(self.images, self.labels, self.eval_transform, self.eval_transform, self.num_classes,
                            self.extra)


def _transforms(cfg: ImageDatasetConfig, mean, std, train: bool):
    from torchvision import transforms as T

    steps = []
    if cfg.channels == 1:
        steps.append(T.Grayscale(1))
    elif cfg.channels == 3:
        steps.append(T.Lambda(lambda im: im.convert("RGB")))
    if cfg.input_height or cfg.input_width:
        steps.append(T.Resize((cfg.input_height or cfg.input_width, cfg.input_width or cfg.input_height)))
    if train and cfg.apply_augmentation:
        steps += _augmentations(cfg)
    steps.append(T.ToTensor())
    if cfg.apply_normalization:
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


def _augmentations(cfg):
    from torchvision import transforms as T

    steps = []
    if cfg.crop_padding:
        steps.append(_PaddedRandomCrop(cfg.crop_padding))
    if cfg.horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    if cfg.rotation:
        steps.append(T.RandomRotation(cfg.rotation))
    return steps


class _PaddedRandomCrop:
    """RandomCrop back to the input size after zero padding (the size is read from each image)."""

    def __init__(self, padding: int):
        self.padding = padding

    def __call__(self, image):
        from torchvision import transforms as T

        return T.RandomCrop((image.height, image.width), padding=self.padding)(image)


def _stats(cfg: ImageDatasetConfig, source: Source, train_idx: np.ndarray):
    """Normalisation mean/std: the dataset's defaults or computed on the training split."""
    mean, std = source.mean, source.std
    if cfg.normalization == "computed":
        if isinstance(source.train_images, list):
            raise ConfigError("normalization='computed' needs an array dataset; give ImageFolder the default")
        pixels = source.train_images[train_idx].astype(np.float64) / 255
        mean, std = tuple(pixels.mean(axis=(0, 1, 2))), tuple(pixels.std(axis=(0, 1, 2)))
    channels = cfg.channels or (1 if isinstance(source.train_images, np.ndarray) and source.train_images.shape[-1] == 1 else 3)
    if len(mean) != channels:  # grayscale <-> RGB conversion: average or repeat the statistics
        mean, std = ((float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels)
    return mean, std


# -- the loader function ------------------------------------------------------------------------------
def image_dataset_loader(seed: int, transfer_data: dict | None = None, **config) -> dict:
    """nnfabrik dataset function: ``{"train": {task: loader}, "validation": {...}, "test": {task: ..., extra sets}}``.

    ``transfer_data`` (from an earlier transfer step, not a config field) is ``{"train": {name: array}}``
    with one row per training example in canonical order (the order ``unshuffled`` yields); training
    batches then carry ``extra={name: rows of this batch}``.
    """
    config.pop("comment", None)
    cfg = ImageDatasetConfig(**config)
    source = load_source(cfg.dataset_cls, cfg.data_dir, cfg.download)
    train_pool = select(source.train_labels, cfg.filter_classes, cfg.examples_per_class, seed)
    train_idx, valid_idx = split(train_pool, cfg.valid_size, seed)
    test_idx = select(source.test_labels, cfg.filter_classes, cfg.examples_per_class, seed)
    mean, std = _stats(cfg, source, train_idx)
    relabel = _relabeller(cfg)
    extra = _transfer_rows(transfer_data, len(train_idx))

    def part(images, labels, idx):
        picked = [images[i] for i in idx] if isinstance(images, list) else images[idx]
        return picked, relabel(labels[idx])

    train_tf, eval_tf = _transforms(cfg, mean, std, train=True), _transforms(cfg, mean, std, train=False)
    num_classes = len(cfg.filter_classes) if cfg.relabel and cfg.filter_classes else source.num_classes
    splits = {
        "train": (ImageDataset(*part(source.train_images, source.train_labels, train_idx), train_tf, eval_tf,
                               num_classes, extra), True),
        "validation": (ImageDataset(*part(source.train_images, source.train_labels, valid_idx), eval_tf, eval_tf,
                                    num_classes), False),
        "test": (ImageDataset(*part(source.test_images, source.test_labels, test_idx), eval_tf, eval_tf,
                              num_classes), False),
    }
    if len(splits["train"][0]) == 0:
        raise ConfigError(f"no training examples left after filter_classes={cfg.filter_classes}")
    loaders = {name: {cfg.task_key: _loader(cfg, ds, train=is_train, seed=seed, mean=mean, std=std)}
               for name, (ds, is_train) in splits.items()}
    for key, dataset in _extra_test_sets(cfg, splits["test"][0], relabel, seed, eval_tf).items():
        loaders["test"][key] = _loader(cfg, dataset, train=False, seed=seed, mean=mean, std=std)
    return loaders


def _relabeller(cfg):
    if not (cfg.relabel and cfg.filter_classes):
        return lambda labels: labels
    mapping = {c: i for i, c in enumerate(cfg.filter_classes)}
    return lambda labels: np.asarray([mapping[int(y)] for y in labels], dtype=np.int64)


def _transfer_rows(transfer_data: dict | None, n_train: int) -> dict:
    if not transfer_data:
        return {}
    rows = {name: np.asarray(array) for name, array in transfer_data.get("train", {}).items()}
    for name, array in rows.items():
        if len(array) != n_train:
            raise ConfigError(
                f"transfer data {name!r} has {len(array)} rows but the training split has {n_train} examples: "
                "the step that produced it used a different dataset split (filters, valid_size or seed)"
            )
    return rows


def _loader(cfg: ImageDatasetConfig, dataset: ImageDataset, train: bool, seed: int, mean, std):
    if cfg.in_memory:
        return InMemoryLoader.from_dataset(dataset, cfg, train=train, mean=mean, std=std)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=train and cfg.shuffle,
                      num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)


def _extra_test_sets(cfg: ImageDatasetConfig, test: ImageDataset, relabel, seed: int, eval_tf) -> dict:
    from torchvision import transforms as T

    extra = {}
    for angle in cfg.test_rotations:
        rotated = T.Compose([T.Lambda(lambda im, a=angle: im.rotate(a))] + list(eval_tf.transforms))
        extra[f"{cfg.task_key}_rotated_{angle:g}"] = ImageDataset(test.images, test.labels, rotated, rotated,
                                                                  test.num_classes)
    if cfg.corrupted_test_dir:
        root = Path(cfg.corrupted_test_dir)
        labels_file = root / "labels.npy"
        if not labels_file.exists():
            raise ConfigError(f"corrupted_test_dir {root.resolve()} needs labels.npy next to the <corruption>.npy files")
        labels = np.load(labels_file)
        for file in sorted(root.glob("*.npy")):
            if file.name == "labels.npy":
                continue
            images, ys = np.load(file), labels
            if cfg.corruption_severity is not None:  # files hold severities 1..5 one after another
                n = len(images) // 5
                chunk = slice((cfg.corruption_severity - 1) * n, cfg.corruption_severity * n)
                images = images[chunk]
                ys = ys[chunk] if len(ys) == 5 * n else ys
            keep = select(ys, cfg.filter_classes, cfg.examples_per_class, seed)
            extra[f"{cfg.task_key}_{file.stem}"] = ImageDataset(images[keep], relabel(ys[keep]), eval_tf, eval_tf,
                                                               test.num_classes)
    return extra


def unshuffled(loader):
    """Batches of ``loader``'s split in canonical order, without augmentation or shuffling."""
    if isinstance(loader, InMemoryLoader):
        return loader.unshuffled()
    if isinstance(loader, DataLoader):
        dataset = loader.dataset
        if isinstance(dataset, ImageDataset):
            dataset = dataset.without_augmentation()
        return DataLoader(dataset, batch_size=loader.batch_size or 1, shuffle=False, num_workers=loader.num_workers)
    raise TypeError(f"cannot iterate a {type(loader).__name__} in canonical order; use a DataLoader or InMemoryLoader")
