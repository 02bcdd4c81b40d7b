"""Dataset configs. Builders live in ``nntransfer.dataset``."""
from __future__ import annotations

from typing import Literal, Optional

from ..core.config import BaseConfig, field
from ..errors import ConfigError
from .registries import SOURCES


class DatasetConfig(BaseConfig):
    """Settings every dataset loader understands (nnfabrik: ``fn(seed, **config)``)."""

    config_name = "dataset"
    fn = "nntransfer.dataset.image_dataset_loader"

    data_dir: str = field(default="./data", key=False, help="where the dataset files live")
    batch_size: int = field(default=64, help="examples per batch (all splits)")
    valid_size: float = field(default=0.1, help="fraction of the training split held out for validation (seeded)")
    shuffle: bool = field(default=True, help="shuffle the training split every epoch")
    num_workers: int = field(default=0, key=False, help="DataLoader worker processes (ignored by the in-memory path)")
    pin_memory: bool = field(default=False, key=False, help="DataLoader pin_memory (faster host-to-GPU copies)")

    def __post_init__(self) -> None:
        if not 0 <= self.valid_size < 1:
            raise ConfigError(f"{type(self).__name__}.valid_size must be in [0, 1), got {self.valid_size}")
        if self.batch_size < 1:
            raise ConfigError(f"{type(self).__name__}.batch_size must be positive, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"{type(self).__name__}.num_workers must be >= 0, got {self.num_workers}")


class ImageDatasetConfig(DatasetConfig):
    """Image classification datasets: torchvision classes, ImageFolder and the offline ``digits``."""

    dataset_cls: str = field(
        default="digits", help="digits | MNIST | FashionMNIST | CIFAR10 | CIFAR100 | SVHN | ImageFolder")
    task_key: str = field(default="img_classification", help="key of the loaders in each split")
    download: bool = field(default=False, help="let torchvision download missing files (needs network)")
    input_width: Optional[int] = field(default=None, help="resize images to this width")
    input_height: Optional[int] = field(default=None, help="resize images to this height")
    channels: Optional[Literal[1, 3]] = field(default=None, help="convert to grayscale (1) or RGB (3)")
    apply_augmentation: bool = field(default=False, help="random crop with padding, horizontal flip, rotation")
    crop_padding: int = field(default=4, help="augmentation: zero padding before the random crop (0: no crop)")
    horizontal_flip: bool = field(default=True, help="augmentation: random horizontal flips")
    rotation: float = field(default=0.0, help="random rotation up to ± this many degrees (training)")
    apply_normalization: bool = field(default=True, help="normalise with mean/std (else inputs are in [0, 1])")
    normalization: Literal["default", "computed"] = field(
        default="default", help="per-dataset mean/std, or computed on the training split")
    filter_classes: Optional[list[int]] = field(default=None, help="keep only these labels (all splits)")
    relabel: bool = field(default=False, help="map the kept labels to 0..k-1")
    examples_per_class: Optional[int] = field(
        default=None, help="keep at most N examples per class of the training split (training + validation, or "
                           "training only with validation_examples_per_class; chosen by seed); the test split stays "
                           "whole")
    validation_examples_per_class: Optional[int] = field(
        default=None, since="0.3",
        help="draw N validation examples per class from the training split first (seeded), instead of the "
             "valid_size fraction (which must then be 0): examples_per_class then counts training examples only, "
             "and every data budget of a seed is selected on the same validation examples")
    test_examples_per_class: Optional[int] = field(
        default=None, since="0.2",
        help="keep at most N test examples per class (the same ones for every seed); None: the whole test split")
    test_rotations: list[float] = field(default=[], help="extra test sets rotated by these angles")
    corrupted_test_dir: Optional[str] = field(
        default=None, help="directory of <corruption>.npy test images (+ labels.npy): one extra test set each")
    corruption_severity: Optional[int] = field(default=None, help="1-5: use that fifth of each corruption file")
    in_memory: bool = field(
        default=False,
        help="fast path: keep each split as one uint8 tensor on `device`; batches by index, batched augmentation")
    device: str = field(default="cpu", help="device of the in-memory tensors")

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.crop_padding < 0 or self.rotation < 0:
            raise ConfigError(f"{name}.crop_padding and rotation must be >= 0, "
                              f"got {self.crop_padding}, {self.rotation}")
        if self.filter_classes is not None and (not self.filter_classes
                                                or len(set(self.filter_classes)) != len(self.filter_classes)):
            raise ConfigError(f"{name}.filter_classes must be a non-empty list of distinct labels, "
                              f"got {self.filter_classes}; use None to keep all classes")
        for limit in ("examples_per_class", "validation_examples_per_class", "test_examples_per_class"):
            if getattr(self, limit) is not None and getattr(self, limit) < 1:
                raise ConfigError(f"{name}.{limit} must be >= 1 (or None for all), got {getattr(self, limit)}")
        if self.validation_examples_per_class is not None and self.valid_size != 0:
            raise ConfigError(f"{name}.valid_size={self.valid_size} and validation_examples_per_class="
                              f"{self.validation_examples_per_class} both choose the validation split: set "
                              "valid_size=0 to draw validation examples per class (or drop "
                              "validation_examples_per_class to hold out a fraction)")
        if self.corruption_severity is not None and not 1 <= self.corruption_severity <= 5:
            raise ConfigError(f"{name}.corruption_severity must be 1..5 (or None for the whole file), "
                              f"got {self.corruption_severity}")
        for size in (self.input_width, self.input_height):
            if size is not None and size < 1:
                raise ConfigError(f"{name}.input_width/input_height must be positive, got {size}")

    def _check_names(self) -> None:
        if self.fn == ImageDatasetConfig.fn:  # another builder may read dataset_cls differently
            SOURCES.check_name(self.dataset_cls)
