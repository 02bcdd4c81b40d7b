"""The trainer: an epoch loop with main-loop module hooks, early stopping, exact resume and fast GPU paths."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import random
import re
import sys
from typing import Callable, Iterator, NoReturn

import numpy as np
import torch
from torch import nn

from ..core import bars as progress_bars
from ..errors import ConfigError
from ..configs.trainer import TrainerConfig
from ..models.devices import model_device, takes_data_key
from .checkpointing import BackgroundWriter, CheckpointStore, map_tensors, rng_state, set_rng_state
from .handover import PARAMETERS, Handover
from .hooks import TEST, TRAIN, VALIDATION, Hooks, loop_state
from .interrupt import StopToken, TrainingInterrupted
from .losses import evaluation_loss, make_loss
from .metrics import METRICS
from .modules import CancelBatch, CancelEpoch, MainLoopModule, module_class
from .optim import EarlyStopping, make_optimizer, scheduled_lr
from .patterns import frozen_parameters, reset_modules
from .progress import Progress
from .robustness import check_noise_robustness, noise_robustness
from .tensorboard import open_log
from .tracking import Tracker

logger = logging.getLogger("nntransfer.trainer")

_LOWEST_SCORE = -sys.float_info.max  # checkpoint score before any evaluation (stores need a finite number)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingOutOfMemory(RuntimeError):
    """The device ran out of memory; the one-line message names the pass, batch, step and batch size."""


def trainer(model: nn.Module, dataloaders: dict, seed: int, uid=None, cb: Callable | None = None, *,
            checkpoints: CheckpointStore | None = None, stop: StopToken | None = None,
            handover: Handover | None = None, **config) -> tuple[float, dict, dict]:
    """nnfabrik trainer function: train ``model`` and return ``(score, output, model_state)``.

    ``score`` is the validation ``stop_metric`` of the final (by default best, restored) parameters;
    ``output`` holds the tracker history and the final validation and test results. ``stop``: the run's
    :class:`StopToken` (a fresh one if None); ``checkpoints``: where it saves and resumes; ``handover``: what
    earlier steps of a transfer chain gave (:class:`~nntransfer.trainer.handover.Handover`), for the modules.
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
    return Trainer(model, dataloaders, seed, cfg, checkpoints=checkpoints, cb=cb, uid=uid, stop=stop,
                   handover=handover).train()


class Trainer:
    """Trains ``model`` on ``dataloaders`` as ``config`` says; :meth:`train` returns ``(score, output, state)``.

    Its position is :attr:`progress` (a :class:`Progress`); its stop request :attr:`stop` (a :class:`StopToken`);
    what earlier steps gave :attr:`handover` (a :class:`Handover`, empty outside a transfer chain).
    """

    def __init__(self, model: nn.Module, dataloaders: dict, seed: int, config: TrainerConfig,
                 checkpoints: CheckpointStore | None = None, cb: Callable | None = None, uid=None,
                 stop: StopToken | None = None, handover: Handover | None = None):
        self.config, self.seed, self.checkpoints, self.cb, self.uid = config, seed, checkpoints, cb, uid
        self.stop = stop if stop is not None else StopToken()
        self.handover = handover if handover is not None else Handover()
        self.device = _training_device(model, config.force_cpu)
        self.precision = _precision(config, self.device)
        if config.deterministic:  # read when cuBLAS starts, i.e. before the first CUDA matmul of the process
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loaders = dataloaders
        self.tracker = Tracker()
        self.progress = Progress()
        self.environment: dict = {}  # device, threads, precision, ... the run used (in the output)
        tasks = dict.fromkeys(task for split in dataloaders.values() for task in split)
        loss_names = {task: self._loss_name(task) for task in tasks}
        # training passes track the objective; validation and test the plain loss it declares (like with like)
        self.losses = {task: make_loss(name, config.loss_options.get(name)) for task, name in loss_names.items()}
        self.evaluation_losses = {task: evaluation_loss(loss) for task, loss in self.losses.items()}
        self.metric_classes = {name: METRICS.get(name) for name in config.metrics}
        self._stop_sign = -1.0 if config.stop_metric == "loss" or not METRICS.get(config.stop_metric).higher_is_better \
            else 1.0
        self._reset_and_freeze()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"freeze patterns {list(config.freeze)} leave no trainable parameter")
        self.optimizer = make_optimizer(config.optimizer, self.params, dict(config.optimizer_options), self.device)
        self.base_lr = config.optimizer_options["lr"]
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self._autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self._channels_last = config.channels_last
        # CUDA graphs (compile="reduce-overhead") must be told where a training iteration starts
        self._new_cudagraph_step = config.compile == "reduce-overhead"
        # the module that runs forward passes; its parameters are self.model's (state dicts come from self.model)
        self.forward_model = torch.compile(self.model, mode=None if config.compile is True else config.compile) \
            if config.compile else self.model
        # neuralpredictors' convention for models of several sessions: forward(x, data_key=task), regularizer(task)
        regularizer = getattr(self.model, "regularizer", None)
        self.regularizer = regularizer if callable(regularizer) else None
        self._takes_data_key = takes_data_key(self.model)
        decays = config.lr_decay_steps - 1 if config.lr_schedule == "plateau" else 0
        self.stopper = EarlyStopping(config.patience, config.threshold, decays)
        self.modules: list[MainLoopModule] = [module_class(name).create(self, name)
                                              for name in config.main_loop_modules]
        self.hooks = Hooks(self.modules)
        if config.noise_robustness:
            check_noise_robustness(self)
        self._writer = BackgroundWriter(checkpoints, config.keep_last_n, config.keep_best_n) \
            if checkpoints is not None else None
        self._training_pass: _Pass | None = None  # accumulators of the training pass in progress (checkpointed)
        self._last_validation: dict | None = None  # objectives of the latest validation pass, for cb's info
        self._checkpoint_to_resume: dict | None = None  # a mid-epoch checkpoint, loaded when its pass is reached
        self._lr_per_step = bool(config.warmup_steps or config.milestone_steps)

    def add_trainable(self, parameters, **group_options) -> None:
        """Train ``parameters`` of a module (not of the model, e.g. a discriminator or learned loss weights) with the
        model: a new parameter group of the optimizer (``group_options`` override its defaults), and a part of
        everything the trainer does with trainable parameters (clipping, checkpointed gradients, cancelled batches).
        Call it from a module's ``__init__``: the order of the groups is part of the optimizer's checkpointed state."""
        parameters = [p for p in parameters if p.requires_grad]
        if parameters:
            self.optimizer.add_param_group({"params": parameters, **group_options})
            self.params.extend(parameters)

    @property
    def epoch(self) -> int:
        """The epoch in progress, or the last one finished (``progress.epoch``)."""
        return self.progress.epoch

    @property
    def steps(self) -> int:
        """Optimizer steps taken (``progress.steps``)."""
        return self.progress.steps

    # -- the main loop ----------------------------------------------------------------------------
    def train(self) -> tuple[float, dict, dict]:
        """Train until ``max_iter`` epochs (``max_steps`` steps, if set) or early stopping, then evaluate the final
        (by default restored-best) parameters and test them. Resumes from ``checkpoints`` when they hold a state."""
        with self.stop, self._run_settings(), self._checkpoint_writes(), \
                contextlib.closing(open_log(self.config, self.uid)) as board:
            self._resume()
            bar = self._progress_bar()
            while not self.progress.finished(self.config):
                self._stop_if_requested()
                self.train_epoch()
                board.write(self.tracker)
                bar.update((self.progress.steps if self.config.max_steps else self.progress.epoch) - bar.n)
            if self.config.restore_best:
                self.stopper.restore(self.model)
            result = self._finish()
            bar.close()  # after the final evaluation, which shows in the run's bar too
            board.write_final(self.tracker)
            return result

    def train_epoch(self) -> None:
        """One epoch (or the rest of one after a mid-epoch resume): the training pass with its step-based
        evaluations and checkpoints, then the epoch's evaluation, log line, checkpoint and ``cb``."""
        self.progress.start_epoch()
        self._seed_epoch()
        self._set_lr()
        self.run_epoch(TRAIN, self.loaders["train"])
        evaluated = bool(self.loaders.get("validation")) and self.progress.evaluation_due_after_epoch(self.config)
        if evaluated:
            self._validate()
        self._log_epoch()
        self._callback(evaluated)  # before the checkpoint: a copy whose job was taken over stops without writing one
        if self._writer is not None and self.progress.checkpoint_due_after_epoch(self.config):
            self._checkpoint()

    def run_epoch(self, mode: str, loaders: dict, record: bool = True) -> dict:
        """One pass over ``loaders`` in ``mode``, calling every module hook; returns ``{task: {objective: value}}``
        (``record=False``: without adding them to the tracker)."""
        training = mode == TRAIN
        self._set_modes(training)
        accumulators = _Pass(self.metric_classes)
        pass_state = state = loop_state(mode, self.progress.epoch)
        batches = self._batches(loaders, cycle=training)
        first, ended = self._begin_pass(pass_state, batches, accumulators)
        try:
            with torch.set_grad_enabled(training), self._pass_bar(mode, loaders, batches, ended) as bar:
                for index, (task, batch) in enumerate(bar, start=first):
                    state = loop_state(mode, self.progress.epoch, task, index, {})
                    self._batch(state, batch, accumulators)
                    if training and self._after_training_batch():
                        break
        except CancelEpoch:
            self.hooks.after_cancel_epoch(state, self.model)
        self._check_finite(mode, accumulators)
        if training:
            self._step_leftover_gradients(state)
        self.hooks.post_epoch(pass_state, self.model)
        if training:
            self.progress.end_training_pass()
            self._training_pass = None
        return self._track(mode, accumulators) if record else accumulators.results()

    def _batch(self, state: dict, batch, accumulators: "_Pass") -> None:
        """One batch; ``CancelBatch`` ends it (every module hears of it); running out of memory and a failed compile
        become one-line errors that say what to change."""
        try:
            self._step(state, batch, accumulators)
        except CancelBatch:
            self.hooks.after_cancel_batch(state, self.model)
        except torch.OutOfMemoryError as err:
            raise TrainingOutOfMemory(self._out_of_memory(state, batch, err)) from err
        except RuntimeError as err:
            if self.config.compile and _is_compile_error(err):
                raise self._compile_error(err) from err
            raise

    def _step(self, state: dict, batch, accumulators: "_Pass") -> None:
        """One batch: ``pre_forward``, forward, ``post_forward``, loss; in training backward and (every
        ``accumulate_gradients`` batches) the optimizer step."""
        inputs, targets, extra = self._unpack(batch)
        state["shared_memory"]["extra"] = extra
        if self._new_cudagraph_step:
            torch.compiler.cudagraph_mark_step_begin()
        model, inputs = self.hooks.pre_forward(state, self.forward_model, inputs)
        task = state["task_key"]
        with self._autocast():
            outputs = model(inputs, data_key=task) if self._takes_data_key and model is self.forward_model \
                else model(inputs)
            # modules add extra terms to the loss, which starts at 0.0; the task's loss comes last
            outputs, loss, targets = self.hooks.post_forward(state, outputs, 0.0, targets)
            loss = self._add_task_loss(state, outputs, loss, targets, extra)
        regularizer = self._backward(state, loss) if state["train_mode"] else None
        accumulators.add(task, state["batch_index"], loss.detach(), outputs.detach(), targets, regularizer)
        if self.config.track_iterations:
            self.tracker.add_iteration(state["mode"], task, float(loss.detach()))

    def _add_task_loss(self, state: dict, outputs, loss, targets, extra: dict) -> torch.Tensor:
        """The modules' terms plus the task's loss. A module may set, for a training batch, ``shared_memory[
        "task_targets"] = [(weight, targets), ...]`` (the loss becomes the weighted sum over these target sets, e.g.
        Mixup) and ``shared_memory["task_loss_weight"]`` (a factor of the task's loss, e.g. online distillation)."""
        losses = self.losses if state["train_mode"] else self.evaluation_losses
        task_loss = losses[state["task_key"]]
        uses_extra = getattr(task_loss, "uses_extra", False)
        shared = state["shared_memory"]
        main = None
        for weight, task_targets in shared.get("task_targets") or [(None, targets)]:
            term = task_loss(outputs, task_targets, extra) if uses_extra else task_loss(outputs, task_targets)
            term = term if weight is None else weight * term
            main = term if main is None else main + term
        if "task_loss_weight" in shared:
            main = shared["task_loss_weight"] * main
        return main if isinstance(loss, float) and loss == 0.0 else loss + main

    def _backward(self, state: dict, loss: torch.Tensor) -> torch.Tensor | None:
        """Backward of loss + the model's regularizer (loss-scaled under fp16), ``post_backward``, and a step every
        ``accumulate_gradients`` batches; returns the regularizer's value. ``CancelBatch`` from ``post_backward``
        takes this batch's gradients back out."""
        regularizer = None
        if self.regularizer is not None:  # tracked on its own: the loss stays comparable with validation's
            regularizer = _as_tensor(self.regularizer(state["task_key"]), loss)
            loss = loss + regularizer
        accumulate = self.config.accumulate_gradients
        if accumulate > 1:
            loss = loss / accumulate
        before = [p.grad if p.grad is None else p.grad.clone() for p in self.params] \
            if self.hooks.overridden("post_backward") else None
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        try:
            self.hooks.post_backward(state, self.model)
        except CancelBatch:
            for p, grad in zip(self.params, before):
                p.grad = grad
            raise
        if self.progress.backward_done(accumulate):
            self._optimizer_step(state)
        return regularizer

    def _optimizer_step(self, state: dict) -> None:
        """Unscale (fp16), clip to ``max_grad_norm``, ``pre_optimizer``, step, zero the gradients, ``post_optimizer``.
        ``CancelBatch`` from ``pre_optimizer`` drops the step and its accumulated gradients."""
        self.progress.pending = 0
        max_norm = self.config.max_grad_norm
        if self.scaler is not None and (max_norm or self.hooks.overridden("pre_optimizer")):
            self.scaler.unscale_(self.optimizer)
        if max_norm:
            torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        try:
            self.hooks.pre_optimizer(state, self.model)
        except CancelBatch:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            raise
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.steps += 1
        if self._lr_per_step:
            self._set_lr()
        self.hooks.post_optimizer(state, self.model)

    def _begin_pass(self, pass_state: dict, batches: Iterator, accumulators: "_Pass") -> tuple[int, bool]:
        """``pre_epoch``, then, for training, the pass's start (or resumption); returns the index of the first batch
        and whether the pass is over before it (cancelled in ``pre_epoch``, or resumed from a checkpoint written as
        it ended)."""
        try:
            self.hooks.pre_epoch(pass_state, self.model)
            cancelled = False
        except CancelEpoch:
            self.hooks.after_cancel_epoch(pass_state, self.model)
            cancelled = True
        if not pass_state["train_mode"]:
            return 0, cancelled
        first = self._start_training_pass(batches, accumulators)
        return first, cancelled or self.progress.pass_over(self.config)

    @contextlib.contextmanager
    def _pass_bar(self, mode: str, loaders: dict, batches: Iterator, ended: bool):
        bar = progress_bars.pass_bar(iter(()) if ended else batches, total=_total_batches(loaders, cycle=mode == TRAIN),
                                     desc=f"{mode} {self.progress.epoch}", disable=not self.config.verbose or ended)
        try:
            yield bar
        finally:
            bar.close()

    def _step_leftover_gradients(self, state: dict) -> None:
        """At the end of a training pass, gradients accumulated over its last batches make one more step (with the
        last batch's state), and that step's evaluation and checkpoint run (not again for a step that was dropped)."""
        if not self.progress.pending:
            return
        try:
            self._optimizer_step(state)
        except CancelBatch:
            self.hooks.after_cancel_batch(state, self.model)
        if self.progress.step_events_due():
            self._step_events()

    def _after_training_batch(self) -> bool:
        """Step-based evaluation and checkpoint, stop requests; True ends the pass (early stop, step budget)."""
        self.progress.batch += 1
        if self.progress.step_events_due():
            self._step_events()
        self._stop_if_requested()
        return self.progress.pass_over(self.config)

    def _step_events(self) -> None:
        """After an optimizer step: evaluate every ``eval_every_steps``, checkpoint every ``save_every_steps``."""
        progress = self.progress
        progress.events_at_step = progress.steps
        evaluate = bool(self.loaders.get("validation")) and progress.evaluation_due_after_step(self.config)
        save = self._writer is not None and progress.checkpoint_due_after_step(self.config)
        if evaluate:
            self._validate()
            self._set_modes(True)  # back to training, inside the training pass
            logger.info("epoch %d step %d | %s", progress.epoch, progress.steps,
                        self.tracker.epoch_line(progress.epoch))
        if evaluate or save:
            self._callback(evaluate)
        if save:
            self._checkpoint()

    def _validate(self) -> None:
        """A validation pass and the early-stopping decision (improved / wait / decay: restore best, lower LR /
        stop)."""
        results = self.run_epoch(VALIDATION, self.loaders.get("validation") or {})
        score = self._stop_sign * self._metric(results, "validation")
        self._last_validation = results
        self.progress.last_score, self.progress.evaluated_at_step = score, self.progress.steps
        decision = self.stopper.update(score, self.progress.epoch, self.model, self.progress.steps)
        if decision == "decay":
            self.stopper.restore(self.model)
            self._set_lr()
            logger.info("epoch %d: patience ran out, restoring best and decaying the LR", self.progress.epoch)
        self.progress.stopped = self.config.early_stopping and decision == "stop"

    def evaluate(self, mode: str = VALIDATION) -> float:
        """A validation (or test) pass; returns the mean ``stop_metric`` over its tasks, higher is better."""
        split = "validation" if mode == VALIDATION else "test"
        return self._stop_sign * self._metric(self.run_epoch(mode, self.loaders.get(split) or {}), split)

    # -- end of training -----------------------------------------------------------------------------
    def _finish(self) -> tuple[float, dict, dict]:
        """Final validation of the returned parameters and the test pass (both in ``tracker.final``); the score
        is the final validation ``stop_metric`` — without a validation split the test's, else the last training's."""
        with self.tracker.recording_final():
            validation = self.run_epoch(VALIDATION, self.loaders["validation"]) if self.loaders.get("validation") \
                else {}
            test = self.run_epoch(TEST, self.loaders["test"]) if self.loaders.get("test") else {}
        robustness = noise_robustness(self, test) if self.config.noise_robustness else None
        if validation:
            score = self._metric(validation, "validation")
        elif test:
            score = self._metric(test, "test")
        else:
            last = {task: {k: v[-1] for k, v in objectives.items()}
                    for task, objectives in self.tracker.log.get(TRAIN, {}).items() if task != "all"}
            score = self._metric(last, "train")
        final = self.tracker.state_dict()["final"]
        output = {
            "tracker": self.tracker.state_dict(),
            "validation": final.get(VALIDATION, {}),
            "test": final.get(TEST, {}),
            "epochs": self.progress.epoch,
            "steps": self.progress.steps,
            "best_epoch": self.stopper.best_epoch,
            "best_step": self.stopper.best_step,
            "environment": dict(self.environment),
        }
        if robustness is not None:
            output["robustness"] = robustness
        sections = self._parameter_sections()
        if sections is not None:
            output["transfer_data"] = {PARAMETERS: sections}
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return float(score), output, state

    def _parameter_sections(self) -> dict | None:
        """The per-parameter data this step hands on (None: none): what its modules'
        :meth:`~nntransfer.trainer.MainLoopModule.hand_over` produced, and the sections it received that no module of
        it replaced (a producer accumulates what it received), when a module produced some or the step hands data
        over anyway (``data_transfer``)."""
        produced = {}
        for module in self.modules:
            section = module.hand_over(self.model)
            if section is not None:
                produced[module.handover_name()] = section
        received = self.handover.parameter_sections()
        if not produced and not (self.config.data_transfer and received):
            return None
        return {**received, **produced}

    def _metric(self, results: dict, split: str) -> float:
        """Mean ``stop_metric`` over the tasks of a pass's results."""
        values = [objectives[self.config.stop_metric] for objectives in results.values()
                  if self.config.stop_metric in objectives]
        if not values:
            raise ConfigError(f"stop_metric={self.config.stop_metric!r} was not measured on the {split} set: "
                              "accuracy needs class logits and integer targets, correlation one output per target "
                              "column (neural responses: also loss_functions={task: 'PoissonLoss'}); set stop_metric "
                              "and metrics to ones that fit the data, or stop_metric='loss'")
        return sum(values) / len(values)

    # -- checkpoints, resume and stopping -----------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs; in the middle of an epoch also the pass so far and pending gradients."""
        return {
            "progress": self.progress.state_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "stopper": self.stopper.state_dict(),
            "tracker": self.tracker.state_dict(),
            "modules": [module.state_dict() for module in self.modules],
            "pass": self._training_pass.state_dict() if self._training_pass is not None else None,
            "gradients": [p.grad for p in self.params] if self.progress.pending else None,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`, also one written before ``progress`` existed (its counters as flat keys).
        The pass of a mid-epoch state is restored by the resumed pass."""
        self.progress.load_checkpoint(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.stopper.load_state_dict(state["stopper"])
        self.tracker.load_state_dict(state["tracker"])
        modules = state.get("modules")
        if modules is not None and len(modules) != len(self.modules):
            raise ConfigError(f"the checkpoint has states of {len(modules)} main-loop modules, this trainer runs "
                              f"{len(self.modules)} ({self.config.main_loop_modules}): it is not this run's checkpoint")
        for module, module_state in zip(self.modules, modules or []):
            module.load_state_dict(self._on_device(module_state))
        if state.get("gradients") is not None:
            for p, grad in zip(self.params, state["gradients"]):
                p.grad = None if grad is None else grad.to(p.device)
        set_rng_state(state["rng"])

    def _resume(self) -> None:
        state = self.checkpoints.latest() if self.checkpoints is not None else None
        if state is None:
            return
        self.progress.load_checkpoint(state)
        if self.progress.mid_epoch:  # the rest is loaded when the resumed pass has skipped the batches done before
            self._checkpoint_to_resume = state
            logger.info("resuming epoch %d after batch %d", self.progress.epoch, self.progress.batch)
        else:
            self.load_state_dict(state)
            logger.info("resumed from the checkpoint of epoch %d", self.progress.epoch)

    def _start_training_pass(self, batches: Iterator, accumulators: "_Pass") -> int:
        """Make ``accumulators`` the training pass's; after a mid-epoch checkpoint, skip the batches it had done
        (the epoch is seeded: the same data in the same order) and load it. Returns the index of the next batch."""
        self._training_pass = accumulators
        state, self._checkpoint_to_resume = self._checkpoint_to_resume, None
        if state is None:
            return 0
        done = self.progress.batch
        for skipped in range(done):
            if next(batches, None) is None:
                raise ConfigError(f"the checkpoint is {done} batches into epoch {self.progress.epoch}, but the "
                                  f"training data has only {skipped} batches: the data changed since it was written")
        self.load_state_dict(state)
        accumulators.load_state_dict(self._on_device(state["pass"]))
        return done

    def _on_device(self, state):
        """Checkpoints are loaded on the CPU: the accumulators of a pass and modules' states go back to the
        training device (where the next batches' values join them)."""
        return map_tensors(lambda tensor: tensor.to(self.device), state)

    def _checkpoint(self) -> None:
        """Snapshot the whole state and write it in the background (a later state of an epoch replaces an earlier)."""
        if self._training_pass is not None:
            self._check_finite(TRAIN, self._training_pass)  # never checkpoint a diverged state
        score = self.progress.last_score if math.isfinite(self.progress.last_score) else _LOWEST_SCORE
        self._writer.submit(self.progress.epoch, score, self.state_dict())
        self.progress.mark_saved()

    def wait_for_checkpoint(self) -> None:
        """Block until the checkpoint being written in the background is stored (raises if writing it failed)."""
        if self._writer is not None:
            self._writer.wait()

    def _stop_if_requested(self) -> None:
        if self.stop.requested:
            self._interrupt()

    def _interrupt(self) -> NoReturn:
        """A stop was requested: checkpoint exactly here (unless saved already), wait for the write, raise."""
        where = self.progress.describe()
        if self._writer is None:
            done = "no checkpoint store, so it starts over next time"
        else:
            if not self.progress.saved:
                self._checkpoint()
            self._writer.wait()
            done = "checkpoint written"
        raise TrainingInterrupted(f"{self.stop.reason}: training stopped {where}; {done}")

    @contextlib.contextmanager
    def _checkpoint_writes(self):
        """The last checkpoint write has finished when ``train`` returns or raises. A failed write during training
        fails the run at the next checkpoint; the last one only logs: the result is complete without it."""
        try:
            yield
        finally:
            if self._writer is not None:
                self._writer.close()

    # -- settings of a run -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _run_settings(self):
        """Thread count and deterministic algorithms while training (restored afterwards); records the environment."""
        cfg = self.config
        threads = cfg.num_threads or (1 if cfg.deterministic else None)
        saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic,
                 torch.backends.cudnn.benchmark)
        if threads:
            torch.set_num_threads(threads)
        if cfg.deterministic:
            # warn_only: an operation without a deterministic implementation warns (naming it) instead of failing
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fastest convolution algorithms for the (fixed) shapes
        self.environment = _environment(self.device, self.precision, cfg)
        try:
            yield
        finally:
            torch.set_num_threads(saved[0])
            torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[3], saved[4]

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    # -- helpers ------------------------------------------------------------------------------------
    def _callback(self, evaluated: bool) -> None:
        """``cb`` with nnfabrik's keywords: ``uid``, ``epoch``, ``model`` and ``info``, which holds the optimizer
        ``step`` count and, right after an evaluation, its validation ``score`` (the stop_metric, as the result's
        score reports it) and ``validation`` objectives (``{task: {objective: value}}``)."""
        if self.cb is None:
            return
        info = {"step": self.progress.steps}
        if evaluated:
            info.update(score=self._stop_sign * self.progress.last_score, validation=self._last_validation)
        self.cb(uid=self.uid, epoch=self.progress.epoch, model=self.model, info=info)

    def _progress_bar(self):
        steps = self.config.max_steps is not None
        return progress_bars.run_bar(total=self.config.max_steps if steps else self.config.max_iter,
                                     initial=self.progress.steps if steps else self.progress.epoch,
                                     desc="steps" if steps else "epochs", disable=not self.config.verbose)

    def _log_epoch(self) -> None:
        line = self.tracker.epoch_line(self.progress.epoch)
        logger.info(line)
        if self.config.verbose and not logger.isEnabledFor(logging.INFO):  # nobody listens to the log: show it
            progress_bars.write(line)

    def _batches(self, loaders: dict, cycle: bool) -> Iterator[tuple[str, object]]:
        """``(task, batch)`` pairs of a pass. Training with several tasks interleaves them with neuralpredictors'
        LongCycler (a, b, a, b, …; shorter loaders start again until the longest ends); else task after task."""
        if cycle and len(loaders) > 1:
            from ..core import compat  # noqa: F401  (collections aliases neuralpredictors imports)
            from neuralpredictors.training.cyclers import LongCycler

            return iter(LongCycler({task: loader for task, loader in loaders.items() if len(loader)}))  # empty: endless
        return ((task, batch) for task, loader in loaders.items() for batch in loader)

    def _unpack(self, batch):
        """``(inputs, targets)`` or ``(inputs, targets, extra)`` on the trainer's device."""
        if isinstance(batch, dict):
            batch = (batch["inputs"], batch["targets"], batch.get("extra", {}))
        inputs, targets = batch[0], batch[1]
        device = self.device
        if inputs.device != device:
            inputs = inputs.to(device, non_blocking=True)
        if targets.device != device:
            targets = targets.to(device, non_blocking=True)
        if self._channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if len(batch) < 3:
            return inputs, targets, {}
        extra = batch[2] if isinstance(batch[2], dict) else {"transfer_data": batch[2]}
        return inputs, targets, {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                                 for k, v in extra.items()}

    def _track(self, mode: str, accumulators: "_Pass") -> dict:
        results = accumulators.results()
        for task, objectives in results.items():
            for objective, value in objectives.items():
                self.tracker.add(mode, task, objective, value)
        if results:
            if mode == TRAIN:
                self.tracker.add(mode, "all", "lr", self.optimizer.param_groups[0]["lr"])
            self.tracker.add_pass(mode, self.progress.epoch, self.progress.steps)
        return results

    def _check_finite(self, mode: str, accumulators: "_Pass") -> None:
        # one check per pass (a per-batch check would synchronise every step); the first bad batch is named
        bad = accumulators.first_non_finite()
        if bad is not None:
            value, index = bad
            raise TrainingDiverged(
                f"{mode.lower()} loss is {value} in epoch {self.progress.epoch}, batch {index}; "
                "lower the learning rate, check the data for NaN/inf, or set max_grad_norm"
            )

    def _out_of_memory(self, state: dict, batch, err: Exception) -> str:
        tried = re.search(r"Tried to allocate [\d.]+ \w+", str(err))
        where = f"{state['mode'].lower()} pass of epoch {state['epoch']}, batch {state['batch_index']}"
        if state["train_mode"]:
            where += f" (optimizer step {self.progress.steps + 1})"
        return (f"{self.device} ran out of memory in the {where} with batch size {_batch_size(batch)}"
                f"{f' ({tried.group(0)})' if tried else ''}: lower the dataset's batch_size (accumulate_gradients "
                "keeps the effective batch size), use precision='bf16' or 'fp16', or free the device")

    def _compile_error(self, err: Exception) -> ConfigError:
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        return ConfigError(f"TrainerConfig.compile={self.config.compile!r}: torch.compile failed on this model "
                           f"({type(err).__name__}: {first_line}); set compile=False to train it uncompiled "
                           "(which also shows whether the error is the model's own)")

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
            matched = reset_modules(self.model, pattern)
            torch.manual_seed(self.seed)
            for module in matched:
                for sub in module.modules():
                    if hasattr(sub, "reset_parameters"):
                        sub.reset_parameters()
        for pattern in cfg.freeze:
            for p in frozen_parameters(self.model, pattern):
                p.requires_grad_(False)

    def _set_modes(self, training: bool) -> None:
        self.model.train(training)
        if training:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and _running_statistics_kept(
                        module, self.config.batchnorm_mode):
                    module.eval()
                if self.config.dropout_mode == "eval" and isinstance(module, nn.modules.dropout._DropoutNd):
                    module.eval()

    def _seed_epoch(self) -> None:
        # Every epoch starts from RNG states derived from (seed, epoch), so shuffling, augmentation and
        # dropout of epoch k are the same whether or not the run was interrupted before it.
        epoch_seed = self.seed * 100_003 + self.progress.epoch
        torch.manual_seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        random.seed(epoch_seed)

    def _set_lr(self) -> None:
        cfg = self.config
        milestones = cfg.lr_schedule == "milestones"
        lr = scheduled_lr(self.base_lr, self.progress.epoch, warmup_epochs=cfg.warmup_epochs,
                          milestones=cfg.milestones if milestones else [], decay_factor=cfg.lr_decay_factor,
                          plateau_decays=self.stopper.decays_done, step=self.progress.steps + 1,
                          warmup_steps=cfg.warmup_steps, milestone_steps=cfg.milestone_steps if milestones else [])
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def _running_statistics_kept(batchnorm: nn.Module, mode: str) -> bool:
    """Whether a batch norm normalises with (and keeps) its running statistics while training: always with
    ``batchnorm_mode="eval"``; with ``"frozen"`` when it has parameters and all of them are frozen (a batch norm
    in a frozen core would otherwise keep adapting its statistics to the new data)."""
    if mode == "frozen":
        parameters = list(batchnorm.parameters(recurse=False))
        return bool(parameters) and not any(p.requires_grad for p in parameters)
    return mode == "eval"


class _Pass:
    """Accumulators of one pass, reduced once at its end (no per-batch synchronisation): per task the batch
    losses, sizes and indices, the metrics that apply to its outputs, and the regularizer's values."""

    def __init__(self, metric_classes: dict):
        self.metric_classes = metric_classes
        self.tasks: dict[str, dict] = {}

    def add(self, task: str, index: int, loss: torch.Tensor, outputs, targets,
            regularizer: torch.Tensor | None) -> None:
        totals = self.tasks.get(task)
        if totals is None:  # first batch of this task in this pass: the metrics that apply to its outputs
            metrics = {name: cls() for name, cls in self.metric_classes.items() if cls.applies(outputs, targets)}
            totals = self.tasks[task] = {"losses": [], "sizes": [], "indices": [], "regularizer": [],
                                         "metrics": metrics}
        totals["losses"].append(loss)
        totals["sizes"].append(len(targets))
        totals["indices"].append(index)
        if regularizer is not None:
            totals["regularizer"].append(regularizer.detach())
        for metric in totals["metrics"].values():
            metric.update(outputs, targets)

    def results(self) -> dict[str, dict[str, float]]:
        out = {}
        for task, totals in self.tasks.items():
            losses = torch.stack(totals["losses"]).float()
            sizes = torch.tensor(totals["sizes"], dtype=torch.float32, device=losses.device)
            values = {"loss": float(losses @ sizes) / sum(totals["sizes"])}
            if totals["regularizer"]:
                values["regularizer"] = float(torch.stack(totals["regularizer"]).float().mean())
            values.update({name: metric.compute() for name, metric in totals["metrics"].items()})
            out[task] = values
        return out

    def first_non_finite(self) -> tuple[float, int] | None:
        """``(loss, batch index)`` of the first batch whose loss is NaN or infinite, else None (one sync)."""
        pairs = [(index, loss) for totals in self.tasks.values()
                 for index, loss in zip(totals["indices"], totals["losses"])]
        if not pairs:
            return None
        losses = torch.stack([loss for _, loss in pairs])
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return None
        bad = sorted((index, float(loss)) for (index, _), loss, ok in zip(pairs, losses, finite.tolist()) if not ok)
        return bad[0][1], bad[0][0]

    def state_dict(self) -> dict:
        # per-batch values as one tensor each (a checkpoint late in a long epoch copies two tensors, not thousands)
        return {"tasks": {task: {"losses": _stacked(t["losses"]), "sizes": list(t["sizes"]),
                                 "indices": list(t["indices"]), "regularizer": _stacked(t["regularizer"]),
                                 "metrics": {name: metric.state_dict() for name, metric in t["metrics"].items()}}
                          for task, t in self.tasks.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.tasks = {}  # (a "batches" entry of checkpoints written before Progress existed is Progress.batch)
        for task, t in state["tasks"].items():
            metrics = {}
            for name, metric_state in t["metrics"].items():
                metrics[name] = self.metric_classes[name]()
                metrics[name].load_state_dict(metric_state)
            self.tasks[task] = {"losses": list(t["losses"]), "sizes": list(t["sizes"]), "indices": list(t["indices"]),
                                "regularizer": list(t["regularizer"]), "metrics": metrics}


def _stacked(values: list[torch.Tensor]) -> torch.Tensor | list:
    return torch.stack(values) if values else []


def _training_device(model: nn.Module, force_cpu: bool) -> torch.device:
    """The CPU when asked or without CUDA; else the CUDA device the model is on, or the current one."""
    if force_cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    placed = model_device(model)
    return placed if placed.type == "cuda" else torch.device("cuda", torch.cuda.current_device())


def _precision(config: TrainerConfig, device: torch.device) -> str:
    """The precision a run uses: ``precision`` on any device; ``amp=True`` (its old name) means fp16 on CUDA
    and, as it always did, nothing on the CPU."""
    if config.precision != "32":
        return config.precision
    return "fp16" if config.amp and device.type == "cuda" else "32"


def _environment(device: torch.device, precision: str, config: TrainerConfig) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(), "precision": precision,
            "deterministic": config.deterministic, "compile": config.compile, "torch": str(torch.__version__),
            "cuda": torch.version.cuda}


def _is_compile_error(err: Exception) -> bool:
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(err, TorchDynamoException)


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    return value if torch.is_tensor(value) else torch.tensor(float(value), device=like.device)


def _batch_size(batch) -> int | str:
    inputs = batch["inputs"] if isinstance(batch, dict) else batch[0]
    return len(inputs) if hasattr(inputs, "__len__") else "?"


def _total_batches(loaders: dict, cycle: bool) -> int | None:
    """Batches in a pass (for the progress bar); None when a loader has no length."""
    try:
        lengths = [len(loader) for loader in loaders.values()]
    except TypeError:
        return None
    if not lengths:
        return 0
    return len(lengths) * max(lengths) if cycle and len(lengths) > 1 else sum(lengths)


__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted", "TrainingOutOfMemory", "trainer"]
