"""The image dataset loader: selection, splits, transforms, and two ways to batch (DataLoader or in memory)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..configs.dataset import ImageDatasetConfig
from ..errors import ConfigError
from .in_memory import InMemoryLoader
from .sources import Source, load_source


# -- which examples ---------------------------------------------------------------------------------
# The test split's per-class limit (test_examples_per_class) picks with this seed, not the experiment's:
# every seed of an experiment is evaluated on the same test examples.
TEST_SELECTION_SEED = 0


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


def split_per_class(labels: np.ndarray, pool: np.ndarray, validation_per_class: int,
                    training_per_class: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train/validation indices of ``pool``: per class, ``validation_per_class`` validation examples, then
    at most ``training_per_class`` training examples (None: the rest), from one seeded permutation of that class.

    One permutation per class makes the selections nested: for a seed, every training budget is evaluated on the
    same validation examples, and a smaller budget's training examples are among a larger one's.
    """
    rng = np.random.RandomState(seed)
    train, valid = [], []
    for c in np.unique(labels[pool]):
        members = rng.permutation(pool[labels[pool] == c])
        if len(members) <= validation_per_class:
            raise ConfigError(f"class {int(c)} has {len(members)} training examples, too few to draw "
                              f"validation_examples_per_class={validation_per_class} and keep one for training; "
                              "lower validation_examples_per_class")
        valid.append(members[:validation_per_class])
        rest = members[validation_per_class:]
        train.append(rest if training_per_class is None else rest[:training_per_class])
    if not valid:
        return pool[:0], pool[:0]
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))


# -- samples ----------------------------------------------------------------------------------------
class ImageDataset(Dataset):
    """Images (uint8 arrays ``[N, H, W, C]`` or file paths) with labels, transformed in three stages.

    ``prepare`` (deterministic PIL steps: channel conversion, resize, a test-set rotation), ``augment``
    (random PIL steps, training only) and ``finish`` (to a float tensor, normalised with ``mean``/``std``).
    The in-memory path reuses ``prepare`` once per image (see :meth:`pixels`) and does the rest on batches.
    Item ``i`` is ``(image, label)``, or ``(image, label, extra)`` when per-example transfer data is
    attached (row ``i`` of each array belongs to item ``i``). ``example_indices[i]`` is item ``i``'s index in
    the dataset's ``source_split`` ("train" or "test" of the source), which transfer data is aligned by.
    """

    def __init__(self, images, labels, num_classes: int, prepare: list, augment: list, mean, std,
                 extra: dict | None = None, example_indices=None, source_split: str = "train"):
        self.images, self.labels, self.num_classes = images, labels, num_classes
        self.prepare, self.augment = list(prepare), list(augment)
        self.mean, self.std = mean, std  # None: no normalisation
        self.extra = extra or {}
        self.example_indices = np.arange(len(labels)) if example_indices is None else np.asarray(example_indices)
        self.source_split = source_split
        self.transform = _compose(self.prepare + self.augment + _finish_steps(mean, std))

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        image = self.images[i]
        if isinstance(image, (str, Path)):
            with Image.open(image) as file:  # closes the file at once (many workers x many images)
                return file.convert("RGB")
        return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)

    def __getitem__(self, i: int):
        item = (self.transform(self.image(i)), int(self.labels[i]))
        if self.extra:
            return item + ({k: torch.as_tensor(v[i]) for k, v in self.extra.items()},)
        return item

    def without_augmentation(self) -> "ImageDataset":
        return self.with_steps(prepare=self.prepare, augment=[])

    def with_steps(self, prepare: list, augment: list, extra: dict | None = None) -> "ImageDataset":
        return ImageDataset(self.images, self.labels, self.num_classes, prepare, augment, self.mean, self.std,
                            self.extra if extra is None else extra, self.example_indices, self.source_split)

    def pixels(self) -> torch.Tensor:
        """All prepared images as one uint8 tensor ``[N, C, H, W]`` (exactly what ``ToTensor`` would scale)."""
        if not self.prepare and isinstance(self.images, np.ndarray):  # nothing to do per image: one copy
            return torch.from_numpy(np.ascontiguousarray(self.images)).permute(0, 3, 1, 2).contiguous()
        from torchvision.transforms import PILToTensor

        to_tensor, prepare = PILToTensor(), _compose(self.prepare)
        return torch.stack([to_tensor(prepare(self.image(i))) for i in range(len(self))])


def _compose(steps):
    from torchvision import transforms as T

    return T.Compose(steps)


def _finish_steps(mean, std) -> list:
    from torchvision import transforms as T

    return [T.ToTensor()] + ([T.Normalize(mean, std)] if mean is not None else [])


def _prepare_steps(cfg: ImageDatasetConfig, native_channels: int) -> list:
    """Channel conversion and resizing; empty when the images already fit (lets the in-memory path skip PIL)."""
    from torchvision import transforms as T

    steps = []
    if cfg.channels == 1 and native_channels != 1:
        steps.append(T.Grayscale(1))
    elif cfg.channels == 3 and native_channels != 3:
        steps.append(_ToRGB())
    if cfg.input_height or cfg.input_width:
        steps.append(T.Resize((cfg.input_height or cfg.input_width, cfg.input_width or cfg.input_height)))
    return steps


def _augment_steps(cfg: ImageDatasetConfig) -> list:
    from torchvision import transforms as T

    if not cfg.apply_augmentation:
        return []
    steps = []
    if cfg.crop_padding:
        steps.append(_PaddedRandomCrop(cfg.crop_padding))
    if cfg.horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    if cfg.rotation:
        steps.append(T.RandomRotation(cfg.rotation))
    return steps


# Small classes instead of lambdas: transforms must pickle for DataLoader workers (spawn/forkserver).
class _ToRGB:
    def __call__(self, image):
        return image.convert("RGB")


class _Rotate:
    """Fixed rotation by ``angle`` degrees (counter-clockwise, same size, black corners)."""

    def __init__(self, angle: float):
        self.angle = angle

    def __call__(self, image):
        return image.rotate(self.angle)


class _PaddedRandomCrop:
    """RandomCrop back to the input size after zero padding (the size is read from each image)."""

    def __init__(self, padding: int):
        self.padding = padding

    def __call__(self, image):
        from torchvision import transforms as T

        return T.RandomCrop((image.height, image.width), padding=self.padding)(image)


def _native_channels(images) -> int:
    """Channels as stored: the last axis of an array; image files are opened as RGB."""
    return int(images.shape[-1]) if isinstance(images, np.ndarray) else 3


def _stats(cfg: ImageDatasetConfig, source: Source, train_idx: np.ndarray):
    """Normalisation mean/std (None when off): the dataset's defaults or computed on the training split."""
    if not cfg.apply_normalization:
        return None, None
    mean, std = source.mean, source.std
    if cfg.normalization == "computed":
        if not isinstance(source.train_images, np.ndarray):
            raise ConfigError("normalization='computed' needs an array dataset; use normalization='default' "
                              "for ImageFolder")
        mean, std = _channel_stats(source.train_images, train_idx)
    channels = cfg.channels or _native_channels(source.train_images)
    if len(mean) != channels:  # grayscale <-> RGB conversion: average or repeat the statistics
        mean, std = ((float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _channel_stats(images: np.ndarray, idx: np.ndarray, chunk: int = 1024) -> tuple[tuple, tuple]:
    """Per-channel mean and std on [0, 1] of ``images[idx]``, in chunks (a float copy of CIFAR would be 1 GB)."""
    channels = images.shape[-1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(idx), chunk):
        pixels = images[idx[start:start + chunk]].reshape(-1, channels).astype(np.float64) / 255
        total += pixels.sum(axis=0)
        squares += np.square(pixels).sum(axis=0)
        count += len(pixels)
    mean = total / count
    return tuple(mean), tuple(np.sqrt(np.maximum(squares / count - mean ** 2, 0)))


# -- the loader function ------------------------------------------------------------------------------
def image_dataset_loader(seed: int, transfer_data: dict | None = None, **config) -> dict:
    """nnfabrik dataset function: ``{"train": {task: loader}, "validation": {...}, "test": {task: ..., extra sets}}``.

    ``config`` holds the fields of :class:`~nntransfer.configs.ImageDatasetConfig` (``comment`` is ignored).
    ``transfer_data`` (from an earlier transfer step, not a config field) is what
    :func:`nntransfer.runner.transfer.generate_transfer_data` produced: ``{"train": {name: rows, "example_indices":
    indices}, "test": {...}}``, rows keyed by the index of their example in the source's training (or test)
    set. Training batches carry ``extra={name: rows of this batch}``; every training example needs a row
    (ConfigError otherwise). Validation and test batches carry them when every example of that split has a
    row, and no extra otherwise; extra test sets (rotations, corruptions) never do. Data without
    ``example_indices`` (stored before 0.2) has one row per training example in canonical order.
    """
    config.pop("comment", None)
    cfg = ImageDatasetConfig(**config)
    source = load_source(cfg.dataset_cls, cfg.data_dir, cfg.download)
    if cfg.validation_examples_per_class is None:
        train_pool = select(source.train_labels, cfg.filter_classes, cfg.examples_per_class, seed)
        train_idx, valid_idx = split(train_pool, cfg.valid_size, seed)
    else:
        train_idx, valid_idx = split_per_class(source.train_labels, select(source.train_labels, cfg.filter_classes,
                                                                           None, seed),
                                               cfg.validation_examples_per_class, cfg.examples_per_class, seed)
    test_idx = select(source.test_labels, cfg.filter_classes, cfg.test_examples_per_class, TEST_SELECTION_SEED)
    if len(train_idx) == 0:
        raise ConfigError(f"no training examples left after filter_classes={cfg.filter_classes}, "
                          f"examples_per_class={cfg.examples_per_class}, valid_size={cfg.valid_size}")
    mean, std = _stats(cfg, source, train_idx)
    relabel = _relabeller(cfg)
    transfer_data = _check_transfer_data(transfer_data)
    num_classes = len(cfg.filter_classes) if cfg.relabel and cfg.filter_classes else source.num_classes
    prepare = _prepare_steps(cfg, _native_channels(source.train_images))

    def dataset(images, labels, idx, source_split, augment=(), required=False):
        picked = [images[i] for i in idx] if isinstance(images, list) else images[idx]
        extra = aligned_rows(transfer_data, source_split, idx, required)
        return ImageDataset(picked, relabel(labels[idx]), num_classes, prepare, list(augment), mean, std, extra,
                            idx, source_split)

    splits = {
        "train": dataset(source.train_images, source.train_labels, train_idx, "train", _augment_steps(cfg),
                         required=True),
        "validation": dataset(source.train_images, source.train_labels, valid_idx, "train"),
        "test": dataset(source.test_images, source.test_labels, test_idx, "test"),
    }
    if not len(valid_idx):  # valid_size=0: no validation split (the trainer then trains without early stopping)
        del splits["validation"]
    loaders = {name: {cfg.task_key: _loader(cfg, ds, train=name == "train")} for name, ds in splits.items()}
    loaders.setdefault("validation", {})
    for key, ds in _extra_test_sets(cfg, splits["test"], relabel).items():
        loaders["test"][key] = _loader(cfg, ds, train=False)
    return loaders


def _relabeller(cfg):
    if not (cfg.relabel and cfg.filter_classes):
        return lambda labels: np.asarray(labels, dtype=np.int64)
    mapping = {c: i for i, c in enumerate(cfg.filter_classes)}
    return lambda labels: np.asarray([mapping[int(y)] for y in labels], dtype=np.int64)


def _check_transfer_data(transfer_data: dict | None) -> dict:
    if not transfer_data:
        return {}
    unknown = set(transfer_data) - {"train", "test"}
    if unknown:
        raise ConfigError(f"transfer_data has split(s) {sorted(unknown)}; only 'train' and 'test' (the source's "
                          "training and test sets) are supported")
    return transfer_data


def aligned_rows(transfer_data: dict, source_split: str, idx: np.ndarray, required: bool) -> dict:
    """The rows of ``transfer_data[source_split]`` for the examples ``idx`` of that source split, in that order.

    ``required``: every example needs a row (else a ConfigError); otherwise a split that is not fully
    covered gets no rows (an empty dict).
    """
    block = transfer_data.get(source_split) or {}
    if not block:
        if required and transfer_data:
            raise ConfigError(f"transfer data has no rows for the {source_split} split")
        return {}
    rows = {name: np.asarray(array) for name, array in block.items() if name != "example_indices"}
    if "example_indices" not in block:
        if any(name.endswith("/example_indices") for name in block):
            raise ConfigError(f"transfer data of several tasks ({sorted(rows)}); the image loader takes one task's")
        return _rows_in_order(rows, len(idx)) if required else {}
    indices = np.asarray(block["example_indices"])
    for name, array in rows.items():
        if array.ndim == 0 or len(array) != len(indices):
            raise ConfigError(f"transfer data {name!r} has {len(array) if array.ndim else 0} rows for "
                              f"{len(indices)} example indices")
    order = np.argsort(indices, kind="stable")
    known = indices[order]
    position = np.searchsorted(known, idx).clip(max=max(len(known) - 1, 0))
    found = known[position] == idx if len(known) else np.zeros(len(idx), bool)
    if not found.all():
        if not required:
            return {}
        missing = np.asarray(idx)[~found]
        raise ConfigError(
            f"transfer data covers {len(indices)} examples of the source's {source_split} set, but {len(missing)} of "
            f"this step's {len(idx)} training examples are not among them (e.g. indices {missing[:5].tolist()}): "
            "the step that produced it kept other examples (filter_classes, examples_per_class). Select a subset "
            "of its examples; seed and valid_size may differ"
        )
    take = order[position]
    return {name: array[take] for name, array in rows.items()}


def _rows_in_order(rows: dict, n_train: int) -> dict:
    """Transfer data without example indices (stored before 0.2): one row per training example, in order."""
    for name, array in rows.items():
        if array.ndim == 0 or len(array) != n_train:
            raise ConfigError(
                f"transfer data {name!r} has {len(array) if array.ndim else 0} rows but the training split has "
                f"{n_train} examples: the step that produced it used a different dataset split "
                "(filter_classes, examples_per_class, valid_size or seed); use the same ones"
            )
    return rows


def _loader(cfg: ImageDatasetConfig, dataset: ImageDataset, train: bool):
    if cfg.in_memory:
        return InMemoryLoader.from_dataset(dataset, cfg, train=train)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=train and cfg.shuffle,
                      num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)


def _extra_test_sets(cfg: ImageDatasetConfig, test: ImageDataset, relabel) -> dict:
    """Rotated copies of the test set and one test set per corruption file, filtered like the test split."""
    extra = {}
    for angle in cfg.test_rotations:  # no transfer data: the teacher saw these examples unrotated
        extra[f"{cfg.task_key}_rotated_{angle:g}"] = test.with_steps(prepare=[_Rotate(angle)] + test.prepare,
                                                                     augment=[], extra={})
    if cfg.corrupted_test_dir:
        root = Path(cfg.corrupted_test_dir)
        labels_file = root / "labels.npy"
        if not labels_file.exists():
            raise ConfigError(f"corrupted_test_dir {root.resolve()} needs labels.npy next to the <corruption>.npy "
                              "files (uint8 images [N, H, W, C] or [N, H, W])")
        labels = np.load(labels_file)
        files = [f for f in sorted(root.glob("*.npy")) if f.name != "labels.npy"]
        if not files:
            raise ConfigError(f"corrupted_test_dir {root.resolve()} has no <corruption>.npy files besides labels.npy")
        for file in files:
            images, ys = np.load(file), labels
            if images.ndim == 3:  # grayscale stored without a channel axis
                images = images[..., None]
            if cfg.corruption_severity is not None:  # files hold severities 1..5 one after another
                n = len(images) // 5
                chunk = slice((cfg.corruption_severity - 1) * n, cfg.corruption_severity * n)
                images = images[chunk]
                ys = ys[chunk] if len(ys) == 5 * n else ys
            if len(ys) != len(images):
                raise ConfigError(f"{file} has {len(images)} images but labels.npy gives {len(ys)} labels")
            keep = select(ys, cfg.filter_classes, cfg.test_examples_per_class, TEST_SELECTION_SEED)
            extra[f"{cfg.task_key}_{file.stem}"] = ImageDataset(
                images[keep], relabel(ys[keep]), test.num_classes, test.prepare, [], test.mean, test.std,
                example_indices=keep, source_split=f"corrupted:{file.stem}")
    return extra


def example_indices(loader) -> tuple[str, np.ndarray] | None:
    """``(source_split, indices)`` of a loader's examples in canonical order, or None when its dataset does not
    say (datasets declare ``example_indices`` and ``source_split`` attributes, as :class:`ImageDataset` does)."""
    dataset = getattr(loader, "dataset", None)
    indices = getattr(dataset, "example_indices", None)
    if indices is None:
        return None
    return getattr(dataset, "source_split", "train"), np.asarray(indices)


def unshuffled(loader):
    """Batches of ``loader``'s split in canonical order, without augmentation or shuffling.

    Same batch format as the loader (with the ``extra`` dict when it carries transfer data).
    """
    if isinstance(loader, InMemoryLoader):
        return loader.unshuffled()
    if isinstance(loader, DataLoader):
        dataset = loader.dataset
        if isinstance(dataset, ImageDataset):
            dataset = dataset.without_augmentation()
        return DataLoader(dataset, batch_size=loader.batch_size or 1, shuffle=False, num_workers=loader.num_workers,
                          pin_memory=loader.pin_memory)
    raise TypeError(f"cannot iterate a {type(loader).__name__} in canonical order; use a DataLoader or InMemoryLoader")
