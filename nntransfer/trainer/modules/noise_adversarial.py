"""NoiseAdversarial: a representation made invariant to the input's noise level by a noise-level discriminator
behind a gradient reversal layer (domain-adversarial training, Ganin & Lempitsky, ICML 2015)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...models.representations import capture, layer_names
from .base import CapturingModule, Option, PassTerms, register_module


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.scale * grad_output, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, its gradient times ``-scale`` (Ganin & Lempitsky's gradient reversal layer)."""
    return GradientReversal.apply(x, scale)


@register_module("NoiseAdversarial")
class NoiseAdversarial(CapturingModule):
    """A discriminator reads the representation at ``layer`` through a gradient reversal layer and predicts each
    sample's noise level (``shared_memory["noise_std"]``, from NoiseAugmentation, which must come first in
    ``main_loop_modules``). The discriminator learns to tell the levels apart; the reversed gradient drives the
    layers up to ``layer`` to make them indistinguishable. Added to each training batch's loss: ``weight *
    discriminator loss`` (the model's layers get ``-reversal * weight`` times its gradient).

    Options (``module_options["NoiseAdversarial"]``):

    * ``layer`` (required): the representation (``model.named_modules()`` name);
    * ``levels``: the noise levels as classes (each sample's level goes to the nearest; cross-entropy), or None
      (default: regression of the level, mean squared error);
    * ``hidden``: units of the discriminator's hidden layer (default 64; 0: a linear discriminator);
    * ``weight`` (default 1.0), ``reversal`` (the reversal's scale lambda, default 1.0);
    * ``schedule``: ``"constant"`` (default) or ``"ganin"``: ``lambda_p = reversal * (2 / (1 + exp(-10 p)) - 1)``
      with ``p`` the share of the training done (optimizer steps over the planned total), which starts the
      reversal at 0 while the discriminator is still untrained.

    The discriminator is trained with the model (a parameter group of the trainer's optimizer) and kept in the
    module's state; it is not part of the model. Its loss per training pass is logged as ``noise_adversarial``
    (and its accuracy as ``noise_discriminator_accuracy`` with ``levels``).
    """

    options_declared = {
        "layer": Option(types=str, help="the representation to make invariant to the noise level"),
        "levels": Option(None, (list, type(None)), "noise levels as classes (None: regress the level)"),
        "hidden": Option(64, int, "hidden units of the discriminator (0: linear)"),
        "weight": Option(1.0, float, "factor of the discriminator loss"),
        "reversal": Option(1.0, float, "scale of the reversed gradient (lambda)"),
        "schedule": Option("constant", str, "'constant' or 'ganin' (the reversal grows from 0)",
                        choices=("constant", "ganin")),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if options["levels"] is not None and len(options["levels"]) < 2:
            raise ConfigError(f"module_options[{key!r}]['levels'] needs at least two noise levels to tell apart")
        if options["hidden"] < 0:
            raise ConfigError(f"module_options[{key!r}]['hidden'] must be >= 0, got {options['hidden']}")

    def __init__(self, trainer):
        super().__init__(trainer)
        layer = self.option("layer")
        if layer not in layer_names(self.model):
            raise ConfigError(f"{self.name}: the model has no layer {layer!r}; its layers: "
                              f"{', '.join(layer_names(self.model)[:30])}")
        levels = self.option("levels")
        self.levels = None if levels is None else torch.tensor([float(v) for v in levels], device=self.device)
        size = self._representation_size()
        outputs = 1 if levels is None else len(levels)
        hidden = self.option("hidden")
        # its own seed: the discriminator's initialisation leaves the model's RNG stream as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.discriminator = (nn.Linear(size, outputs) if not hidden else
                                  nn.Sequential(nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, outputs)))
        self.discriminator.to(self.device)
        trainer.add_trainable(self.discriminator.parameters())
        self.terms, self.accuracies = PassTerms(), PassTerms()

    def _representation_size(self) -> int:
        """Features of the representation, from one example of the training data (in eval mode: no statistics move)."""
        loader = next(iter(self.train_loader.values()), None)
        if loader is None:
            raise ConfigError(f"{self.name} sizes its discriminator from the training data, and there is none")
        dataset = getattr(loader, "dataset", None)
        example = dataset[0][0] if dataset is not None and len(dataset) else next(iter(loader))[0][:1][0]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), capture(self.model, [self.option("layer")]) as reps:
                self.model(example.unsqueeze(0).to(self.device))
        finally:
            self.model.train(was_training)
        return int(reps[self.option("layer")][0].numel())

    def reversal_scale(self) -> float:
        scale = self.option("reversal")
        if self.option("schedule") == "ganin":
            config = self.config
            total = config.max_steps or max(config.max_iter * sum(len(loader) for loader in self.train_loader.values())
                                            // max(config.accumulate_gradients, 1), 1)
            progress = min(self.trainer.progress.steps / total, 1.0)
            scale *= 2 / (1 + math.exp(-10 * progress)) - 1
        return scale

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self.discriminator.train()
            self.terms, self.accuracies = PassTerms(), PassTerms()

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training":
            self.start_capture([self.option("layer")])
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        reps = self.end_capture()
        if reps is None:
            return outputs, loss, targets
        noise = self.shared_memory.get("noise_std")
        if noise is None:
            raise ConfigError(f"{self.name} predicts each sample's noise level, which NoiseAugmentation leaves in "
                              "shared_memory['noise_std']: put NoiseAugmentation before it in main_loop_modules")
        representation = reps[self.option("layer")]
        n = noise.shape[0]  # modules that add samples after NoiseAugmentation (e.g. RepresentationMatching) come later
        features = reverse_gradient(representation[:n].flatten(1).float(), self.reversal_scale())
        prediction = self.discriminator(features)
        if self.levels is None:
            term = F.mse_loss(prediction.squeeze(1), noise.float())
        else:
            classes = (noise.float()[:, None] - self.levels[None, :]).abs().argmin(dim=1)
            term = F.cross_entropy(prediction, classes)
            self.accuracies.add(self.task_key, (prediction.argmax(dim=1) == classes).float().mean())
        self.terms.add(self.task_key, term)
        return outputs, loss + self.option("weight") * term, targets

    def post_epoch(self, model):
        if self.mode == "Training":
            self.terms.log(self, "noise_adversarial")
            self.accuracies.log(self, "noise_discriminator_accuracy")

    def state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "terms": self.terms.state_dict(),
                "accuracies": self.accuracies.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.terms.load_state_dict(state["terms"])
        self.accuracies.load_state_dict(state["accuracies"])
