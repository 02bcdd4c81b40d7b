"""Mixup (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018) and CutMix (Yun et al., ICCV 2019): training on convex
combinations of pairs of examples, with the loss on the correspondingly mixed targets."""
from __future__ import annotations

import torch

from ...errors import ConfigError
from .base import MainLoopModule, Option, register_module


@register_module("Mixup")
class Mixup(MainLoopModule):
    """Each training batch is mixed with a shuffled copy of itself: ``x = lam * x + (1 - lam) * x[perm]``, and its
    loss is ``lam * loss(outputs, y) + (1 - lam) * loss(outputs, y[perm])`` with ``lam ~ Beta(alpha, alpha)``, one
    draw per batch. With ``cutmix``, a box of the image (area ``1 - lam``) is pasted from the partner instead, and
    ``lam`` is the share of the image that stayed.

    Options (``module_options["Mixup"]``): ``alpha`` (> 0, default 0.2), ``cutmix`` (default False), ``probability``
    (of mixing a batch, default 1.0). Draws come from torch's global RNG, which the trainer seeds per epoch and
    checkpoints: a resumed run mixes the same way. Validation and test are not mixed; training metrics (accuracy)
    compare the outputs with the first targets ``y``.
    """

    options_declared = {
        "alpha": Option(0.2, float, "concentration of the Beta(alpha, alpha) distribution of lam"),
        "cutmix": Option(False, bool, "paste a box from the partner image instead of blending (CutMix)"),
        "probability": Option(1.0, float, "probability of mixing a training batch"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if not options["alpha"] > 0:
            raise ConfigError(f"module_options[{key!r}]['alpha'] must be > 0, got {options['alpha']}")
        if not 0 <= options["probability"] <= 1:
            raise ConfigError(f"module_options[{key!r}]['probability'] must be in [0, 1], got {options['probability']}")

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode != "Training":
            return model, inputs
        # every draw on the CPU generator, also on a GPU: the same numbers on any device
        if self.option("probability") < 1 and float(torch.rand(())) >= self.option("probability"):
            return model, inputs
        alpha = self.option("alpha")
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = torch.randperm(inputs.shape[0]).to(inputs.device)
        if self.option("cutmix"):
            if inputs.dim() != 4:
                raise ConfigError(f"{self.name} with cutmix=True pastes boxes of images [B, C, H, W]; the inputs have "
                                  f"shape {tuple(inputs.shape)}")
            mixed, lam = cut_and_paste(inputs, partner, lam)
        else:
            mixed = lam * inputs + (1 - lam) * inputs[partner]
        shared_memory["mixup"] = (lam, partner)
        return model, mixed

    def post_forward(self, outputs, loss, targets, **shared_memory):
        mixing = self.shared_memory.get("mixup") if self.mode == "Training" else None
        if mixing is not None:
            lam, partner = mixing
            earlier = self.shared_memory.get("task_targets") or [(1.0, targets)]
            self.shared_memory["task_targets"] = [pair for weight, y in earlier
                                                  for pair in ((weight * lam, y), (weight * (1 - lam), y[partner]))]
        return outputs, loss, targets


def cut_and_paste(inputs: torch.Tensor, partner: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """CutMix: a box of area about ``(1 - lam) * H * W``, centred uniformly at random (clipped at the borders), taken
    from ``inputs[partner]``; returns the images and the share of each image that stayed."""
    height, width = inputs.shape[-2:]
    cut = (1 - lam) ** 0.5
    box_h, box_w = int(height * cut), int(width * cut)
    centre_y, centre_x = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(centre_y - box_h // 2, 0), min(centre_y + box_h - box_h // 2, height)
    left, right = max(centre_x - box_w // 2, 0), min(centre_x + box_w - box_w // 2, width)
    mixed = inputs.clone()
    mixed[..., top:bottom, left:right] = inputs[partner][..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)
