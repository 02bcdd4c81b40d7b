"""Multi-layer perceptron on flattened images."""
from torch import nn

from .registry import register_model


@register_model("mlp")
def mlp(info, cfg):
    """``layers.<i>``: Linear/ReLU/Dropout blocks of ``hidden_sizes``, then the classifier."""
    sizes = [info.channels * info.height * info.width, *cfg.hidden_sizes]
    layers = [nn.Flatten()]
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(cfg.dropout)]
    layers.append(nn.Linear(sizes[-1], info.num_classes))
    return nn.Sequential(*layers)
