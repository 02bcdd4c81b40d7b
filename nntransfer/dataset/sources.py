"""Where the images come from: one loading function per dataset, registered by name.

Each returns a :class:`Source`: training and test images as uint8 arrays ``[N, H, W, C]`` (or, for
ImageFolder, file paths loaded on access), labels, and the dataset's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..configs.registries import SOURCES

# mean / std per channel on [0, 1] images
NORMALIZATION = {
    "digits": ((0.3062,), (0.3769,)),  # the training split of the fixed train/test split below
    "MNIST": ((0.1307,), (0.3081,)),
    "FashionMNIST": ((0.2860,), (0.3530,)),
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "SVHN": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "ImageFolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet statistics
}


@dataclass
class Source:
    train_images: np.ndarray | list[str]
    train_labels: np.ndarray
    test_images: np.ndarray | list[str]
    test_labels: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple


# SOURCES: name -> fn(data_dir, download) -> Source (built-in names declared in nntransfer.configs.registries)


def register_source(name: str):
    """Register ``fn(data_dir: str, download: bool) -> Source`` as ``dataset_cls=name``."""
    return SOURCES.register(name)


def load_source(name: str, data_dir: str, download: bool) -> Source:
    return SOURCES.get(name)(data_dir, download)


def _missing(name: str, root: str, err: Exception) -> ConfigError:
    return ConfigError(
        f"{name} not found under {Path(root).resolve()} ({err}). Put the files there, point data_dir at "
        f"them, or set download=True to let torchvision fetch them (needs network)."
    )


def _torchvision(cls_name: str, root: str, download: bool, **split):
    import torchvision

    try:
        return getattr(torchvision.datasets, cls_name)(root=root, download=download, **split)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise _missing(cls_name, root, err) from None
    except OSError as err:  # a failed download (no network, refused, disk full)
        raise ConfigError(f"could not download {cls_name} into {Path(root).resolve()} ({err}); put the files "
                          "there yourself and keep download=False") from None


@register_source("digits")
def digits(data_dir: str, download: bool) -> Source:
    """scikit-learn's bundled 8×8 digits (offline); a fixed stratified 80/20 train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.clip(data.images * 16, 0, 255).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    train_x, test_x, train_y, test_y = train_test_split(
        images, data.target, test_size=0.2, random_state=0, stratify=data.target)
    return Source(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64), 10, *NORMALIZATION["digits"])


def _mnist_like(name):
    def load(data_dir: str, download: bool) -> Source:
        train = _torchvision(name, data_dir, download, train=True)
        test = _torchvision(name, data_dir, download, train=False)
        return Source(train.data.numpy()[..., None], train.targets.numpy().astype(np.int64),
                      test.data.numpy()[..., None], test.targets.numpy().astype(np.int64), 10, *NORMALIZATION[name])

    return load


register_source("MNIST")(_mnist_like("MNIST"))
register_source("FashionMNIST")(_mnist_like("FashionMNIST"))


def _cifar(name, classes):
    def load(data_dir: str, download: bool) -> Source:
        train = _torchvision(name, data_dir, download, train=True)
        test = _torchvision(name, data_dir, download, train=False)
        return Source(np.asarray(train.data), np.asarray(train.targets, dtype=np.int64), np.asarray(test.data),
                      np.asarray(test.targets, dtype=np.int64), classes, *NORMALIZATION[name])

    return load


register_source("CIFAR10")(_cifar("CIFAR10", 10))
register_source("CIFAR100")(_cifar("CIFAR100", 100))


@register_source("SVHN")
def svhn(data_dir: str, download: bool) -> Source:
    train = _torchvision("SVHN", data_dir, download, split="train")
    test = _torchvision("SVHN", data_dir, download, split="test")
    return Source(train.data.transpose(0, 2, 3, 1), train.labels.astype(np.int64), test.data.transpose(0, 2, 3, 1),
                  test.labels.astype(np.int64), 10, *NORMALIZATION["SVHN"])


@register_source("ImageFolder")
def image_folder(data_dir: str, download: bool) -> Source:
    """``data_dir/train/<class>/...`` and ``data_dir/val/<class>/...`` (or ``test/``) image files.

    TinyImageNet's own layout works as is: ``train/<wnid>/images/*.JPEG`` (files are found recursively) and
    ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>...`` per line).
    """
    import torchvision

    root = Path(data_dir)
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise ConfigError(f"ImageFolder needs {root.resolve()}/train/<class>/... and {root.resolve()}/val (or "
                          "test)/<class>/... image files; point data_dir at that folder")
    train = torchvision.datasets.ImageFolder(str(root / "train"))
    train_labels = np.asarray([y for _, y in train.samples], dtype=np.int64)
    annotations = test_dir / "val_annotations.txt"
    if annotations.exists():
        test_paths, test_labels = _annotated(test_dir, annotations, train.class_to_idx)
    else:
        test = torchvision.datasets.ImageFolder(str(test_dir))
        if test.class_to_idx != train.class_to_idx:
            raise ConfigError(f"ImageFolder: the classes of {test_dir} differ from those of {root / 'train'}")
        test_paths, test_labels = [p for p, _ in test.samples], np.asarray([y for _, y in test.samples], np.int64)
    return Source([p for p, _ in train.samples], train_labels, test_paths, test_labels, len(train.classes),
                  *NORMALIZATION["ImageFolder"])


def _annotated(folder: Path, annotations: Path, class_to_idx: dict) -> tuple[list[str], np.ndarray]:
    """TinyImageNet validation images: ``images/<file>`` with its class in ``val_annotations.txt``."""
    paths, labels = [], []
    for line in annotations.read_text().splitlines():
        if not line.strip():
            continue
        file, wnid = line.split("\t")[:2]
        if wnid not in class_to_idx:
            raise ConfigError(f"{annotations}: class {wnid!r} of {file} has no folder under train/")
        image = folder / "images" / file
        paths.append(str(image if image.exists() else folder / file))
        labels.append(class_to_idx[wnid])
    return paths, np.asarray(labels, dtype=np.int64)
