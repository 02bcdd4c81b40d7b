"""Deleting results so that the next run trains them again (``nntransfer clear``).

A result of a transfer step is the start of every later step trained from it (the steps whose recipe
row names it as ``prev_*``, in any recipe). Deleting a step therefore also deletes those later steps,
recursively: otherwise they would stay "done" although they were trained from parameters that no longer
exist. Rows are deleted with DataJoint 2's ``delete(prompt=False)`` in one transaction, which removes
their part rows (model state, transfer data, provenance) too; their job records go as well, so
that nothing (an old error, say) keeps the next run from training them.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from ..core.keys import key_ident
from ..store import db, table
from ..store.transfer import PREV
from .plan import TRAINED, TRANSFERRED, Target, states


@dataclass
class Clearing:
    """What :func:`clear_results` deletes: the chosen results and the later steps trained from them.

    ``shared``: the other targets of the plan whose result is one of those rows. Experiments with the same
    configuration (and seed) share one result row, whatever their names: deleting it makes all of them pending.
    """

    chosen: list[Target]
    later: list[dict] = field(default_factory=list)  # keys of TransferredTrainedModel rows trained from them
    shared: list[Target] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of result rows deleted."""
        return len({(t.table, key_ident(t.key)) for t in self.chosen}) + len(self.later)


def matching_names(targets: list[Target], pattern: str) -> list[str]:
    """The experiment names ``pattern`` selects: the name itself if an experiment has it (grid names contain
    ``[...]``, which a glob reads as a character class), else every name the glob matches."""
    names = list(dict.fromkeys(t.description.name for t in targets))
    if pattern in names:
        return [pattern]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def select(targets: list[Target], step: int | None = None, name: str | None = None) -> list[Target]:
    """Finished targets of step ``step`` (all steps if None) of the experiments ``name`` selects
    (:func:`matching_names`; all if None)."""
    current = states(targets)
    names = set(matching_names(targets, name)) if name is not None else None
    return [t for t in targets if current[t]["state"] == "done"
            and (step is None or t.step == step)
            and (names is None or t.description.name in names)]


def plan_clearing(targets: list[Target], step: int | None = None, name: str | None = None) -> Clearing:
    """The results to delete and the later steps that were trained from them (nothing is deleted yet)."""
    chosen = list(dict.fromkeys(select(targets, step, name)))
    recipe, trained = table("TrainedModelTransferRecipe")(), table("TransferredTrainedModel")()
    own = {key_ident(t.key) for t in chosen}
    frontier = [t.key for t in chosen if t.table == TRANSFERRED]
    later, seen = [], set(own)
    while frontier:
        key = frontier.pop()
        following = recipe & {PREV[a]: key[a] for a in PREV}
        for row in (trained & following.proj()).keys():
            if key_ident(row) not in seen:
                seen.add(key_ident(row))
                later.append(row)
                frontier.append(row)
    deleted = {(t.table, key_ident(t.key)) for t in chosen} | {(TRANSFERRED, key_ident(k)) for k in later}
    shared = [t for t in dict.fromkeys(targets) if t not in chosen and (t.table, key_ident(t.key)) in deleted]
    return Clearing(chosen, later, shared)


def clear_results(clearing: Clearing) -> int:
    """Delete what :func:`plan_clearing` found, in one transaction; returns the number of results deleted."""
    keys_by_table = {TRAINED: [t.key for t in clearing.chosen if t.table == TRAINED],
                     TRANSFERRED: [t.key for t in clearing.chosen if t.table == TRANSFERRED] + clearing.later}
    with db.transaction():
        for table_name, keys in keys_by_table.items():
            if keys:
                results = table(table_name)
                (results & keys).delete(transaction=False, prompt=False)
                (results.jobs & keys).delete_quick()
    return len(clearing)


__all__ = ["Clearing", "clear_results", "matching_names", "plan_clearing", "select"]
