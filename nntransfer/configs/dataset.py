"""Dataset configs. Builders live in ``nntransfer.dataset``."""
from __future__ import annotations

from typing import Literal, Optional

from .base import BaseConfig, field
from .errors import ConfigError


class DatasetConfig(BaseConfig):
    """Settings every dataset loader understands (nnfabrik: ``fn(seed, **config)``)."""

    config_name = "dataset"
    fn = "nntransfer.dataset.image_dataset_loader"

    data_dir: str = field(default="./data", help="where the dataset files live")
    batch_size: int = 64
    valid_size: float = field(default=0.1, help="fraction of the training split held out for validation (seeded)")
    shuffle: bool = True
    num_workers: int = 0
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.valid_size < 1:
            raise ConfigError(f"{type(self).__name__}.valid_size must be in [0, 1), got {self.valid_size}")
        if self.batch_size < 1:
            raise ConfigError(f"{type(self).__name__}.batch_size must be positive, got {self.batch_size}")


class ImageDatasetConfig(DatasetConfig):
    """Image classification datasets: torchvision classes, ImageFolder and the offline ``digits``."""

    dataset_cls: str = field(default="digits", help="digits | MNIST | FashionMNIST | CIFAR10 | CIFAR100 | SVHN | ImageFolder")
    task_key: str = field(default="img_classification", help="key of the loaders in each split")
    download: bool = field(default=False, help="let torchvision download missing files (needs network)")
    input_width: Optional[int] = field(default=None, help="resize images to this width")
    input_height: Optional[int] = field(default=None, help="resize images to this height")
    channels: Optional[Literal[1, 3]] = field(default=None, help="convert to grayscale (1) or RGB (3)")
    apply_augmentation: bool = field(default=False, help="random crop with padding, horizontal flip, rotation")
    crop_padding: int = 4
    horizontal_flip: bool = True
    rotation: float = field(default=0.0, help="random rotation up to ± this many degrees (training)")
    apply_normalization: bool = True
    normalization: Literal["default", "computed"] = field(
        default="default", help="per-dataset mean/std, or computed on the training split")
    filter_classes: Optional[list[int]] = field(default=None, help="keep only these labels (all splits)")
    relabel: bool = field(default=False, help="map the kept labels to 0..k-1")
    examples_per_class: Optional[int] = field(default=None, help="keep at most N examples per class in every split")
    test_rotations: list[float] = field(default=[], help="extra test sets rotated by these angles")
    corrupted_test_dir: Optional[str] = field(
        default=None, help="directory of <corruption>.npy test images (+ labels.npy): one extra test set each")
    corruption_severity: Optional[int] = field(default=None, help="1-5: use that fifth of each corruption file")
    in_memory: bool = field(default=False, help="keep the splits as tensors and augment whole batches")
    device: str = field(default="cpu", help="device of the in-memory tensors")
