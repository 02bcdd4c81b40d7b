"""Neural-response prediction: datasets of recorded (or simulated) neurons and core + readout models.

Builders live in ``nntransfer.dataset.neural`` and ``nntransfer.models.neural``; see docs/neural.md.
"""
from __future__ import annotations

from typing import Literal, Optional

from ..core.config import field
from ..errors import ConfigError
from .dataset import DatasetConfig
from .model import ModelConfig
from .registries import CORES, MODELS

DATA_KEYS = ("images", "responses", "behavior", "pupil_center")


class NeuralDatasetConfig(DatasetConfig):
    """Sessions in neuralpredictors' ``FileTreeDataset`` layout: one task key per session.

    Each session is a directory ``data_dir/<session>`` with ``data/images``, ``data/responses`` (optionally
    ``data/behavior``, ``data/pupil_center``), ``meta/trials/tiers.npy`` (train / validation / test per trial),
    ``meta/neurons`` and ``meta/statistics`` (see ``nntransfer.dataset.simulate_neurons``).
    """

    fn = "nntransfer.dataset.neural:neural_dataset_loader"

    sessions: list[str] = field(default=[], help="session directories under data_dir; each is one task key")
    valid_size: float = field(
        default=0.0, help="0: the data's validation tier; > 0: draw this fraction of the train tier instead (seeded)")
    include_behavior: bool = field(
        default=False, help="batches carry extra={'behavior', 'pupil_center'} (the session must have both)")
    normalize: bool = field(
        default=True, help="neuralpredictors' NeuroNormalizer: images z-scored, responses / per-neuron std")
    exclude_from_normalization: list[str] = field(
        default=[], help="data keys NeuroNormalizer leaves as they are, e.g. ['responses']")
    in_memory: bool = field(default=False, help="fast path: each split as tensors on `device`, batches by index")
    device: str = field(default="cpu", help="device of the in-memory tensors")

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not self.sessions:
            raise ConfigError(f"{name}.sessions must name at least one session directory under data_dir "
                              "(e.g. one written by nntransfer.dataset.simulate_neurons)")
        if len(set(self.sessions)) != len(self.sessions):
            raise ConfigError(f"{name}.sessions has duplicates: {self.sessions}")
        for session in self.sessions:
            # a session's name is its task key and the name of its readout module: no dots, no path
            if not session or any(c in session for c in "./\\"):
                raise ConfigError(f"{name}.sessions: {session!r} must be a plain directory name under data_dir "
                                  "(no '.', '/' or '\\'); point data_dir at the folder that holds it")
        unknown = sorted(set(self.exclude_from_normalization) - set(DATA_KEYS))
        if unknown:
            raise ConfigError(f"{name}.exclude_from_normalization: unknown data keys {unknown}; "
                              f"use some of {list(DATA_KEYS)}")


class NeuralModelConfig(ModelConfig):
    """A shared core, one readout per session, and an output nonlinearity for Poisson targets.

    ``type`` picks the core: neuralpredictors' ``stacked2d`` (``Stacked2dCore``) or ``se2d`` (``SE2dCore``), or a
    classification model (``lenet``, ``resnet18``, ``vgg11``, ``torchvision.<name>``, an import path) cut after
    ``core_layer``: its layers keep their names, so a classifier trained in an earlier transfer step hands
    over its core's parameters (``transfer_strict=False``) while the readout starts fresh.
    """

    fn = "nntransfer.models.neural:neural_model_builder"

    type: str = field(default="stacked2d", help="core: stacked2d | se2d | a classification model type cut at "
                                                "core_layer (lenet, resnet18, vgg11, torchvision.<name>, import path)")
    # neuralpredictors cores
    hidden_channels: int = field(default=32, help="stacked2d/se2d: feature maps per layer")
    input_kern: int = field(default=9, help="stacked2d/se2d: kernel size of the first layer")
    hidden_kern: int = field(default=7, help="stacked2d/se2d: kernel size of the other layers")
    layers: int = field(default=3, help="stacked2d/se2d: number of layers")
    gamma_input: float = field(default=0.0, help="stacked2d/se2d: Laplace smoothness penalty on the first layer")
    gamma_hidden: float = field(default=0.0, help="stacked2d: group sparsity penalty on the other layers")
    core_options: dict = field(default={}, help="more keyword arguments of the neuralpredictors core")
    # cores cut from classifiers
    core_layer: Optional[str] = field(
        default=None, help="classifier cores: the layer whose output is the core's (default: the child 'core')")
    input_channels: Optional[int] = field(
        default=None, help="classifier cores: channels the classifier takes (1-channel images are repeated); "
                           "default: the data's (torchvision.<name>: 3)")
    core_batchnorm: bool = field(default=True, help="classifier cores: a BatchNorm2d (core_norm) after the cut")
    # readouts
    readout: Literal["gaussian", "factorized"] = field(
        default="gaussian", help="per session: neuralpredictors' FullGaussian2d or FullFactorized2d")
    gamma_readout: float = field(default=0.0076, help="L1 penalty on the readout's feature weights")
    gamma_convention: Literal["averaged", "nnvision"] = field(
        default="averaged", since="0.3",
        help="the loss scale the gamma_* penalties are weighed against: 'averaged' (nntransfer's: penalties added as "
             "they are to the loss averaged over examples and neurons) or 'nnvision' (nnvision/neuralpredictors "
             "trainers: a loss summed over the batch and neurons and scaled by sqrt(N/B); penalties are divided by "
             "neurons * sqrt(N * B) per session, so published gammas carry over)")
    init_mu_range: float = field(default=0.3, help="gaussian: initial positions uniform in ±this (grid is ±1)")
    init_sigma: float = field(default=0.1, help="gaussian: initial spread of the sampled positions")
    readout_options: dict = field(default={}, help="more keyword arguments of the neuralpredictors readout")
    # output
    elu_offset: float = field(default=0.0, help="prediction = ELU(readout + elu_offset) + 1 (positive rates)")

    def _check_names(self) -> None:
        if self.fn == NeuralModelConfig.fn and not CORES.knows(self.type):  # else a classifier cut at core_layer
            try:
                MODELS.check_name(self.type)
            except ConfigError as err:
                raise ConfigError(f"NeuralModelConfig.type={self.type!r} is neither a neural core "
                                  f"({', '.join(CORES.names())}) nor a classification model: {err}") from None

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        for field_name in ("hidden_channels", "input_kern", "hidden_kern", "layers"):
            if getattr(self, field_name) < 1:
                raise ConfigError(f"{name}.{field_name} must be positive, got {getattr(self, field_name)}")
        for field_name in ("gamma_input", "gamma_hidden", "gamma_readout"):
            if getattr(self, field_name) < 0:
                raise ConfigError(f"{name}.{field_name} must be >= 0, got {getattr(self, field_name)}")
        if not 0 < self.init_mu_range <= 1 or self.init_sigma <= 0:
            raise ConfigError(f"{name}.init_mu_range must be in (0, 1] and init_sigma > 0, "
                              f"got {self.init_mu_range}, {self.init_sigma}")
        if self.input_channels is not None and self.input_channels < 1:
            raise ConfigError(f"{name}.input_channels must be positive or None, got {self.input_channels}")
