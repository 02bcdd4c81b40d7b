"""Dataset loaders (nnfabrik convention: ``fn(seed, **config) -> {"train": ..., "validation": ..., "test": ...}``)."""
from .image_loader import ImageDataset, aligned_rows, example_indices, image_dataset_loader, select, split, unshuffled
from .in_memory import InMemoryLoader, augment_batch, random_crop_flip, random_rotation
from .neural import NeuralSplit, TensorBatches, neural_dataset_loader, open_session, simulate_neurons
from .sources import NORMALIZATION, SOURCES, Source, register_source

__all__ = [
    "ImageDataset",
    "InMemoryLoader",
    "NORMALIZATION",
    "NeuralSplit",
    "SOURCES",
    "Source",
    "TensorBatches",
    "aligned_rows",
    "augment_batch",
    "example_indices",
    "image_dataset_loader",
    "neural_dataset_loader",
    "open_session",
    "random_crop_flip",
    "random_rotation",
    "register_source",
    "select",
    "simulate_neurons",
    "split",
    "unshuffled",
]
