"""LotteryTicket: iterative magnitude pruning with rewinding (Frankle & Carbin, ICLR 2019; rewinding to an early
epoch: Frankle et al., ICML 2020), and winning tickets handed to later steps."""
from __future__ import annotations

import fnmatch

import torch

from ...errors import ConfigError
from ..handover import arrays, tensors
from .base import MainLoopModule, Option, register_module


@register_module("LotteryTicket")
class LotteryTicket(MainLoopModule):
    """Trains in rounds of ``round_epochs`` epochs. After each of the first ``rounds`` rounds it prunes the fraction
    ``prune_fraction`` of the weights still present with the smallest magnitudes, rewinds the remaining weights
    to their values after epoch ``rewind_epoch`` of the first round (0: their initialisation), resets the
    optimizer's state and the early-stopping record (``restore_best`` picks within a round), and trains the next
    round. After ``k`` rounds a fraction ``1 - (1 - prune_fraction)^k`` of the prunable weights is zero; pruned
    weights stay zero (their gradients are masked and the weights re-masked after every optimizer step). The
    epochs after the last round train the final ticket: ``max_iter`` must exceed ``rounds * round_epochs``.

    After training, the ticket (masks and rewind weights) is handed over (section ``"LotteryTicket"``); a later step
    with LotteryTicket starts from it (``use_handover``): matching parameters (name and shape) take the ticket's
    rewind weights and masks, e.g. a ticket found on task A retrained on task B (with ``rounds=0``) or pruned
    further.

    Options (``module_options["LotteryTicket"]``):

    * ``rounds`` (default 0), ``round_epochs``, ``prune_fraction`` (default 0.2), ``rewind_epoch`` (default 0);
    * ``parameters``: glob patterns of the prunable parameters (default: the weights of layers with more than one
      dimension, i.e. linear and convolutional weights, not biases or norms);
    * ``scope``: ``"layer"`` (default: each tensor pruned by the fraction) or ``"global"`` (one magnitude threshold
      over all prunable weights);
    * ``use_handover``: start from a handed-over ticket when there is one (default True).

    Rounds restart training, so the LR schedule must restart with them: epoch milestones and warm-up are refused
    with ``rounds > 0`` (the plateau schedule restarts with the early-stopping record). Early stopping would end
    the rounds: set ``early_stopping=False``. The sparsity of the prunable weights is logged per training pass as
    ``sparsity``.
    """

    options_declared = {
        "rounds": Option(0, int, "pruning rounds in this step"),
        "round_epochs": Option(None, (int, type(None)), "epochs per round"),
        "prune_fraction": Option(0.2, float, "fraction of the remaining weights pruned after each round"),
        "rewind_epoch": Option(0, int, "epoch whose weights a round rewinds to (0: the initialisation)"),
        "parameters": Option(None, (list, type(None)), "glob patterns of prunable parameters (default: weights)"),
        "scope": Option("layer", str, "'layer' or 'global' magnitude pruning", choices=("layer", "global")),
        "use_handover": Option(True, bool, "start from a ticket an earlier step handed over"),
    }

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        if options["rounds"] < 0:
            raise ConfigError(f"module_options[{key!r}]['rounds'] must be >= 0, got {options['rounds']}")
        if options["rounds"] and not options["round_epochs"]:
            raise ConfigError(f"module_options[{key!r}]: rounds={options['rounds']} needs 'round_epochs' (epochs per "
                              "round)")
        if options["round_epochs"] is not None and options["round_epochs"] < 1:
            raise ConfigError(f"module_options[{key!r}]['round_epochs'] must be at least 1")
        if not 0 < options["prune_fraction"] < 1:
            raise ConfigError(f"module_options[{key!r}]['prune_fraction'] must be in (0, 1), "
                              f"got {options['prune_fraction']}")
        if options["rewind_epoch"] < 0 or (options["round_epochs"] and options["rewind_epoch"] >= options[
                "round_epochs"]):
            raise ConfigError(f"module_options[{key!r}]['rewind_epoch'] must be >= 0 and before the end of the first "
                              f"round (round_epochs={options['round_epochs']}), got {options['rewind_epoch']}")

    def __init__(self, trainer):
        super().__init__(trainer)
        self._check_schedule()
        named = dict(self.model.named_parameters())
        patterns = self.option("parameters")
        self.prunable = {name: p for name, p in named.items()
                         if (any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns) if patterns is not None
                             else p.dim() > 1)}
        if not self.prunable:
            raise ConfigError(f"{self.name}: no parameter matches {patterns} (parameters: "
                              f"{', '.join(list(named)[:12])}, …)")
        self.masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in self.prunable.items()}
        ticket = self.handover.parameter_data(self.handover_name()) if self.option("use_handover") else {}
        if ticket:
            with torch.no_grad():
                for name, value in tensors(ticket["rewind"], named).items():
                    named[name].copy_(value)
            for name, mask in tensors(ticket["mask"], self.prunable).items():
                self.masks[name] = mask.bool()
        elif not self.option("rounds"):
            raise ConfigError(f"{self.name} with rounds=0 retrains a ticket an earlier step found, but none was handed "
                              "over (or use_handover=False): add LotteryTicket to an earlier step of the chain, or set "
                              "rounds and round_epochs to find one here")
        self._apply_masks()
        self.rewind_state = self._snapshot() if self.option("rewind_epoch") == 0 else None
        self.rounds_done = 0

    def _check_schedule(self) -> None:
        config, rounds = self.config, self.option("rounds")
        if not rounds:
            return
        last_round_end = rounds * self.option("round_epochs")
        if config.max_steps is not None or config.max_iter <= last_round_end:
            raise ConfigError(f"{self.name}: {rounds} rounds of {self.option('round_epochs')} epochs end after epoch "
                              f"{last_round_end}; set max_iter above that (the epochs after it train the final "
                              "ticket), and no max_steps")
        if config.milestones or config.milestone_steps or config.warmup_epochs or config.warmup_steps:
            raise ConfigError(f"{self.name}: each pruning round restarts training, but epoch/step milestones and "
                              "warm-up run over the whole run; use a constant LR or lr_schedule='plateau' (which "
                              "restarts with each round)")
        if config.early_stopping:
            raise ConfigError(f"{self.name}: early stopping would end the pruning rounds; set early_stopping=False "
                              "(restore_best still picks the best epoch of each round)")

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.model.named_parameters()}

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for name, parameter in self.prunable.items():
            parameter.mul_(self.masks[name])

    def sparsity(self) -> float:
        """The fraction of prunable weights that are pruned."""
        pruned = sum(int((~mask).sum()) for mask in self.masks.values())
        return pruned / sum(mask.numel() for mask in self.masks.values())

    @torch.no_grad()
    def prune(self) -> None:
        """Remove ``prune_fraction`` of the remaining prunable weights with the smallest magnitudes."""
        fraction = self.option("prune_fraction")
        if self.option("scope") == "global":
            names = list(self.prunable)
            magnitudes = torch.cat([self.prunable[n].detach().abs().flatten().float() for n in names])
            alive = torch.cat([self.masks[n].flatten() for n in names])
            keep = _keep_largest(magnitudes, alive, fraction)
            for name, part in zip(names, keep.split([self.masks[n].numel() for n in names])):
                self.masks[name] = part.view_as(self.masks[name])
        else:
            for name, parameter in self.prunable.items():
                keep = _keep_largest(parameter.detach().abs().flatten().float(), self.masks[name].flatten(), fraction)
                self.masks[name] = keep.view_as(self.masks[name])

    @torch.no_grad()
    def rewind(self) -> None:
        """Back to the rewind point's weights (masked), a fresh optimizer state and a fresh early-stopping record."""
        for name, parameter in self.model.named_parameters():
            parameter.copy_(self.rewind_state[name])
        self._apply_masks()
        self.trainer.optimizer.state.clear()
        self.trainer.stopper.reset()

    def pre_epoch(self, model, mode, **options):
        if mode != "Training" or not self.option("rounds"):
            return
        # round r + 1 starts after r * round_epochs epochs (with the state of a checkpoint, rounds_done says which)
        if self.rounds_done < self.option("rounds") and \
                self.epoch - 1 == (self.rounds_done + 1) * self.option("round_epochs"):
            self.prune()
            self.rewind()
            self.rounds_done += 1

    def pre_optimizer(self, model):
        for name, parameter in self.prunable.items():
            if parameter.grad is not None:
                parameter.grad.mul_(self.masks[name])

    def post_optimizer(self, model):
        self._apply_masks()

    def post_epoch(self, model):
        if self.mode != "Training":
            return
        if self.rewind_state is None and self.epoch == self.option("rewind_epoch"):
            self.rewind_state = self._snapshot()
        self.log("all", "sparsity", self.sparsity())

    def hand_over(self, model) -> dict:
        rewind = self.rewind_state if self.rewind_state is not None else self._snapshot()
        return {"mask": {name: mask.cpu().numpy().astype("uint8") for name, mask in self.masks.items()},
                "rewind": arrays(rewind), "sparsity": self.sparsity()}

    def state_dict(self) -> dict:
        return {"masks": dict(self.masks), "rewind": self.rewind_state, "rounds_done": self.rounds_done}

    def load_state_dict(self, state: dict) -> None:
        self.masks = {name: mask.bool() for name, mask in state["masks"].items()}
        self.rewind_state = state["rewind"]
        self.rounds_done = state["rounds_done"]


def _keep_largest(magnitudes: torch.Tensor, alive: torch.Tensor, fraction: float) -> torch.Tensor:
    """The mask keeping all but the ``round(fraction * alive)`` smallest ``magnitudes`` among the ``alive`` entries
    (ties broken by position, so the same weights always give the same mask)."""
    remaining = int(alive.sum())
    prune = int(round(fraction * remaining))
    if prune == 0:
        return alive.clone()
    score = torch.where(alive, magnitudes, torch.full_like(magnitudes, float("inf")))
    order = torch.sort(score, stable=True).indices
    keep = alive.clone()
    keep[order[:prune]] = False
    return keep
