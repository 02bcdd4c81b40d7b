"""Trainer configs. The trainer lives in ``nntransfer.trainer``."""
from __future__ import annotations

from .base import BaseConfig, field


class TrainerConfig(BaseConfig):
    """Optimisation, schedule, early stopping, checkpoints, main-loop modules (DESIGN §5)."""

    config_name = "trainer"
    fn = "nntransfer.trainer.trainer"

    max_iter: int = field(default=10, help="epochs to train")
    optimizer: str = "Adam"
    optimizer_options: dict = {"lr": 0.001}
    loss_functions: dict[str, str] = field(default={"img_classification": "CrossEntropyLoss"}, help="task key -> loss name")
    patience: int = 5
    main_loop_modules: list[str] = []
    data_transfer: bool = False
