"""EWC: elastic weight consolidation (Kirkpatrick et al., PNAS 2017), with the diagonal Fisher information handed
from step to step."""
from __future__ import annotations

import fnmatch
import logging

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..handover import arrays, tensors
from .base import MainLoopModule, Option, PassTerms, register_module

logger = logging.getLogger(__name__)


@register_module("EWC")
class EWC(MainLoopModule):
    """Penalty ``strength / 2 * sum_t sum_i F_t,i * (w_i - w*_t,i)^2`` over the earlier tasks ``t``.

    After training, the module estimates the diagonal Fisher information of the returned parameters ``w*`` on the
    step's training data, ``F_i = E_x E_y [(d log p(y|x) / d w_i)^2]``, and hands it over with ``w*`` (transfer
    data, section ``"EWC"``). A later step with EWC adds the penalty for every
    task it received: parameters are matched by name and shape (a new classifier is not penalised). Earlier steps
    accumulate: a step that receives Fisher information and produces its own hands over both.

    Options (``module_options["EWC"]``):

    * ``strength`` (lambda, default 100.0);
    * ``labels``: ``"sampled"`` (default: y drawn from the model's predictive distribution, the Fisher information
      proper) or ``"empirical"`` (y the training labels, the empirical Fisher);
    * ``samples``: training examples per task used for the estimate (default 512; None: all), taken in the split's
      canonical order without augmentation, the model in eval mode;
    * ``parameters``: glob patterns of the parameters the penalty applies to (default: every one the earlier tasks
      share with this model; e.g. leave out a new classifier of the same shape).

    For classifiers: ``log p(y|x)`` is the log-softmax of the outputs. The penalty's mean per training pass is logged
    as ``ewc`` (in steps that received Fisher information).
    """

    options_declared = {
        "strength": Option(100.0, float, "lambda: weight of the penalty"),
        "labels": Option("sampled", str, "'sampled' (Fisher information) or 'empirical' (empirical Fisher)",
                        choices=("sampled", "empirical")),
        "samples": Option(512, (int, type(None)), "training examples per task for the Fisher estimate (None: all)"),
        "parameters": Option(None, (list, type(None)), "glob patterns of the penalised parameters (default: all)"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if options["strength"] < 0:
            raise ConfigError(f"module_options[{key!r}]['strength'] must be >= 0, got {options['strength']}")
        if options["samples"] is not None and options["samples"] < 1:
            raise ConfigError(f"module_options[{key!r}]['samples'] must be at least 1 (or None: all), "
                              f"got {options['samples']}")

    def __init__(self, trainer):
        super().__init__(trainer)
        received = self.handover.parameter_data(self.handover_name()).get("tasks", {})
        if self.handover.from_earlier_step and not received:
            raise ConfigError(f"{self.name} found no Fisher information in what earlier steps handed over: add EWC to "
                              "the main_loop_modules of an earlier step of the chain")
        self.received = received
        trainable = {name: p for name, p in self.model.named_parameters()
                     if p.requires_grad and _selected(name, self.option("parameters"))}
        # per earlier task: (its Fisher information, its parameters) of the parameters this model shares with it
        self.tasks = []
        for task in received.values():
            fisher = tensors(task["fisher"], trainable)
            anchor = tensors(task["anchor"], trainable)
            shared = sorted(set(fisher) & set(anchor))
            self.tasks.append({name: (fisher[name], anchor[name]) for name in shared})
        self.parameters = trainable
        self.terms = PassTerms()

    def penalty(self) -> torch.Tensor:
        """``strength / 2 * sum_t sum_i F_t,i * (w_i - w*_t,i)^2`` (0 without earlier tasks)."""
        total = torch.zeros((), device=self.device)
        for task in self.tasks:
            for name, (fisher, anchor) in task.items():
                total = total + (fisher.float() * (self.parameters[name].float() - anchor.float()).pow(2)).sum()
        return 0.5 * self.option("strength") * total

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            self.terms = PassTerms()

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode != "Training" or not self.tasks:
            return outputs, loss, targets
        penalty = self.penalty()
        self.terms.add(self.task_key, penalty)
        return outputs, loss + penalty, targets

    def post_epoch(self, model):
        if self.mode == "Training" and self.tasks:
            self.terms.log(self, "ewc")

    def hand_over(self, model) -> dict:
        """The received tasks and this step's: its diagonal Fisher information and its parameters."""
        batches = (batch for loader in self.train_loader.values()
                   for batch in _first_examples(loader, self.option("samples")))
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed)
        fisher = diagonal_fisher(model, batches, self.option("labels"), generator, self.device)
        anchor = {name: p for name, p in model.named_parameters() if name in fisher}
        tasks = dict(self.received)
        tasks[str(len(tasks))] = {"fisher": arrays(fisher), "anchor": arrays(anchor)}
        return {"tasks": tasks}

    def state_dict(self) -> dict:
        return {"terms": self.terms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.terms.load_state_dict(state["terms"])


def _selected(name: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _first_examples(loader, limit: int | None):
    """``(inputs, targets)`` batches of ``loader``'s first ``limit`` examples in canonical order, without
    augmentation when the loader knows how (nntransfer's loaders do), else in the loader's order."""
    from ...dataset import unshuffled

    try:
        batches = unshuffled(loader)
    except TypeError:
        batches = loader
    taken = 0
    for batch in batches:
        if isinstance(batch, dict):
            inputs, targets = batch["inputs"], batch["targets"]
        else:
            inputs, targets = batch[0], batch[1]
        if limit is not None:
            inputs, targets = inputs[:limit - taken], targets[:limit - taken]
        taken += len(targets)
        yield inputs, targets
        if limit is not None and taken >= limit:
            return


def diagonal_fisher(model: torch.nn.Module, batches, labels: str, generator: torch.Generator | None,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """The mean over examples of the squared gradient of ``-log p(y|x)`` for every parameter of a classifier (frozen
    ones too: the task depends on them as well; the model in eval mode). ``labels="empirical"``: y is the target;
    ``"sampled"``: y is drawn from ``softmax(model(x))`` with ``generator``. Per-example gradients come from
    ``torch.func`` (one vectorised pass per batch), or one backward pass per example for models that ``vmap`` cannot
    run."""
    from torch.func import functional_call, grad, vmap

    was_training, grad_mode = model.training, torch.is_grad_enabled()
    model.eval()
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in parameters.items()}
    count = 0

    def negative_log_likelihood(params, x, y):
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits.float(), y.unsqueeze(0))

    per_example = vmap(grad(negative_log_likelihood), in_dims=(None, 0, 0))
    try:
        torch.set_grad_enabled(True)  # also when called from inside an evaluation
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.no_grad():
                logits = model(inputs)
            if not torch.is_tensor(logits) or logits.dim() != 2:
                raise ConfigError("EWC's Fisher information is for classifiers with logits [batch, classes]; the model "
                                  f"returned {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}")
            if labels == "sampled":
                y = torch.multinomial(torch.softmax(logits.float(), dim=1), 1, generator=generator).flatten()
            else:
                y = targets.long()
            try:
                gradients = per_example(parameters, inputs, y)
                squared = {name: g.float().pow(2).sum(0) for name, g in gradients.items()}
            except RuntimeError as err:  # an operation vmap cannot batch: one backward pass per example
                logger.info("EWC: per-example gradients one by one (%s)", str(err).splitlines()[0][:200])
                squared = _squared_gradients_one_by_one(model, parameters, inputs, y)
            for name, value in squared.items():
                fisher[name] += value
            count += len(y)
    finally:
        torch.set_grad_enabled(grad_mode)
        model.train(was_training)
    if not count:
        raise ConfigError("EWC found no training examples to estimate the Fisher information on")
    return {name: value / count for name, value in fisher.items()}


def _squared_gradients_one_by_one(model, parameters: dict, inputs, labels) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    squared = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in parameters.items()}
    frozen = [p for p in named.values() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        _accumulate_one_by_one(model, named, squared, inputs, labels)
    finally:
        for p in frozen:
            p.requires_grad_(False)
    return squared


def _accumulate_one_by_one(model, named: dict, squared: dict, inputs, labels) -> None:
    for x, y in zip(inputs, labels):
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            F.cross_entropy(model(x.unsqueeze(0)).float(), y.unsqueeze(0)).backward()
        for name in squared:
            if named[name].grad is not None:
                squared[name] += named[name].grad.float().pow(2)
    model.zero_grad(set_to_none=True)
