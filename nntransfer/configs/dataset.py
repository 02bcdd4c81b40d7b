"""Dataset configs. Builders live in ``nntransfer.dataset``."""
from __future__ import annotations

from typing import Optional

from .base import BaseConfig, field


class DatasetConfig(BaseConfig):
    """Settings every dataset loader understands (nnfabrik: ``fn(seed, **config)``)."""

    config_name = "dataset"
    fn = "nntransfer.dataset.image_dataset_loader"

    data_dir: str = field(default="./data", help="where the dataset files live")
    batch_size: int = 64
    valid_size: float = field(default=0.1, help="fraction of train split held out for validation")
    shuffle: bool = True
    num_workers: int = 0
    pin_memory: bool = False


class ImageDatasetConfig(DatasetConfig):
    """Image datasets (torchvision classes, ImageFolder and the offline ``digits``)."""

    dataset_cls: str = field(default="digits", help="digits | MNIST | FashionMNIST | CIFAR10 | CIFAR100 | SVHN | ImageFolder")
    download: bool = field(default=False, help="allow torchvision to download missing files")
    input_width: Optional[int] = None
    input_height: Optional[int] = None
    apply_augmentation: bool = False
    apply_normalization: bool = True
    filter_classes: Optional[list[int]] = field(default=None, help="keep only these class labels")
    examples_per_class: Optional[int] = None
