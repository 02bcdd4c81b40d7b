"""Trainer configs. The trainer lives in ``nntransfer.trainer``."""
from __future__ import annotations

from typing import Literal, Optional

from ..core.config import BaseConfig, field
from ..errors import ConfigError
from .registries import LOSSES, METRICS, MODULES

# torch.compile's modes (kept here so that building a config never imports torch)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TrainerConfig(BaseConfig):
    """Optimisation, schedule, early stopping, checkpoints, main-loop modules (see docs/trainer.md)."""

    config_name = "trainer"
    fn = "nntransfer.trainer.trainer"

    # duration
    max_iter: int = field(default=10, help="epochs to train (epoch-based training)")
    max_steps: Optional[int] = field(default=None, help="optimizer steps to train (iteration-based); overrides max_iter")
    # optimisation
    optimizer: str = field(default="Adam", help="torch.optim class name")
    optimizer_options: dict = field(default={"lr": 0.001}, help="keyword arguments of the optimizer")
    loss_functions: dict[str, str] = field(
        default={"img_classification": "CrossEntropyLoss"},
        help="task key -> loss name (torch.nn class or registered); a single entry applies to every task",
    )
    loss_options: dict = field(default={}, since="0.2",
                               help="loss name -> its keyword arguments, e.g. {'Distillation': {'temperature': 4}}")
    accumulate_gradients: int = field(default=1, help="optimizer step every n batches")
    max_grad_norm: Optional[float] = field(
        default=None, since="0.2",
        help="clip the gradient norm to this value once per optimizer step (unscaled, fully accumulated gradients)")
    amp: bool = field(default=False, help="old name of precision='fp16' (CUDA only; ignored on CPU)")
    precision: Literal["32", "fp16", "bf16"] = field(
        default="32", since="0.2", help="'32', 'fp16' (autocast + GradScaler) or 'bf16' (autocast), on any device")
    channels_last: bool = field(default=False, since="0.2", help="model and 4-d inputs in channels-last memory format")
    compile: bool | str = field(
        default=False, since="0.2",
        help="torch.compile the model: True or a mode (" + ", ".join(COMPILE_MODES) + ")")
    deterministic: bool = field(
        default=False, since="0.2",
        help="deterministic algorithms (cuDNN, cuBLAS) and a fixed CPU thread count: results independent of workers")
    num_threads: Optional[int] = field(
        default=None, since="0.2",
        help="intra-op CPU threads while training (None: as set by the worker; deterministic=True makes it 1)")
    force_cpu: bool = False
    # schedule
    lr_schedule: Optional[Literal["milestones", "plateau"]] = field(
        default=None, help="milestones: decay at fixed epochs; plateau: decay when validation stops improving")
    milestones: list[int] = field(default=[], help="epochs at which the LR is multiplied by lr_decay_factor")
    milestone_steps: list[int] = field(
        default=[], since="0.2", help="optimizer steps at which the LR is multiplied by lr_decay_factor")
    lr_decay_factor: float = 0.1
    lr_decay_steps: int = field(default=1, help="plateau: patience runs out this many times (LR decays in between)")
    warmup_epochs: int = field(default=0, help="linear LR warm-up over this many epochs")
    warmup_steps: int = field(default=0, since="0.2", help="linear LR warm-up over this many optimizer steps")
    # evaluation and early stopping
    stop_metric: str = field(default="accuracy", help="'loss' or a metric in `metrics`: early stopping, best epoch, score")
    metrics: list[str] = field(default=["accuracy"], since="0.2",
                               help="metrics tracked per task where they apply (registered names or import paths)")
    patience: int = field(default=5, help="non-improving evaluations before stopping (or decaying the LR)")
    threshold: float = field(default=1e-4, help="minimal improvement that counts")
    interval: int = field(default=1, help="evaluate on the validation set every n epochs")
    eval_every_steps: Optional[int] = field(
        default=None, since="0.2", help="evaluate every n optimizer steps instead of every `interval` epochs")
    early_stopping: bool = True
    restore_best: bool = field(default=True, help="end with the parameters of the best evaluation")
    # checkpoints
    save_every_n: int = field(default=1, key=False, help="checkpoint every n epochs (0: never)")
    save_every_steps: Optional[int] = field(default=None, key=False, help="also checkpoint every n optimizer steps")
    keep_last_n: int = field(default=1, key=False, help="keep the newest n checkpoints")
    keep_best_n: int = field(default=1, key=False, help="also keep the n checkpoints with the best validation score")
    # parameters
    freeze: list[str] = field(default=[], help="glob patterns of parameter names to keep fixed, e.g. 'conv*'")
    reset: list[str] = field(default=[], help="glob patterns of module names to re-initialise before training")
    batchnorm_mode: Literal["train", "eval", "frozen"] = field(
        default="train", help="train: batch statistics, running statistics updated (also in frozen layers); eval: "
                              "running statistics, never updated (every batch norm, new ones too); frozen: eval for "
                              "batch norms whose parameters are all frozen, train for the others")
    dropout_mode: Literal["train", "eval"] = field(default="train", help="eval: no dropout while training")
    # modules and transfer
    main_loop_modules: list[str] = field(default=[], help="module names (built-in) or import paths")
    module_options: dict = field(default={}, help="entry of main_loop_modules -> that module's options")
    data_transfer: bool = field(default=False, help="hand this step's logits per example (and what its modules produce "
                                                    "per parameter, e.g. EWC's Fisher) to later steps")
    transfer_layers: list[str] = field(
        default=[], since="0.3",
        help="with data_transfer: also hand over these layers' outputs per example (flattened, named by layer), "
             "e.g. for RDL with source='transfer_data'")
    transfer_strict: bool = field(default=True, help="parameter transfer needs identical names and shapes")
    transfer_parameters: bool = field(
        default=True, since="0.2",
        help="a transfer step starts from the previous step's parameters (False: fresh initialisation, e.g. a "
             "student of another architecture distilling the previous step's logits)")
    # evaluation of the final model
    noise_robustness: list[float] = field(
        default=[], since="0.3",
        help="Gaussian noise std levels (pixel units, clamped to the valid range) at which the final model is also "
             "tested, e.g. [0.0, 0.1, 0.2, 0.3, 0.5]: output['robustness'], results_frame's noise/... columns")
    # output
    verbose: bool = field(default=True, key=False, help="progress bars")
    track_iterations: bool = field(default=False, key=False, help="also record the loss of every batch")
    tensorboard: bool = field(default=False, key=False,
                              help="write TensorBoard scalars to $NNTRANSFER_HOME/runs/keys/<key hash> (see docs)")

    def __post_init__(self) -> None:
        for name in ("max_iter", "patience", "interval", "accumulate_gradients", "lr_decay_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainerConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every_steps", "save_every_steps", "num_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"TrainerConfig.{name} must be at least 1 (or None), got {getattr(self, name)}")
        if self.transfer_layers and not self.data_transfer:
            raise ConfigError("TrainerConfig.transfer_layers names layers whose outputs data_transfer hands over; "
                              "set data_transfer=True too")
        if any(level < 0 for level in self.noise_robustness):
            raise ConfigError(f"TrainerConfig.noise_robustness levels are noise standard deviations (pixel units), "
                              f"so >= 0; got {self.noise_robustness}")
        for name in ("warmup_epochs", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.stop_metric != "loss" and self.stop_metric not in self.metrics:
            raise ConfigError(f"TrainerConfig.stop_metric={self.stop_metric!r} must be 'loss' or one of metrics "
                              f"{self.metrics}")
        if "lr" not in self.optimizer_options:
            raise ConfigError("TrainerConfig.optimizer_options needs an 'lr'")
        unused = sorted(set(self.loss_options) - set(self.loss_functions.values()))
        if unused:
            raise ConfigError(f"TrainerConfig.loss_options has options for {unused}, which loss_functions does not "
                              f"use (it uses {sorted(set(self.loss_functions.values()))})")
        for name, options in self.loss_options.items():
            if not isinstance(options, dict):
                raise ConfigError(f"TrainerConfig.loss_options[{name!r}] must be a dict of keyword arguments, "
                                  f"got {options!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"TrainerConfig.max_grad_norm must be positive (or None), got {self.max_grad_norm}")
        if self.amp and self.precision == "bf16":
            raise ConfigError("TrainerConfig.amp=True means precision='fp16' but precision='bf16' is set; "
                              "drop amp (it is the old name of precision='fp16')")
        if isinstance(self.compile, str) and self.compile not in COMPILE_MODES:
            raise ConfigError(f"TrainerConfig.compile must be True, False or a torch.compile mode "
                              f"{list(COMPILE_MODES)}, got {self.compile!r}")
        if self.warmup_epochs and self.warmup_steps:
            raise ConfigError("TrainerConfig.warmup_epochs and warmup_steps are both set; use one of them")
        if self.milestones and self.milestone_steps:
            raise ConfigError("TrainerConfig.milestones (epochs) and milestone_steps are both set; use one of them")
        if self.milestone_steps and self.lr_schedule != "milestones":
            raise ConfigError("TrainerConfig.milestone_steps needs lr_schedule='milestones'")
        if self.eval_every_steps is not None and self.interval != 1:
            raise ConfigError("TrainerConfig.interval (epochs) and eval_every_steps are both set; use one of them")
        self._check_module_options_keys()

    def _check_names(self) -> None:
        for name in self.loss_functions.values():
            LOSSES.check_name(name)
        for name in self.metrics:
            METRICS.check_name(name)
        for name in self.main_loop_modules:
            MODULES.check_name(name)

    def _check_module_options_keys(self) -> None:
        """Options must belong to an entry of main_loop_modules (or, for an import path, its class name)."""
        known = set(self.main_loop_modules)
        known |= {entry.replace(":", ".").rsplit(".", 1)[-1] for entry in self.main_loop_modules
                  if ":" in entry or "." in entry}
        for key, options in self.module_options.items():
            if key not in known:
                raise ConfigError(
                    f"TrainerConfig.module_options has options for {key!r}, which is not in main_loop_modules "
                    f"{self.main_loop_modules}: add {key!r} to main_loop_modules, or fix the name (options are "
                    "keyed by the entry in main_loop_modules)")
            if not isinstance(options, dict):
                raise ConfigError(f"TrainerConfig.module_options[{key!r}] must be a dict of options, got {options!r}")
