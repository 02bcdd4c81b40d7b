"""Robustness evaluation: the final model tested under Gaussian noise of given levels, and on corruption test sets.

``TrainerConfig.noise_robustness=[0.0, 0.1, 0.2]`` runs, after the final test, one test pass per level over the test
sets of the training tasks, with noise of that standard deviation in pixel units added to every input and the
result clamped to the valid pixel range (the original nntransfer's noise analysis). The noise is seeded by the run's
seed, the level and the batch, so the same parameters always get the same numbers; level 0 leaves the inputs
untouched (it is the clean test). Test sets read from ``corrupted_test_dir`` are listed with their final test results.
The trainer stores it all as ``output["robustness"]``::

    {"noise_levels": [0.0, 0.1, 0.2],
     "noise": {task: {"0": {"loss": ..., "accuracy": ...}, "0.1": {...}, "0.2": {...}}},
     "corruptions": {test set: {"loss": ..., "accuracy": ...}}}
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .hooks import TEST, Hooks
from .modules.base import MainLoopModule
from .noise import PixelSpace, add_noise, pixel_space

OWNER = "TrainerConfig.noise_robustness"


def level_key(level: float) -> str:
    """How a noise level names its results (``0.1`` -> ``"0.1"``)."""
    return f"{float(level):g}"


def robustness_tasks(trainer) -> dict:
    """The test loaders of the training tasks (extra test sets such as rotations and corruptions are left out)."""
    return {task: loader for task, loader in (trainer.loaders.get("test") or {}).items()
            if task in trainer.loaders.get("train", {})}


def check_noise_robustness(trainer) -> None:
    """ConfigError before training when the robustness evaluation could not run (called by the trainer)."""
    if not robustness_tasks(trainer):
        raise ConfigError(f"{OWNER} needs test sets of the training tasks "
                          f"({sorted(trainer.loaders.get('train', {}))}); the test split has "
                          f"{sorted(trainer.loaders.get('test') or {})}")
    for loader in robustness_tasks(trainer).values():
        pixel_space(loader, OWNER)
    from .modules.noise_augmentation import NoiseAugmentation

    for module in trainer.modules:
        if isinstance(module, NoiseAugmentation) and module.option("in_eval"):
            raise ConfigError(f"{OWNER} tests under its own noise levels, but NoiseAugmentation has in_eval=True and "
                              "would add its noise on top; set in_eval=False, or drop noise_robustness")


class _TestNoise(MainLoopModule):
    """Adds seeded noise of one level (pixel units, clamped) to every test batch; run before the step's modules."""

    name = "noise_robustness"
    level: float = 0.0
    index: int = 0  # of the level, for the seed
    spaces: dict[str, PixelSpace] = {}

    @classmethod
    def at_level(cls, trainer, level: float, index: int, spaces: dict[str, PixelSpace]) -> "_TestNoise":
        module = cls.create(trainer, cls.name)
        module.level, module.index, module.spaces = float(level), index, spaces
        return module

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode != TEST or self.level == 0:  # level 0: the very inputs of the clean test
            return model, inputs
        generator = torch.Generator(device=inputs.device)
        generator.manual_seed((self.seed * 1_000_003 + self.index * 10_007 + self.batch_index) % 2**63)
        std = torch.full((inputs.shape[0],), self.level, device=inputs.device)
        return model, add_noise(inputs, std, self.spaces[task_key], clamp=True, generator=generator)


def noise_robustness(trainer, clean_test: dict) -> dict:
    """Test the trainer's model at every level of ``noise_robustness`` (see the module docstring); ``clean_test`` are
    the final test results, from which the corruption test sets' results are taken."""
    loaders = robustness_tasks(trainer)
    spaces = {task: pixel_space(loader, OWNER) for task, loader in loaders.items()}
    levels = [float(level) for level in trainer.config.noise_robustness]
    noise: dict[str, dict] = {task: {} for task in loaders}
    # the passes run the step's modules (a model wrapper, say); what those log of them is not part of the history
    saved_hooks, saved_tracker = trainer.hooks, trainer.tracker.state_dict()
    try:
        for index, level in enumerate(levels):
            trainer.hooks = Hooks([_TestNoise.at_level(trainer, level, index, spaces), *trainer.modules])
            for task, results in trainer.run_epoch(TEST, loaders, record=False).items():
                noise[task][level_key(level)] = results
    finally:
        trainer.hooks = saved_hooks
        trainer.tracker.load_state_dict(saved_tracker)
    corrupted = [name for name, loader in (trainer.loaders.get("test") or {}).items()
                 if str(getattr(getattr(loader, "dataset", None), "source_split", "")).startswith("corrupted:")]
    return {"noise_levels": levels, "noise": noise,
            "corruptions": {name: dict(clean_test[name]) for name in corrupted if name in clean_test}}


__all__ = ["check_noise_robustness", "level_key", "noise_robustness", "robustness_tasks"]
