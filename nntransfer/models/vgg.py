"""VGG-11/13/16/19, with or without batch norm, sized for small images."""
import torch
from torch import nn

from .registry import register_model

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """``features`` (conv stages; a max-pool is skipped once the map is 1 pixel wide, so 8×8 inputs
    work), adaptive average pooling to 1×1, and a 512-512-classes ``classifier`` (CIFAR-style VGG).
    """

    def __init__(self, layout, channels, height, width, num_classes, batch_norm, dropout):
        super().__init__()
        layers, size = [], min(height, width)
        for item in layout:
            if item == "M":
                if size > 1:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU(inplace=True))
            channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _builder(layout, batch_norm):
    def build(info, cfg):
        return VGG(layout, info.channels, info.height, info.width, info.num_classes, batch_norm, cfg.dropout)

    return build


for _name, _layout in CONFIGS.items():
    register_model(_name)(_builder(_layout, batch_norm=False))
    register_model(f"{_name}_bn")(_builder(_layout, batch_norm=True))
