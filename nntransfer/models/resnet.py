"""ResNet-18/26/34/50/101/152 (torchvision's blocks), with a small-image stem option."""
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .registry import register_model

DEPTHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet26": (Bottleneck, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


class ClassificationResNet(ResNet):
    """torchvision's ResNet; ``cifar_stem`` swaps the 7×7/stride-2 stem and max-pool for a 3×3/stride-1
    conv (the usual choice for 32×32 images). Adaptive average pooling makes any input size work.
    Representations: ``layer1``…``layer4`` [B, C, H', W'], ``avgpool`` [B, C, 1, 1], ``fc`` [B, classes].
    """

    def __init__(self, block, layers, channels, num_classes, cifar_stem, dropout):
        super().__init__(block, layers, num_classes=num_classes)
        if cifar_stem:
            self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif channels != 3:
            self.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        if dropout:
            self.fc = nn.Sequential(nn.Dropout(dropout), self.fc)


def _builder(name):
    block, layers = DEPTHS[name]

    def build(info, cfg):
        return ClassificationResNet(block, layers, info.channels, info.num_classes, cfg.cifar_stem, cfg.dropout)

    return build


for _name in DEPTHS:
    register_model(_name)(_builder(_name))
