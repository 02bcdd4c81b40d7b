"""Neural-response models: a shared core, one neuralpredictors readout per session, a positive output.

The core is neuralpredictors' ``Stacked2dCore`` or ``SE2dCore`` (``type="stacked2d" | "se2d"``), or a
classification model cut after a named layer (``type="lenet"``, ``"resnet18"``, ``"torchvision.vgg11"``, ...,
``core_layer=...``), as neuralpredictors' ``TransferLearningCore`` does for torchvision models. A cut classifier
keeps its layers' names (LeNet's ``core.0.weight`` stays ``core.0.weight``), so a classifier trained in an
earlier transfer step hands over its core with ``transfer_strict=False`` and the readout starts fresh.
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..configs.neural import NeuralModelConfig
from ..configs.registries import CORES
from .registry import MODELS, DataInfo

# name -> fn(channels: int, cfg: NeuralModelConfig) -> nn.Module with forward(x) and regularizer(); other
# types name classification models (the MODELS registry), cut at core_layer
READOUTS = {"gaussian": "FullGaussian2d", "factorized": "FullFactorized2d"}


@dataclass(frozen=True)
class SessionInfo:
    """What a model needs to know about one session: neurons, image shape [C, H, W], mean training responses, and
    the training examples and batch size (None where the loader does not say)."""

    n_neurons: int
    image_shape: tuple
    mean_responses: np.ndarray
    n_train: int | None = None
    batch_size: int | None = None


def session_info(dataloaders: dict) -> dict[str, SessionInfo]:
    """Per training session: from the loader's ``NeuralSplit`` or, for any other loader, from its first batch."""
    info = {}
    for session, loader in dataloaders["train"].items():
        dataset = getattr(loader, "dataset", None)
        n_train = len(dataset) if hasattr(dataset, "__len__") else None
        batch_size = getattr(loader, "batch_size", None)
        if hasattr(dataset, "mean_responses"):
            info[session] = SessionInfo(dataset.n_neurons, dataset.image_shape, dataset.mean_responses(), n_train,
                                        batch_size)
        else:
            images, responses = next(iter(loader))[:2]
            info[session] = SessionInfo(int(responses.shape[1]), tuple(images.shape[1:]),
                                        responses.float().mean(0).cpu().numpy(), n_train,
                                        batch_size or int(responses.shape[0]))
    return info


def penalty_divisors(convention: str, sessions: dict[str, SessionInfo]) -> dict[str, float]:
    """Per session, what the penalties are divided by so that ``gamma_*`` mean what ``convention`` says.

    ``"averaged"``: 1 (the penalties are added as they are to the loss averaged over examples and neurons).
    ``"nnvision"``: nnvision's trainers minimise ``sqrt(N/B) * sum(loss) + penalties`` per batch (B examples of
    n neurons, N training examples of the session), which is ``n * sqrt(N * B)`` times
    ``mean(loss) + penalties / (n * sqrt(N * B))``; the latter is what the trainer then minimises here, with B the
    loader's batch size (a smaller last batch is weighed as a full one).
    """
    if convention == "averaged":
        return {session: 1.0 for session in sessions}
    divisors = {}
    for session, info in sessions.items():
        if not info.n_train or not info.batch_size:
            raise ConfigError(f"gamma_convention='nnvision' needs the number of training examples and the batch size "
                              f"of session {session!r}, but its loader has no len(loader.dataset) or batch_size; "
                              "use gamma_convention='averaged'")
        divisors[session] = info.n_neurons * math.sqrt(info.n_train * info.batch_size)
    return divisors


class NeuralModel(nn.Module):
    """``ELU(readout[data_key](core(x)) + elu_offset) + 1``: one positive rate per neuron of the session.

    The core's modules are children of this model under their own names (``core`` for neuralpredictors
    cores and LeNet, ``conv1``/``layer1``/... for a ResNet, ``features`` for VGG; ``core_names`` lists them),
    ``readout`` is neuralpredictors' ``MultiReadoutBase`` with one readout per session. ``forward(x, data_key)``
    and ``regularizer(data_key)`` follow neuralpredictors' convention; ``data_key`` may be left out when there
    is one session.
    """

    def __init__(self, core: "OrderedDict[str, nn.Module]", readout: nn.Module, input_channels: int,
                 elu_offset: float = 0.0, penalty_divisors: dict[str, float] | None = None):
        super().__init__()
        if "readout" in core:
            raise ConfigError("the core has a layer named 'readout' (the classifier's head?): set core_layer to a "
                              "layer before it")
        for name, module in core.items():
            self.add_module(name, module)
        self.core_names = list(core)
        self.readout = readout
        self.input_channels = input_channels
        self.elu_offset = elu_offset
        # per session: the penalties are divided by this (gamma_convention; 1 for nntransfer's averaged loss)
        self.penalty_divisors = dict(penalty_divisors or {})

    def core_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps ``[B, C', H', W']`` of images ``[B, C, H, W]`` (1-channel images repeated as needed)."""
        if x.shape[1] == 1 and self.input_channels > 1:
            x = x.expand(-1, self.input_channels, -1, -1)
        for name in self.core_names:
            x = self._modules[name](x)
        return x

    def forward(self, x: torch.Tensor, data_key: str | None = None) -> torch.Tensor:
        if data_key is None and len(self.readout) > 1:
            raise ValueError(f"NeuralModel has sessions {list(self.readout)}: call it with data_key=<session> "
                             "(nntransfer's trainer passes the task key as data_key)")
        return F.elu(self.readout(self.core_forward(x), data_key=data_key) + self.elu_offset) + 1

    def regularizer(self, data_key: str | None = None) -> torch.Tensor:
        """The core's regularizer plus the session's readout's (neuralpredictors' penalties), divided by the
        session's ``penalty_divisors`` entry (``gamma_convention``)."""
        core = sum(self._modules[name].regularizer() for name in self.core_names
                   if callable(getattr(self._modules[name], "regularizer", None)))
        if data_key is None and len(self.readout) == 1:
            data_key = next(iter(self.readout))
        return (core + self.readout.regularizer(data_key)) / self.penalty_divisors.get(data_key, 1.0)


# -- cores ------------------------------------------------------------------------------------------------
@CORES.register("stacked2d")
def stacked2d(channels: int, cfg: NeuralModelConfig) -> nn.Module:
    from ..core import compat  # noqa: F401
    from neuralpredictors.layers.cores import Stacked2dCore

    options = dict(input_channels=channels, hidden_channels=cfg.hidden_channels, input_kern=cfg.input_kern,
                   hidden_kern=cfg.hidden_kern, layers=cfg.layers, gamma_input=cfg.gamma_input,
                   gamma_hidden=cfg.gamma_hidden, laplace_padding=None, input_regularizer="LaplaceL2norm",
                   use_avg_reg=False)
    return _core(Stacked2dCore, "stacked2d", {**options, **cfg.core_options})


@CORES.register("se2d")
def se2d(channels: int, cfg: NeuralModelConfig) -> nn.Module:
    from ..core import compat  # noqa: F401
    from neuralpredictors.layers.cores import SE2dCore

    options = dict(input_channels=channels, hidden_channels=cfg.hidden_channels, input_kern=cfg.input_kern,
                   hidden_kern=cfg.hidden_kern, layers=cfg.layers, gamma_input=cfg.gamma_input,
                   gamma_hidden=cfg.gamma_hidden)
    return _core(SE2dCore, "se2d", {**options, **cfg.core_options})


def _core(cls, name: str, options: dict) -> nn.Module:
    try:
        return cls(**options)
    except TypeError as err:
        raise ConfigError(f"{cls.__name__} (type={name!r}) does not take these options: {err}; "
                          "check core_options") from None


def core_layers(cfg: NeuralModelConfig, image_shape: tuple) -> tuple["OrderedDict[str, nn.Module]", int]:
    """The core's modules by name, and the channels it takes: a registered core, or a cut classifier."""
    if cfg.type in CORES:
        return OrderedDict(core=CORES[cfg.type](image_shape[0], cfg)), image_shape[0]
    try:
        MODELS.get(cfg.type)
    except ConfigError:
        raise ConfigError(f"unknown core {cfg.type!r} in NeuralModelConfig.type: use a neural core "
                          f"({', '.join(CORES.names())}; add one with @CORES.register) or a classification model "
                          f"({', '.join(MODELS.names())}, or an import path) cut at core_layer") from None
    return classifier_core(cfg.type, image_shape, cfg)


def classifier_core(model_type: str, image_shape: tuple, cfg: NeuralModelConfig) -> tuple["OrderedDict", int]:
    """The layers of classification model ``model_type`` up to ``cfg.core_layer`` (names kept) and its input channels."""
    channels, height, width = image_shape
    in_channels = cfg.input_channels or (3 if model_type.startswith("torchvision.") else channels)
    if channels not in (1, in_channels):
        raise ConfigError(f"the images have {channels} channels but the core takes {in_channels}: set "
                          "input_channels to match (1-channel images are repeated)")
    classifier = MODELS.get(model_type)(DataInfo(in_channels, height, width, 10), cfg)
    layer = cfg.core_layer
    if layer is None:
        if not isinstance(getattr(classifier, "core", None), nn.Module):
            raise ConfigError(f"type={model_type!r} needs core_layer, the layer whose output the core returns; "
                              f"layers that give feature maps: {_cut_points(classifier, in_channels, height, width)}")
        layer = "core"
    kept = _cut(classifier, layer, model_type)
    probe = nn.Sequential(OrderedDict(kept))
    with torch.no_grad():
        probe.eval()
        shape = tuple(probe(torch.zeros(1, in_channels, height, width)).shape)
    if len(shape) != 4:
        raise ConfigError(f"core_layer={layer!r} of {model_type} outputs shape {list(shape)}, but a core must give "
                          f"feature maps [B, C, H, W]; cut earlier, e.g. at one of "
                          f"{_cut_points(classifier, in_channels, height, width)}")
    if cfg.core_batchnorm:
        kept["core_norm"] = nn.BatchNorm2d(shape[1])
    return kept, in_channels


def _cut(model: nn.Module, layer: str, model_type: str) -> "OrderedDict[str, nn.Module]":
    """Top-level children up to the one holding ``layer``; Sequentials on the way are cut at it (names kept)."""
    names = dict(model.named_modules())
    if layer not in names or not layer:
        raise ConfigError(f"core_layer={layer!r} is not a layer of {model_type}; layers: "
                          f"{', '.join(n for n in names if n)[:600]}")
    head, _, rest = layer.partition(".")
    kept: OrderedDict = OrderedDict()
    for name, child in model.named_children():
        kept[name] = _cut_inside(child, rest, layer, model_type) if name == head and rest else child
        if name == head:
            return kept
    raise AssertionError("unreachable: layer is a named module")


def _cut_inside(module: nn.Module, rest: str, layer: str, model_type: str) -> nn.Module:
    if not isinstance(module, nn.Sequential):
        raise ConfigError(f"core_layer={layer!r}: {model_type} cannot be cut inside a {type(module).__name__} (its "
                          "forward is not a sequence of layers); cut at that block or between Sequential elements")
    head, _, deeper = rest.partition(".")
    children = list(module.named_children())
    position = [name for name, _ in children].index(head)
    kept = children[:position] + [(head, _cut_inside(children[position][1], deeper, layer, model_type)
                                   if deeper else children[position][1])]
    return nn.Sequential(OrderedDict(kept))


def _cut_points(model: nn.Module, channels: int, height: int, width: int) -> str:
    """``name [C, H, W]`` of the layers a core may end with (top level and inside top-level Sequentials)."""
    candidates = []
    for name, child in model.named_children():
        candidates.append(name)
        if isinstance(child, nn.Sequential):
            candidates += [f"{name}.{sub}" for sub, _ in child.named_children()]
    from .representations import capture

    was_training = model.training
    model.eval()
    with torch.no_grad(), capture(model, candidates) as outputs:
        try:
            model(torch.zeros(1, channels, height, width))
        except RuntimeError:  # too small for the whole classifier (e.g. 5 poolings): the layers before still ran
            pass
        finally:
            model.train(was_training)
    shapes = [(name, list(outputs[name].shape[1:])) for name in candidates
              if name in outputs and torch.is_tensor(outputs[name]) and outputs[name].dim() == 4]
    return ", ".join(f"{name} {shape}" for name, shape in shapes) or "none (the model has no convolutional layers)"


# -- readouts ---------------------------------------------------------------------------------------------
def multi_readout(cfg: NeuralModelConfig, in_shapes: dict, sessions: dict[str, SessionInfo]) -> nn.Module:
    """neuralpredictors' ``MultiReadoutBase`` of FullGaussian2d / FullFactorized2d readouts, one per session.

    Biases start where the prediction equals each neuron's mean training response.
    """
    from ..core import compat  # noqa: F401
    from neuralpredictors.layers import readouts

    if cfg.readout == "gaussian":
        options = dict(init_mu_range=cfg.init_mu_range, init_sigma=cfg.init_sigma,
                       feature_reg_weight=cfg.gamma_readout)
    else:
        options = dict(spatial_and_feature_reg_weight=cfg.gamma_readout)
    base = getattr(readouts, READOUTS[cfg.readout])
    # the readouts take **kwargs and ignore what they do not know: check the names here
    known = sorted(set(inspect.signature(base.__init__).parameters) - {"self", "kwargs", "in_shape", "outdims",
                                                                          "mean_activity"})
    unknown = sorted(set(cfg.readout_options) - set(known))
    if unknown:
        raise ConfigError(f"readout_options {unknown} are not options of {base.__name__}; it takes {known}")
    options = {"bias": True, **options, **cfg.readout_options}
    means = {session: _inverse_output(info.mean_responses, cfg.elu_offset) for session, info in sessions.items()}
    return readouts.MultiReadoutBase(in_shapes, {s: info.n_neurons for s, info in sessions.items()},
                                     base_readout=base, mean_activity_dict=means, **options)


def _inverse_output(mean: np.ndarray, offset: float) -> torch.Tensor:
    """The readout value whose ``ELU(value + offset) + 1`` is ``mean``."""
    target = np.maximum(np.asarray(mean, dtype=np.float64), 1e-3)
    value = np.where(target > 1, target - 1, np.log(target)) - offset
    return torch.as_tensor(value, dtype=torch.float32)


# -- the builder ------------------------------------------------------------------------------------------
def neural_model_builder(dataloaders: dict, seed: int, **config) -> NeuralModel:
    """nnfabrik model function: core + one readout per training session, sized from the data, seeded."""
    config.pop("comment", None)
    cfg = NeuralModelConfig(**config)
    sessions = session_info(dataloaders)
    shapes = {tuple(info.image_shape) for info in sessions.values()}
    if len({shape[0] for shape in shapes}) != 1:
        raise ConfigError(f"the sessions' images differ in channels ({sorted(shapes)}); one core needs one channel "
                          "count")
    image_shape = next(iter(shapes))
    torch.manual_seed(seed)  # the same seed gives the same initial weights
    core, in_channels = core_layers(cfg, image_shape)
    probe = NeuralModel(core, nn.ModuleDict(), in_channels)
    in_shapes = {}
    with torch.no_grad():
        probe.eval()
        for session, info in sessions.items():
            in_shapes[session] = tuple(probe.core_forward(torch.zeros(1, *info.image_shape)).shape[1:])
    model = NeuralModel(core, multi_readout(cfg, in_shapes, sessions), in_channels, cfg.elu_offset,
                        penalty_divisors(cfg.gamma_convention, sessions))
    return model.train()


__all__ = ["CORES", "NeuralModel", "SessionInfo", "classifier_core", "core_layers", "multi_readout", "neural_model_builder",
           "penalty_divisors", "session_info"]
