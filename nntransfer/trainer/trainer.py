"""The trainer: an epoch loop with main-loop module hooks, early stopping and exact resume."""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import random
import re
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..configs.errors import ConfigError
from ..configs.trainer import TrainerConfig
from .checkpointing import CheckpointStore, rng_state, set_rng_state
from .interrupt import TrainingInterrupted, stop_reason, stop_requested
from .modules import CancelBatch, CancelEpoch, MainLoopModule, module_class
from .losses import make_loss
from .metrics import METRICS
from .optim import EarlyStopping, make_optimizer, scheduled_lr
from .tracking import Tracker

logger = logging.getLogger("nntransfer.trainer")

TRAIN, VALIDATION, TEST = "Training", "Validation", "Test"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def trainer(model: nn.Module, dataloaders: dict, seed: int, uid=None, cb: Callable | None = None, *,
            checkpoints: CheckpointStore | None = None, **config) -> tuple[float, dict, dict]:
    """nnfabrik trainer function: train ``model`` and return ``(score, output, model_state)``.

    ``score`` is the validation ``stop_metric`` of the final (by default best, restored) parameters;
    ``output`` holds the tracker history and the final validation and test results.
    """
    config.pop("comment", None)
    unknown = sorted(set(config) - set(TrainerConfig.fields()))
    if unknown:
        raise ConfigError(
            f"nntransfer.trainer.trainer got config fields it does not know: {unknown}. A TrainerConfig subclass "
            "with its own fields needs its own fn, e.g. one that calls "
            "Trainer(model, dataloaders, seed, MyTrainerConfig(**config), checkpoints=checkpoints, cb=cb).train(); "
            "options of main-loop modules belong in module_options"
        )
    cfg = TrainerConfig(**config)
    return Trainer(model, dataloaders, seed, cfg, checkpoints=checkpoints, cb=cb).train()


class Trainer:
    def __init__(self, model: nn.Module, dataloaders: dict, seed: int, config: TrainerConfig,
                 checkpoints: CheckpointStore | None = None, cb: Callable | None = None):
        self.config, self.seed, self.checkpoints, self.cb = config, seed, checkpoints, cb
        self.device = torch.device("cuda" if torch.cuda.is_available() and not config.force_cpu else "cpu")
        self.amp = config.amp and self.device.type == "cuda"
        self.model = model.to(self.device)
        self.loaders = dataloaders
        self.tracker = Tracker()
        self.epoch = 0
        self.steps = 0
        self._pending = 0  # backward passes since the last optimizer step (gradient accumulation)
        self.stopped = False  # early stopping decided (kept in checkpoints: a resumed run does not go on)
        self.last_score = -float("inf")  # latest validation score (higher is better), saved with checkpoints
        tasks = dict.fromkeys(task for split in dataloaders.values() for task in split)
        self.losses = {task: make_loss(self._loss_name(task)) for task in tasks}
        self._loss_takes_extra = {task: getattr(loss, "uses_extra", False) for task, loss in self.losses.items()}
        self.metric_classes = {name: METRICS.get(name) for name in config.metrics}
        self._stop_sign = -1.0 if config.stop_metric == "loss" or not METRICS.get(config.stop_metric).higher_is_better \
            else 1.0
        self._reset_and_freeze()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"freeze patterns {list(config.freeze)} leave no trainable parameter")
        self.optimizer = make_optimizer(config.optimizer, params, dict(config.optimizer_options))
        self.base_lr = config.optimizer_options["lr"]
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        decays = config.lr_decay_steps - 1 if config.lr_schedule == "plateau" else 0
        self.stopper = EarlyStopping(config.patience, config.threshold, decays)
        self.modules: list[MainLoopModule] = [module_class(name).create(self, name) for name in config.main_loop_modules]
        # per-batch hooks only of the modules that override them (the base class's are no-ops)
        self._hooks = {hook: [getattr(m, hook) for m in self.modules
                              if getattr(type(m), hook) is not getattr(MainLoopModule, hook)]
                       for hook in ("pre_forward", "post_forward", "post_backward", "post_optimizer")}

    # -- the main loop ----------------------------------------------------------------------------
    def train(self) -> tuple[float, dict, dict]:
        cfg = self.config
        self._resume()
        epochs = tqdm(total=cfg.max_iter, initial=self.epoch, desc="epochs", disable=not cfg.verbose, leave=False)
        while not self.stopped and self.epoch < cfg.max_iter and not self._budget_spent():
            self.epoch += 1
            self._seed_epoch()
            self._set_lr()
            self.run_epoch(TRAIN, self.loaders["train"])
            if self.epoch % cfg.interval == 0 or self.epoch == cfg.max_iter or self._budget_spent():
                self.last_score = self.evaluate(VALIDATION)
                decision = self.stopper.update(self.last_score, self.epoch, self.model)
                if decision == "decay":
                    self.stopper.restore(self.model)
                    logger.info("epoch %d: patience ran out, restoring best and decaying the LR", self.epoch)
                self.stopped = cfg.early_stopping and decision == "stop"
            self._log_epoch(epochs)
            self._checkpoint()
            if stop_requested():  # provisional, at the epoch's end; the trainer's per-batch check replaces it
                if self.checkpoints is not None and cfg.save_every_n and self.epoch % cfg.save_every_n:
                    self.checkpoints.save(self.epoch, self.last_score, self.state_dict())
                raise TrainingInterrupted(stop_reason())
            if self.cb is not None:
                self.cb()
        epochs.close()
        if cfg.restore_best:
            self.stopper.restore(self.model)
        return self._finish()

    def run_epoch(self, mode: str, loaders: dict) -> None:
        """One pass over ``loaders`` in ``mode``, calling every module hook."""
        training = mode == TRAIN
        self._set_modes(training)
        for module in self.modules:
            module.mode, module.epoch = mode, self.epoch  # also for modules whose pre_epoch skips super()
            module.pre_epoch(self.model, mode, epoch=self.epoch)
        # per task: per-batch loss tensors, batch sizes and metric accumulators, reduced once at the end of the
        # pass (no per-batch synchronisation)
        totals = {task: ([], [], None) for task in loaders}
        batch_losses, batch_indices = [], []
        n_batches = _total_batches(loaders, cycle=training)
        batches = tqdm(self._batches(loaders, cycle=training), total=n_batches, leave=False,
                       desc=f"{mode} {self.epoch}", disable=not self.config.verbose)
        with torch.set_grad_enabled(training):
            try:
                for index, (task, batch) in enumerate(batches):
                    try:
                        loss = self._step(mode, task, batch, index, totals)
                    except CancelBatch:
                        continue
                    batch_losses.append(loss)
                    batch_indices.append(index)
                    if training and self._budget_spent():
                        break
            except CancelEpoch:
                pass
        batches.close()
        self._check_finite(mode, batch_losses, batch_indices)
        if training and self._pending:  # gradients accumulated over the epoch's last batches: use them now
            self._optimizer_step()
        for module in self.modules:
            module.post_epoch(self.model)
        self._track(mode, totals)

    def _step(self, mode: str, task: str, batch, index: int, totals: dict) -> torch.Tensor:
        training = mode == TRAIN
        inputs, targets, extra = _unpack(batch, self.device)
        shared_memory = {"extra": extra, "batch_index": index, "epoch": self.epoch, "mode": mode, "task_key": task}
        model = self.model
        for pre_forward in self._hooks["pre_forward"]:
            model, inputs = pre_forward(model, inputs, task, shared_memory)
        with torch.autocast("cuda") if self.amp else contextlib.nullcontext():
            outputs = model(inputs)
            loss = 0.0  # modules add extra terms here, before the main loss
            for post_forward in self._hooks["post_forward"]:
                outputs, loss, targets = post_forward(outputs, loss, targets, **shared_memory)
            if self._loss_takes_extra.get(task):
                main_loss = self.losses[task](outputs, targets, shared_memory["extra"])
            else:
                main_loss = self.losses[task](outputs, targets)
            loss = main_loss if isinstance(loss, float) and loss == 0.0 else loss + main_loss
        if training:
            self._backward_and_step(loss / self.config.accumulate_gradients
                                    if self.config.accumulate_gradients > 1 else loss, index)
        detached = loss.detach()
        losses, sizes, metrics = totals[task]
        if metrics is None:  # first batch of this task in this pass: the metrics that apply to its outputs
            metrics = {name: cls() for name, cls in self.metric_classes.items() if cls.applies(outputs, targets)}
            totals[task] = (losses, sizes, metrics)
        losses.append(detached)
        sizes.append(len(targets))
        for metric in metrics.values():
            metric.update(outputs.detach(), targets)
        if self.config.track_iterations:
            self.tracker.add_iteration(mode, task, float(detached))
        return detached

    def _backward_and_step(self, loss: torch.Tensor, index: int) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        for post_backward in self._hooks["post_backward"]:
            post_backward(self.model)
        self._pending += 1
        if self._pending == self.config.accumulate_gradients:
            self._optimizer_step()

    def _optimizer_step(self) -> None:
        self._pending = 0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        for post_optimizer in self._hooks["post_optimizer"]:
            post_optimizer(self.model)

    def evaluate(self, mode: str = VALIDATION) -> float:
        """Run the validation (or test) loaders; returns the mean ``stop_metric`` (higher is better)."""
        split = "validation" if mode == VALIDATION else "test"
        self.run_epoch(mode, self.loaders.get(split, {}))
        self.tracker.add_epoch(mode, self.epoch)
        try:
            value = self.tracker.mean_last(mode, self.config.stop_metric)
        except KeyError:
            raise ConfigError(f"stop_metric={self.config.stop_metric!r} was not measured on the {split} set "
                              "(accuracy needs class logits and integer targets); set stop_metric='loss'") from None
        return self._stop_sign * value

    # -- helpers ------------------------------------------------------------------------------------
    def _log_epoch(self, bar) -> None:
        line = self.tracker.epoch_line(self.epoch)
        logger.info(line)
        if self.config.verbose:
            bar.update(1)
            if not logger.isEnabledFor(logging.INFO):  # nobody listens to the log: show the line anyway
                tqdm.write(line)

    def _batches(self, loaders: dict, cycle: bool) -> Iterator[tuple[str, object]]:
        """Training: interleave tasks, cycling shorter loaders until the longest ends. Evaluation: one after another."""
        if not cycle or len(loaders) == 1:
            for task, loader in loaders.items():
                for batch in loader:
                    yield task, batch
            return
        longest = max(len(loader) for loader in loaders.values())
        iterators = {task: iter(loader) for task, loader in loaders.items()}
        for _ in range(longest):
            for task, loader in loaders.items():
                try:
                    batch = next(iterators[task])
                except StopIteration:
                    iterators[task] = iter(loader)
                    batch = next(iterators[task])
                yield task, batch

    def _track(self, mode: str, totals: dict) -> None:
        for task, (losses, sizes, metrics) in totals.items():
            if not sizes:
                continue
            n = sum(sizes)
            weights = torch.tensor(sizes, dtype=torch.float32, device=self.device)
            self.tracker.add(mode, task, "loss", float(torch.stack(losses).float() @ weights) / n)
            for name, metric in (metrics or {}).items():
                self.tracker.add(mode, task, name, metric.compute())
        if mode == TRAIN:
            self.tracker.add_epoch(mode, self.epoch)
            self.tracker.add(mode, "all", "lr", self.optimizer.param_groups[0]["lr"])

    def _check_finite(self, mode: str, batch_losses: list, batch_indices: list) -> None:
        # one check per pass (a per-batch check would synchronise every step); the first bad batch is named
        if not batch_losses:
            return
        finite = torch.isfinite(torch.stack(batch_losses))
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise TrainingDiverged(
                f"{mode.lower()} loss is {float(batch_losses[bad])} in epoch {self.epoch}, "
                f"batch {batch_indices[bad]}; "
                "lower the learning rate, check the data for NaN/inf, or enable gradient clipping in a module"
            )

    def _loss_name(self, task: str) -> str:
        losses = self.config.loss_functions
        if task in losses:
            return losses[task]
        if len(losses) == 1:
            return next(iter(losses.values()))
        # extra test sets are named after their task ("img_classification_rotated_10"): longest prefix
        prefixes = sorted((key for key in losses if task.startswith(key)), key=len)
        if prefixes:
            return losses[prefixes[-1]]
        raise ConfigError(f"no loss function for task {task!r}; loss_functions has {sorted(losses)}")

    def _reset_and_freeze(self) -> None:
        cfg = self.config
        for pattern in cfg.reset:
            matched = [m for name, m in self.model.named_modules() if name and _matches(name, pattern)]
            if not matched:
                raise ConfigError(f"reset pattern {pattern!r} matches no module of the model")
            torch.manual_seed(self.seed)
            for module in matched:
                for sub in module.modules():
                    if hasattr(sub, "reset_parameters"):
                        sub.reset_parameters()
        for pattern in cfg.freeze:
            matched = [p for name, p in self.model.named_parameters() if _matches(name, pattern)]
            if not matched:
                raise ConfigError(f"freeze pattern {pattern!r} matches no parameter of the model "
                                  f"(parameters: {', '.join(n for n, _ in list(self.model.named_parameters())[:12])}, …)")
            for p in matched:
                p.requires_grad_(False)

    def _set_modes(self, training: bool) -> None:
        self.model.train(training)
        if training:
            for module in self.model.modules():
                if self.config.batchnorm_mode == "eval" and isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
                if self.config.dropout_mode == "eval" and isinstance(module, nn.modules.dropout._DropoutNd):
                    module.eval()

    def _seed_epoch(self) -> None:
        # Every epoch starts from RNG states derived from (seed, epoch), so shuffling, augmentation and
        # dropout of epoch k are the same whether or not the run was interrupted before it.
        epoch_seed = self.seed * 100_003 + self.epoch
        torch.manual_seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        random.seed(epoch_seed)

    def _set_lr(self) -> None:
        cfg = self.config
        milestones = cfg.milestones if cfg.lr_schedule == "milestones" else []
        lr = scheduled_lr(self.base_lr, self.epoch, warmup_epochs=cfg.warmup_epochs, milestones=milestones,
                          decay_factor=cfg.lr_decay_factor, plateau_decays=self.stopper.decays_done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _budget_spent(self) -> bool:
        return self.config.max_steps is not None and self.steps >= self.config.max_steps

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "steps": self.steps,
            "stopped": self.stopped,
            "last_score": self.last_score,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "stopper": self.stopper.state_dict(),
            "tracker": self.tracker.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.steps = state["epoch"], state["steps"]
        self.stopped, self.last_score = state.get("stopped", False), state.get("last_score", -float("inf"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.stopper.load_state_dict(state["stopper"])
        self.tracker.load_state_dict(state["tracker"])
        set_rng_state(state["rng"])

    def _checkpoint(self) -> None:
        cfg = self.config
        if self.checkpoints is None or not cfg.save_every_n or self.epoch % cfg.save_every_n:
            return
        # the score of a checkpoint is its epoch's (latest) validation score, higher is better (-loss for
        # stop_metric="loss"): keep_best_n keeps the checkpoints of the best epochs
        self.checkpoints.save(self.epoch, self.last_score, self.state_dict())
        self.checkpoints.prune(cfg.keep_last_n, cfg.keep_best_n)

    def _resume(self) -> None:
        state = self.checkpoints.latest() if self.checkpoints is not None else None
        if state is not None:
            self.load_state_dict(state)
            logger.info("resumed from the checkpoint of epoch %d", self.epoch)

    def _finish(self) -> tuple[float, dict, dict]:
        score = self._stop_sign * self.evaluate(VALIDATION)
        self.run_epoch(TEST, self.loaders.get("test", {}))
        self.tracker.add_epoch(TEST, self.epoch)
        final = {mode: {task: {k: v[-1] for k, v in objs.items()} for task, objs in self.tracker.log.get(mode, {}).items()}
                 for mode in (VALIDATION, TEST)}
        output = {
            "tracker": self.tracker.state_dict(),
            "validation": final[VALIDATION],
            "test": final[TEST],
            "epochs": self.epoch,
            "best_epoch": self.stopper.best_epoch,
        }
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return float(score), output, state


def _total_batches(loaders: dict, cycle: bool) -> int | None:
    """Batches in a pass (for the progress bar); None when a loader has no length."""
    try:
        lengths = [len(loader) for loader in loaders.values()]
    except TypeError:
        return None
    return len(lengths) * max(lengths) if cycle and len(lengths) > 1 else sum(lengths)


def _matches(name: str, pattern: str) -> bool:
    """Glob pattern (``"core.*"``), or a regular expression after ``re:`` (``"re:core\\.[0-2]\\..*"``), full match."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _unpack(batch, device):
    """``(inputs, targets)`` or ``(inputs, targets, extra)`` moved to ``device``."""
    if isinstance(batch, dict):
        batch = (batch["inputs"], batch["targets"], batch.get("extra", {}))
    inputs, targets = batch[0], batch[1]
    if inputs.device != device:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    if len(batch) < 3:
        return inputs, targets, {}
    extra = batch[2] if isinstance(batch[2], dict) else {"transfer_data": batch[2]}
    return inputs, targets, {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in extra.items()}


__all__ = ["Trainer", "TrainingDiverged", "trainer"]
