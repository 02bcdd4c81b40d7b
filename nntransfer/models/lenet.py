"""LeNet-5 (convolutional core + fully connected classifier), for any input size."""
from torch import nn

from .registry import register_model


class LeNet5(nn.Module):
    """``core`` (two conv/ReLU/max-pool stages) then ``readout`` (three linear layers).

    Representations: ``core`` [B, 16, H/4, W/4] (padding keeps small inputs such as 8×8 digits
    usable), ``readout.1`` [B, 120], ``readout.4`` [B, 84], output [B, classes].
    """

    def __init__(self, channels: int, height: int, width: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.core = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 16 * (height // 4) * (width // 4)
        self.readout = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.ReLU(), nn.Dropout(dropout), nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.readout(self.core(x))


@register_model("lenet")
def lenet(info, cfg):
    return LeNet5(info.channels, info.height, info.width, info.num_classes, cfg.dropout)
