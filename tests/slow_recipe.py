"""The slow recipe of the tests that stop, kill, requeue or search while an experiment trains.

Its main-loop module ``SlowEpochs`` appends ``seed epoch slurm-job requeues`` to ``$EPOCH_LOG`` for every training
epoch it starts and sleeps ``$SLOW_SLEEP`` seconds (default: the recipe's ``sleep``) after each. The recipe also
registers a loss of its own, so a worker (a Slurm job, a search's worker) must import the recipe to train it.
"""
from __future__ import annotations

from pathlib import Path

RECIPE = """
import os, time
import torch
from nntransfer import Description, Experiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.trainer import MainLoopModule, register_loss, register_module

@register_loss("recipe_loss")
class RecipeLoss(torch.nn.CrossEntropyLoss):
    pass

@register_module("SlowEpochs")
class SlowEpochs(MainLoopModule):
    def pre_epoch(self, model, mode, **options):
        super().pre_epoch(model, mode, **options)
        if mode == "Training" and os.environ.get("EPOCH_LOG"):
            with open(os.environ["EPOCH_LOG"], "a") as log:
                log.write(f"{{self.seed}} {{self.epoch}} {{os.environ.get('SLURM_JOB_ID', '-')}} "
                          f"{{os.environ.get('SLURM_RESTART_COUNT', '0')}}\\n")

    def post_epoch(self, model):
        if self.mode == "Training":
            time.sleep(float(os.environ.get("SLOW_SLEEP", {sleep!r})))

experiments = {{
    Description("slow", seed): Experiment(
        ImageDatasetConfig(dataset_cls="digits", **{dataset!r}), ModelConfig(type={model!r}),
        TrainerConfig(max_iter={epochs}, verbose=False, main_loop_modules=["SlowEpochs"],
                      loss_functions={{"img_classification": "recipe_loss"}}, **{trainer!r}), seed)
    for seed in {seeds!r}
}}
"""


def write_slow_recipe(folder: Path, *, epochs: int, sleep: float = 0.0, seeds: tuple[int, ...] = (4,),
                      model: str = "mlp", dataset: dict | None = None, trainer: dict | None = None) -> Path:
    """``folder/slow_recipe.py``: one experiment ``slow`` per seed, ``epochs`` epochs of ``sleep`` seconds and more;
    ``dataset`` and ``trainer``: further config fields (batch size 128 unless given)."""
    recipe = Path(folder) / "slow_recipe.py"
    recipe.write_text(RECIPE.format(epochs=epochs, sleep=str(sleep), seeds=tuple(seeds), model=model,
                                    dataset={"batch_size": 128, **(dataset or {})}, trainer=trainer or {}))
    return recipe


def logged_runs(log: Path) -> dict[int, list[tuple[int, str, int]]]:
    """``{seed: [(epoch, Slurm job or "-", requeues before this run), ...]}`` in the order the epochs started."""
    runs: dict[int, list[tuple[int, str, int]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        seed, epoch, job, restarts = line.split()
        runs.setdefault(int(seed), []).append((int(epoch), job, int(restarts)))
    return runs


def logged_epochs(log: Path) -> list[int]:
    """Every training epoch started, in order, of a recipe with one seed."""
    runs = logged_runs(log)
    assert len(runs) <= 1, f"epochs of several seeds logged: {sorted(runs)}"
    return [epoch for runs_of_seed in runs.values() for epoch, _, _ in runs_of_seed]
