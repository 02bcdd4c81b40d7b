"""What configs can name: one registry per kind, with the built-in names and the module that implements each.

A built-in is one file plus one line here (its name and module); the file registers the object with the
registry's decorator (``@register_model("lenet")``). Knowing the names here, without importing the modules,
lets ``status`` and the checks of a recipe run without torch; ``Registry.get`` imports a module on first use.
"""
from __future__ import annotations

from ..core.registry import Registry

_RESNETS = ("resnet18", "resnet26", "resnet34", "resnet50", "resnet101", "resnet152")
_VGGS = ("vgg11", "vgg13", "vgg16", "vgg19")

MODELS = Registry(
    "model type", "ModelConfig.type",
    builtins={
        "lenet": "nntransfer.models.lenet",
        "mlp": "nntransfer.models.mlp",
        **{name: "nntransfer.models.resnet" for name in _RESNETS},
        **{name: "nntransfer.models.vgg" for name in _VGGS},
        **{f"{name}_bn": "nntransfer.models.vgg" for name in _VGGS},
    },
    families={"torchvision.": "nntransfer.models.torchvision_models"},
    how="Add one with @register_model('name') (see docs/datasets_and_models.md).")

SOURCES = Registry(
    "dataset", "ImageDatasetConfig.dataset_cls",
    builtins={name: "nntransfer.dataset.sources"
              for name in ("digits", "MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN", "ImageFolder")},
    how="Add one with @register_source('Name') (see docs/datasets_and_models.md).")

CORES = Registry(
    "core", "NeuralModelConfig.type",
    builtins={"stacked2d": "nntransfer.models.neural", "se2d": "nntransfer.models.neural"},
    how="Add one with @CORES.register('name') (see docs/neural.md).")

LOSSES = Registry(
    "loss", "TrainerConfig.loss_functions",
    builtins={name: "nntransfer.trainer.losses"
              for name in ("SoftTargetCrossEntropy", "Distillation", "PoissonLoss", "AnscombeMSE")},
    open_fallback_text="any torch.nn loss class name (CrossEntropyLoss, MSELoss, ...)",
    how="Register one with @register_loss('Name') (see docs/trainer.md).")

METRICS = Registry(
    "metric", "TrainerConfig.metrics",
    builtins={"accuracy": "nntransfer.trainer.metrics", "correlation": "nntransfer.trainer.metrics"},
    how="Register one with @register_metric('name') (see docs/trainer.md).")

MODULES = Registry(
    "main-loop module", "TrainerConfig.main_loop_modules",
    builtins={
        "EWC": "nntransfer.trainer.modules.ewc",
        "KnowledgeDistillation": "nntransfer.trainer.modules.knowledge_distillation",
        "L2SP": "nntransfer.trainer.modules.l2sp",
        "LotteryTicket": "nntransfer.trainer.modules.lottery_ticket",
        "Mixup": "nntransfer.trainer.modules.mixup",
        "ModelWrapper": "nntransfer.trainer.modules.model_wrapper",
        "NoiseAdversarial": "nntransfer.trainer.modules.noise_adversarial",
        "NoiseAugmentation": "nntransfer.trainer.modules.noise_augmentation",
        "RandomReadoutReset": "nntransfer.trainer.modules.random_readout_reset",
        "RDL": "nntransfer.trainer.modules.rdl",
        "RepresentationMatching": "nntransfer.trainer.modules.representation_matching",
        "RepresentationMonitor": "nntransfer.trainer.modules.representation_monitor",
        "SI": "nntransfer.trainer.modules.si",
    },
    how="Register one with @register_module('Name') (see docs/trainer.md).")

#: every registry by plural name (``nntransfer list``)
REGISTRIES = {"models": MODELS, "sources": SOURCES, "losses": LOSSES, "metrics": METRICS, "modules": MODULES,
              "cores": CORES}

__all__ = ["CORES", "LOSSES", "METRICS", "MODELS", "MODULES", "REGISTRIES", "SOURCES"]
