"""Hyperparameter search on the results database: Optuna's distributed optimisation over ordinary experiments.

A search varies config paths of one experiment (or transfer experiment) over a space
(:mod:`nntransfer.configs.space`). Its Optuna study lives in the database the results live in
(:mod:`nntransfer.store.studies`), so any number of search workers — local processes, other machines, Slurm jobs —
join one study by name. Each trial is an ordinary experiment: the sampled values are applied with
``experiment.replace``, the tables are filled and its steps are trained through DataJoint's job reservation
(:func:`~nntransfer.orchestration.workers.work`). So a configuration trained before (by an earlier trial, a grid, a
plain ``run``) is reused without training, two workers never train one configuration at once (the second waits for
the result), and the steps before the searched one of a transfer experiment have the same keys in every trial and
are trained once.

What a trial is scored on: the validation score of its last step (the result's ``score``, or one validation
objective, ``validation/<task>/<objective>``), never the test set; the best trial's test metrics are reported next
to it. Every validation during training reaches Optuna (``trial.report``) through the trainer's callback; when the
pruner says so the trial is pruned: its job stops like a stopped job (checkpoint, release: a later run of that
configuration resumes there instead of inserting a half-trained result), and the trial is recorded as pruned with
its intermediate values.

Fault tolerance:

* The trial budget (``n_trials``) counts the study's finished, running and queued trials; a worker creates or takes
  a trial only under a lock in the database, so workers together start exactly ``n_trials``.
* SIGTERM / Ctrl-C stop a worker as they stop ``run``: the job in hand is checkpointed and released; the trial is
  marked failed and queued again with the same configuration (Optuna's retry of failed trials), so a restarted
  worker continues it from the checkpoint.
* A killed worker's trial is found by Optuna's heartbeat (after ``NNTRANSFER_HEARTBEAT_TIMEOUT`` seconds) or, on the
  same machine, at once by its process id, and queued again in the same way; its job is re-queued by the job
  table's heartbeats. A retried trial replaces the failed one: no trial counts twice.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..configs.experiment import Description, Experiment, TransferExperiment
from ..configs.space import (
    PRUNERS,
    SAMPLERS,
    Choice,
    Distribution,
    IntRange,
    LogUniform,
    Uniform,
    check_space,
    label,
    parse_space,
    space_to_dict,
)
from ..core.compat import make_hash
from ..core.keys import KEY_ATTRIBUTES, key_ident
from ..core.stop import StopToken
from ..errors import ConfigError
from ..store import db
from ..store import jobs as store_jobs
from ..store.studies import has_studies, open_storage, require_optuna, storage_url
from .fill import fill_tables
from .plan import Target, states, test_metrics
from .recipes import read
from .workers import WorkerSettings, WorkResult, run_locally, work

logger = logging.getLogger(__name__)

#: the name of the study attribute holding what a search is (experiment, space, metric)
ATTRIBUTE = "nntransfer"
#: the states of a trial as nntransfer names them (Optuna's, plus ``retried``: failed, then queued again)
STATES = ("complete", "pruned", "running", "waiting", "failed", "retried")


class TrialFailed(Exception):
    """A trial's training (or its configuration) failed: the trial is recorded as failed, the search goes on."""


class SearchStopped(Exception):
    """The worker was asked to stop (SIGTERM, Ctrl-C, ``request_stop``) in the middle of a trial."""


# -- what a search is ------------------------------------------------------------------------------
def _result_key(exp: Experiment | TransferExperiment) -> dict:
    """The key of the result a trial is scored on: its last step's."""
    return exp.get_restrictions(len(exp.steps) - 1)


def base_hash(exp: Experiment | TransferExperiment) -> str:
    """What identifies the experiment a study searches around (the hash of its last step's key)."""
    return make_hash(dict(_result_key(exp)))


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _encoded(dist: Choice) -> bool:
    """Whether Optuna stores this choice's values as JSON text (it takes only None, bools, numbers and strings)."""
    return not all(_is_plain(v) for v in dist.values)


def parse_metric(metric: str) -> tuple[str, str] | None:
    """None for ``"score"``, ``(task, objective)`` for ``"validation/<task>/<objective>"``; the test set is refused."""
    if metric == "score":
        return None
    parts = metric.split("/") if isinstance(metric, str) else []
    if parts and parts[0] == "test":
        raise ConfigError(f"metric {metric!r}: a search never selects on the test set (its estimate would be biased "
                          "upwards); search on 'score' (the validation score the trainer reports) or "
                          "'validation/<task>/<objective>'. The best trial's test metrics are reported separately.")
    if len(parts) == 3 and parts[0] == "validation" and all(parts):
        return parts[1], parts[2]
    raise ConfigError(f"metric {metric!r}: use 'score' (the validation score the trainer reports) or "
                      "'validation/<task>/<objective>', e.g. 'validation/img_classification/loss'")


def default_direction(exp: Experiment | TransferExperiment, metric: str) -> str:
    """``maximize`` or ``minimize``, from the last step's trainer: its stop_metric (``score``) or the objective."""
    trainer = exp.steps[-1].trainer
    parts = parse_metric(metric)
    objective = parts[1] if parts else getattr(trainer, "stop_metric", None)
    if objective == "loss":
        return "minimize"
    if objective is None:
        raise ConfigError(f"cannot tell whether a higher {metric!r} is better for {type(trainer).__name__}: pass "
                          "direction='maximize' or 'minimize' (--direction)")
    from ..configs.registries import METRICS

    try:
        higher = METRICS.get(objective).higher_is_better
    except (ConfigError, AttributeError):
        raise ConfigError(f"cannot tell whether a higher {objective!r} is better: pass direction='maximize' or "
                          "'minimize' (--direction)") from None
    return "maximize" if higher else "minimize"


@dataclass(frozen=True)
class SearchSpec:
    """One search: the experiment it varies (named by ``description``), the space, what it optimises, how many
    trials, the sampler and pruner, and the study's name. Picklable: every search worker gets it."""

    description: Description
    experiment: Experiment | TransferExperiment
    space: dict
    metric: str
    direction: str
    n_trials: int
    sampler: str
    pruner: Any
    study_name: str
    recipe: str | None = None

    @property
    def by_steps(self) -> bool:
        """Whether the searched step evaluates every n optimizer steps (Optuna's step is then the step count)."""
        return getattr(self.experiment.steps[-1].trainer, "eval_every_steps", None) is not None

    # -- trials -------------------------------------------------------------------------------------
    def suggest(self, trial) -> dict:
        """Sample every path of the space for an Optuna trial; returns ``{path: config value}``."""
        values = {}
        for path, dist in self.space.items():
            if isinstance(dist, LogUniform):
                values[path] = trial.suggest_float(path, dist.low, dist.high, log=True)
            elif isinstance(dist, Uniform):
                values[path] = trial.suggest_float(path, dist.low, dist.high, step=dist.step)
            elif isinstance(dist, IntRange):
                values[path] = trial.suggest_int(path, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                choices = [label(v) for v in dist.values] if _encoded(dist) else list(dist.values)
                values[path] = trial.suggest_categorical(path, choices)
        return self.decode(values)

    def decode(self, params: Mapping) -> dict:
        """Optuna's parameter values as config values (choices stored as JSON text decoded)."""
        out = {}
        for path, value in params.items():
            dist = self.space.get(path)
            out[path] = json.loads(value) if isinstance(dist, Choice) and _encoded(dist) else value
        return out

    def trial_experiment(self, params: Mapping) -> Experiment | TransferExperiment:
        return self.experiment.replace(**self.decode(params))

    def trial_description(self, number: int, exp) -> Description:
        return Description(f"{self.description.name} trial {number}", exp.seed)

    def grid(self) -> dict:
        """The grid sampler's space: every path's values (as Optuna stores them); a ConfigError for continuous ones."""
        out = {}
        for path, dist in self.space.items():
            if isinstance(dist, Choice):
                out[path] = [label(v) for v in dist.values] if _encoded(dist) else list(dist.values)
            elif isinstance(dist, IntRange):
                out[path] = dist.values()
            elif isinstance(dist, Uniform) and dist.step is not None:
                count = int(math.floor((dist.high - dist.low) / dist.step + 1e-9)) + 1
                out[path] = [dist.low + i * dist.step for i in range(count)]
            else:
                raise ConfigError(f"sampler='grid' needs a finite set of values for every path; {path} is {dist}: "
                                  "use choice([...]), int, or uniform with a step")
        return out

    def evaluation_value(self, info: dict) -> float | None:
        """The searched metric of one evaluation the trainer reports (``info`` of its callback)."""
        parts = parse_metric(self.metric)
        if parts is None:
            return info.get("score")
        task, objective = parts
        value = (info.get("validation") or {}).get(task, {}).get(objective)
        return None if value is None else float(value)

    def result_value(self, score: float, output: Any) -> float:
        """The searched metric of a finished result (its score, or an objective of its final validation)."""
        validation = output.get("validation") if isinstance(output, dict) else None
        if isinstance(output, dict) and "validation" in output and not validation:
            raise ConfigError(f"{self.description.name}: the searched step reports no validation results, so its "
                              "score is not a validation score (the trainer falls back to the test set); give its "
                              "dataset a validation split (dataset.valid_size > 0)")
        parts = parse_metric(self.metric)
        if parts is None:
            return float(score)
        task, objective = parts
        try:
            return float(validation[task][objective])
        except (KeyError, TypeError):
            found = [f"validation/{t}/{o}" for t, objectives in (validation or {}).items() for o in objectives]
            raise ConfigError(f"metric {self.metric!r} is not reported by the searched step; it reports "
                              f"{', '.join(found) or 'no validation objectives'}") from None

    # -- the study's record of it -----------------------------------------------------------------------
    def attributes(self) -> dict:
        """What the study records of the search (JSON): enough to list its trials as experiments later."""
        return {"name": self.description.name, "seed": self.description.seed,
                "kind": type(self.experiment).__name__, "experiment": self.experiment.to_json(),
                "base": base_hash(self.experiment), "space": space_to_dict(self.space), "metric": self.metric,
                "direction": self.direction, "n_trials": self.n_trials, "recipe": self.recipe}

    @classmethod
    def from_attributes(cls, attrs: dict, study_name: str) -> "SearchSpec":
        kind = TransferExperiment if attrs["kind"] == "TransferExperiment" else Experiment
        exp = kind.from_json(attrs["experiment"])
        return cls(Description(attrs["name"], attrs["seed"]), exp, parse_space(attrs["space"]), attrs["metric"],
                   attrs["direction"], attrs["n_trials"], "tpe", "none", study_name, attrs.get("recipe"))


def read_space(path: str | os.PathLike) -> dict[str, Distribution]:
    """A search space from a YAML or JSON file (``path: {kind: arguments}`` per line)."""
    return parse_space(read(path))


def make_spec(experiment: Any, space: Any, *, name: str | None = None, metric: str = "score",
              direction: str | None = None, n_trials: int | None = None, sampler: str = "tpe", pruner: Any = "median",
              study_name: str | None = None, recipe: str | None = None) -> SearchSpec:
    """Check a search's arguments (see :func:`nntransfer.search`) and return its :class:`SearchSpec`."""
    from ..runner.checks import check_experiments

    description, experiment = _one_experiment(experiment, name)
    if isinstance(space, (str, os.PathLike)):
        space = read_space(space)
    space = parse_space(space)
    check_space(experiment, space, _result_key)
    corners = [experiment.replace(**{path: value}) for path, dist in space.items() for value in dist.corners()]
    check_experiments(corners)  # names and options resolve for the extremes of the space, before a trial fails
    parse_metric(metric)
    direction = direction or default_direction(experiment, metric)
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if isinstance(pruner, str) and pruner not in PRUNERS:
        raise ConfigError(f"pruner {pruner!r}: use one of {', '.join(PRUNERS)} (or pass an Optuna pruner object)")
    spec = SearchSpec(description, experiment, space, metric, direction, 0, sampler, pruner,
                      study_name or f"{description.name}-{base_hash(experiment)[:8]}", recipe)
    if sampler == "grid":
        size = math.prod(len(values) for values in spec.grid().values())
        if n_trials is not None and n_trials > size:
            logger.warning("the grid has %d points; searching those instead of %d trials", size, n_trials)
        n_trials = size if n_trials is None else min(n_trials, size)
    if sampler == "cmaes":
        import importlib.util

        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError("sampler='cmaes' needs the cmaes package: pip install cmaes")
    if n_trials is None:
        n_trials = _recorded_budget(spec.study_name)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"n_trials must be 1 or more (the study's total, counting earlier runs), got {n_trials!r}")
    return SearchSpec(description, experiment, space, metric, direction, n_trials, sampler, pruner,
                      spec.study_name, recipe)


def _recorded_budget(study_name: str) -> int:
    """The budget an existing study was last run with (a new study needs n_trials)."""
    optuna = require_optuna()
    if has_studies():
        try:
            study = optuna.load_study(study_name=study_name, storage=storage(heartbeat=False))
        except KeyError:
            study = None
        if study is not None and isinstance(study.user_attrs.get(ATTRIBUTE), dict):
            return study.user_attrs[ATTRIBUTE]["n_trials"]
    raise ConfigError(f"the study {study_name!r} is new: say how many trials it runs (n_trials=, --trials)")


def _one_experiment(experiment: Any, name: str | None) -> tuple[Description, Experiment | TransferExperiment]:
    """``(description, experiment)`` of what a search varies: one experiment, or a dict holding one (or ``name``)."""
    if isinstance(experiment, (Experiment, TransferExperiment)):
        return Description(name or "search", experiment.seed), experiment
    if isinstance(experiment, Mapping):
        found = {d: e for d, e in experiment.items() if name is None or d.name == name}
        if len(found) == 1:
            (desc, exp), = found.items()
            return desc, exp
        names = sorted({f"{d.name!r} (seed {d.seed})" for d in experiment})
        what = f"named {name!r}" if name else "in all"
        raise ConfigError(f"a search varies one experiment; {len(found)} are {what}: {', '.join(names[:8])}; choose "
                          "one with name= (--name), and one seed (--set seed=N)")
    raise ConfigError(f"search takes an Experiment or TransferExperiment (or a dict with one), got "
                      f"{type(experiment).__name__}")


# -- Optuna objects ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_experimental():
    """Optuna marks the heartbeat, constant-liar TPE and its matplotlib plots experimental; nothing to act on."""
    optuna = require_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _sampler(spec: SearchSpec):
    optuna = require_optuna()
    with _quiet_experimental():
        if spec.sampler == "random":
            return optuna.samplers.RandomSampler()
        if spec.sampler == "grid":
            return optuna.samplers.GridSampler(spec.grid())
        if spec.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(n_startup_trials=min(10, max(1, spec.n_trials // 4)))
        # constant liar: trials running in other workers count as bad, so parallel workers do not all sample the
        # same promising point; few random start-up trials when the budget is small
        return optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, spec.n_trials // 3)), multivariate=True,
                                          constant_liar=True)


def _pruner(spec: SearchSpec):
    optuna = require_optuna()
    if not isinstance(spec.pruner, str):
        if not isinstance(spec.pruner, optuna.pruners.BasePruner):
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)} or an Optuna pruner, got {spec.pruner!r}")
        return spec.pruner
    if spec.pruner == "median":
        # no pruning in the first quarter of training: early validation (a fresh output layer) says little
        epochs = getattr(spec.experiment.steps[-1].trainer, "max_iter", None)
        warmup = max(1, epochs // 4) if isinstance(epochs, int) and not spec.by_steps else 0
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if spec.pruner == "hyperband":
        trainer = spec.experiment.steps[-1].trainer
        epochs = getattr(trainer, "max_iter", None)
        searched = any(path.endswith("trainer.max_iter") for path in spec.space)
        maximum = epochs if isinstance(epochs, int) and not spec.by_steps and not searched else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=maximum)
    return optuna.pruners.NopPruner()


def retry_trial(study, trial) -> None:
    """Queue a failed trial's configuration again, as Optuna's ``RetryHeartbeatStaleTrialCallback`` does: a waiting
    trial with its parameters and intermediate values, recording the attempts in ``retry_history``. Also Optuna's
    heartbeat callback of this storage (for trials of workers that died)."""
    optuna = require_optuna()
    system = dict(trial.system_attrs)
    system.setdefault("failed_trial", trial.number)
    system["retry_history"] = list(system.get("retry_history", [])) + [trial.number]
    kept = {k: v for k, v in trial.user_attrs.items() if k not in ("worker", "stopped", "error", "trained")}
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=kept, system_attrs=system, intermediate_values=trial.intermediate_values))
    logger.info("trial %d of %s queued again (same configuration; its training resumes from its checkpoint)",
                trial.number, study.study_name)


def storage(heartbeat: bool = True):
    """The study storage of a search worker: Optuna's heartbeat on the job tables' settings
    (``NNTRANSFER_HEARTBEAT_*``), schema and tables created if missing. ``heartbeat=False``: for reading studies."""
    if not heartbeat:
        return open_storage(create=False)
    interval = max(1, round(store_jobs.HEARTBEAT_INTERVAL))
    with _quiet_experimental():
        return open_storage(heartbeat_interval=interval,
                            grace_period=max(2 * interval, round(store_jobs.HEARTBEAT_TIMEOUT)),
                            heartbeat_stale_trial_callback=retry_trial)


def open_study(spec: SearchSpec):
    """Create the study or join it; a study of another experiment, space or metric under this name is an error."""
    optuna = require_optuna()
    stored = storage()
    with db.advisory_lock(f"search:{make_hash(spec.study_name)[:16]}"):  # one process creates it, records what it is
        study = optuna.create_study(storage=stored, study_name=spec.study_name, direction=spec.direction,
                                    sampler=_sampler(spec), pruner=_pruner(spec), load_if_exists=True)
        recorded = study.user_attrs.get(ATTRIBUTE)
        if recorded is None:
            study.set_user_attr(ATTRIBUTE, spec.attributes())
        else:
            _check_same_search(spec, recorded, study)
            if recorded.get("n_trials") != spec.n_trials:
                study.set_user_attr(ATTRIBUTE, dict(recorded, n_trials=spec.n_trials))
    return study


def _check_same_search(spec: SearchSpec, recorded: dict, study) -> None:
    mine = spec.attributes()
    for what, name in (("base", "experiment"), ("space", "space"), ("metric", "metric")):
        if recorded.get(what) != mine[what]:
            raise ConfigError(f"the study {spec.study_name!r} searches another {name} ({what}: "
                              f"{json.dumps(recorded.get(what))[:200]}); choose another study_name (--study) for "
                              "this search, or search the same one")
    direction = study.direction.name.lower()
    if direction != spec.direction:
        raise ConfigError(f"the study {spec.study_name!r} was created to {direction} {spec.metric}; choose another "
                          "study_name (--study) to search the other way")


def load_study(study_name: str):
    """``(spec, study)`` of an existing study (a ConfigError names the studies there are if it does not exist)."""
    optuna = require_optuna()
    if not has_studies():
        raise ConfigError(f"no study named {study_name!r}: no search has run on this database ({storage_url()})")
    stored = storage(heartbeat=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=stored)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(stored, include_best_trial=False)]
        raise ConfigError(f"no study named {study_name!r} in {storage_url()}; studies: {', '.join(names) or 'none'}") \
            from None
    attrs = study.user_attrs.get(ATTRIBUTE)
    if attrs is None:
        raise ConfigError(f"the study {study_name!r} was not made by nntransfer search")
    return SearchSpec.from_attributes(attrs, study_name), study


def studies_of(experiments: Mapping) -> list[str]:
    """Names of the studies that search around any of ``experiments`` (none if Optuna or its tables are missing)."""
    try:
        if not has_studies():
            return []
        optuna = require_optuna()
    except ConfigError:
        return []
    wanted = {base_hash(exp) for exp in experiments.values()}
    found = []
    for summary in optuna.get_all_study_summaries(storage(heartbeat=False), include_best_trial=False):
        attrs = summary.user_attrs.get(ATTRIBUTE)
        if isinstance(attrs, dict) and attrs.get("base") in wanted:
            found.append(summary.study_name)
    return found


# -- the trials' states -------------------------------------------------------------------------------
def retried_numbers(trials) -> set[int]:
    """Numbers of failed trials that were queued again (a later trial carries them in its retry history)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def trial_state(trial, retried: set[int]) -> str:
    """One of :data:`STATES`."""
    name = trial.state.name.lower()
    if name == "fail":
        return "retried" if trial.number in retried else "failed"
    return name


def tally(trials) -> dict[str, int]:
    """How many trials are in each of :data:`STATES`, and ``counted``: those that use up the budget (a retried
    trial does not: the trial that replaced it does)."""
    retried = retried_numbers(trials)
    counts = dict.fromkeys(STATES, 0)
    for t in trials:
        counts[trial_state(t, retried)] += 1
    counts["counted"] = sum(counts[s] for s in STATES if s != "retried")
    return counts


# -- one search worker ----------------------------------------------------------------------------------
class TrialStop(StopToken):
    """The stop token of one trial's training: :meth:`prune` stops the trial; any other request (SIGTERM, Ctrl-C,
    ``request_stop``) stops the search worker too, and a stop of the worker reaches the trial."""

    def __init__(self, worker: StopToken):
        super().__init__()
        self.worker = worker
        self.pruned = ""

    def prune(self, reason: str) -> None:
        self.pruned = self.pruned or reason
        super().request(reason)

    def request(self, reason: str = "stop requested") -> None:
        self.worker.request(reason)
        super().request(reason)

    @property
    def requested(self) -> bool:
        return super().requested or self.worker.requested

    @property
    def reason(self) -> str:
        return super().reason or self.worker.reason


class _Reporter:
    """``on_evaluation`` of a trial's training: each validation of the searched step goes to Optuna, which may
    prune the trial."""

    def __init__(self, spec: SearchSpec, trial, key: dict, stop: TrialStop, reported: set):
        self.spec, self.trial, self.ident, self.stop, self.reported = spec, trial, key_ident(key), stop, reported

    def __call__(self, key: dict, info: dict) -> None:
        if key_ident(key) != self.ident or self.stop.pruned:
            return
        value = self.spec.evaluation_value(info)
        step = info.get("step") if self.spec.by_steps else info.get("epoch")
        if value is None or step is None or step in self.reported or not math.isfinite(value):
            return
        self.trial.report(value, int(step))
        self.reported.add(int(step))
        if self.trial.should_prune():
            unit = "step" if self.spec.by_steps else "epoch"
            self.stop.prune(f"trial {self.trial.number} pruned by the search at {unit} {step} "
                            f"({self.spec.metric} {value:.4g})")


class _Gate:
    """A lock in the database held while a worker decides whether to start a trial and Optuna creates (or takes)
    it: the workers of a study together start exactly its budget."""

    def __init__(self, name: str):
        self.name = name
        self._held: contextlib.ExitStack | None = None

    def __enter__(self) -> "_Gate":
        stack = contextlib.ExitStack()
        stack.enter_context(db.advisory_lock(f"search-gate:{make_hash(self.name)[:16]}"))
        self._held = stack
        return self

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            held.close()

    def __exit__(self, *exc) -> None:
        self.release()


class SearchWorker:
    """Runs trials of one study until its budget is used up and no trial of it is running anywhere."""

    def __init__(self, spec: SearchSpec, settings: WorkerSettings, stop: StopToken):
        self.spec, self.settings, self.stop = spec, settings, stop
        self.result = WorkResult()
        self.current: int | None = None
        self.study = None
        self.gate = _Gate(spec.study_name)

    def run(self) -> WorkResult:
        self.study = open_study(self.spec)
        while not self.stop.requested:
            with self.gate:
                self._fail_trials_of_dead_workers()
                counts = tally(self.study.get_trials(deepcopy=False))
                if counts["waiting"] or counts["counted"] < self.spec.n_trials:
                    self._one_trial()
                    continue
            if not counts["running"]:
                break
            time.sleep(self.settings.poll)  # others' trials run: wait, to take one over if its worker dies
        self.result.stopped = self.stop.requested
        return self.result

    def _one_trial(self) -> None:
        self.current = None
        try:
            self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
        except SearchStopped:
            self._retry_current()
        except KeyboardInterrupt:
            self._retry_current()
            raise
        except ConfigError:
            raise  # the search itself is wrong (e.g. no validation split): the trial stays failed
        except BaseException:
            self._retry_current()  # e.g. the database went away: the trial is not lost
            raise

    def _retry_current(self) -> None:
        if self.current is None:
            return
        trial = next((t for t in self.study.get_trials(deepcopy=False) if t.number == self.current), None)
        if trial is not None and trial.state.name == "FAIL":
            retry_trial(self.study, trial)

    def _fail_trials_of_dead_workers(self) -> None:
        """Running trials whose worker is gone fail and are queued again: at once when it ran on this machine (its
        process id), else once Optuna's heartbeat of the trial is older than its grace period."""
        optuna = require_optuna()
        with _quiet_experimental():
            optuna.storages.fail_stale_trials(self.study)  # Optuna does this before each trial; a waiting worker too
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker = trial.user_attrs.get("worker")
            if not isinstance(worker, dict) or not store_jobs.process_gone(worker):
                continue
            try:
                self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # finished meanwhile
            logger.warning("trial %d of %s was held by process %s on this machine, which is gone", trial.number,
                           self.spec.study_name, worker.get("pid"))
            failed = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            retry_trial(self.study, failed)

    # -- one trial --------------------------------------------------------------------------------
    def objective(self, trial) -> float:
        optuna = require_optuna()
        self.current = trial.number
        try:
            values = self.spec.suggest(trial)
            trial.set_user_attr("worker", store_jobs.this_process())
        finally:
            self.gate.release()  # the trial exists and has its configuration: others may start theirs
        try:
            exp = self.spec.experiment.replace(**values)
            description = self.spec.trial_description(trial.number, exp)
            targets = fill_tables({description: exp})
        except ConfigError as err:
            trial.set_user_attr("error", str(err)[:500])
            raise TrialFailed(f"trial {trial.number}: {err}") from None
        last = targets[-1]
        trial.set_user_attr("key", {k: last.key[k] for k in KEY_ATTRIBUTES if k in last.key})
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        reported = set(frozen.intermediate_values)  # a retried trial keeps the values of its earlier attempt
        stop = TrialStop(self.stop)
        outcome = work(targets, self.settings, stop, on_evaluation=_Reporter(self.spec, trial, last.key, stop,
                                                                               reported))
        self.result.trained += outcome.trained
        self.result.errors += outcome.errors
        trial.set_user_attr("trained", outcome.trained)
        if stop.pruned:
            raise optuna.TrialPruned(stop.pruned)
        if outcome.stopped or self.stop.requested:
            trial.set_user_attr("stopped", stop.reason)
            raise SearchStopped(stop.reason)
        return self._value(trial, targets, reported)

    def _value(self, trial, targets: list[Target], reported: set) -> float:
        found = states(targets, outputs=True)
        last = targets[-1]
        if found[last]["state"] != "done":
            failed = next((found[t] for t in targets if found[t]["state"] == "error"), found[last])
            message = (failed.get("error") or f"its last step is {found[last]['state']}").strip()
            trial.set_user_attr("error", message[:500])
            raise TrialFailed(f"trial {trial.number}: {message.splitlines()[0] if message else ''}")
        output = found[last]["output"]
        value = self.spec.result_value(found[last]["score"], output)
        # a result trained elsewhere (or before a resume) adds the evaluations Optuna has not heard of
        for step, stored in stored_curve(self.spec, output):
            if step not in reported:
                trial.report(stored, step)
                reported.add(step)
        tests = test_metrics(output)
        if tests:
            trial.set_user_attr("test", tests)
        return value


def stored_curve(spec: SearchSpec, output: Any) -> list[tuple[int, float]]:
    """``[(epoch or step, value)]`` of the searched metric during training, from a result's tracker history."""
    tracker = output.get("tracker") if isinstance(output, dict) else None
    if not isinstance(tracker, dict):
        return []
    log = tracker.get("log", {}).get("Validation", {})
    at = tracker.get("steps" if spec.by_steps else "epochs", {}).get("Validation", [])
    parts = parse_metric(spec.metric)
    if parts is None:
        objective = getattr(spec.experiment.steps[-1].trainer, "stop_metric", None)
        series = [v[objective] for v in log.values() if objective in v]
        if not series or any(len(s) != len(at) for s in series):
            return []
        values = [sum(column) / len(column) for column in zip(*series)]  # the trainer's score: mean over tasks
    else:
        values = list(log.get(parts[0], {}).get(parts[1], []))
        if len(values) != len(at):
            return []
    return [(int(step), float(value)) for step, value in zip(at, values) if math.isfinite(value)]


def search_worker(spec: SearchSpec, settings: WorkerSettings, stop: StopToken | None = None) -> WorkResult:
    """One search worker in this process: runs trials of ``spec``'s study until its budget is used up (see the
    module's docs). SIGTERM/Ctrl-C stop it gracefully; the result says ``stopped``."""
    from ..runner.signals import stop_on_signals

    stop = stop or StopToken()
    with stop, stop_on_signals(stop):
        return SearchWorker(spec, settings, stop).run()


def run_search(spec: SearchSpec, settings: WorkerSettings, stop: StopToken | None = None) -> WorkResult:
    """``settings.workers`` search workers on this machine (this process and, for more, local processes)."""
    return run_locally(functools.partial(search_worker, spec), settings, stop)


def submit_search(spec: SearchSpec, settings: WorkerSettings, jobs: int = 1, **slurm) -> list:
    """Submit ``jobs`` search workers of ``spec``'s study through submitit (``slurm``: the options of
    :func:`~nntransfer.orchestration.slurm.submit_workers`); they need the shared server the study lives in."""
    from .slurm import submit_workers

    return submit_workers([], settings, jobs=jobs, task=functools.partial(search_worker, spec),
                          name="nntransfer-search", **slurm)


# -- what a study holds ---------------------------------------------------------------------------------
@dataclass
class TrialRecord:
    """One trial as an experiment: its number, state, value, configuration (``values``: path -> config value)."""

    study: str
    number: int
    state: str
    value: float | None
    values: dict
    description: Description | None = None
    experiment: Any = None
    intermediate: dict = field(default_factory=dict)
    user_attrs: dict = field(default_factory=dict)
    duration: float | None = None


def trial_records(spec: SearchSpec, study) -> list[TrialRecord]:
    """Every trial with a configuration (queued copies of retried trials without one are left out)."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    out = []
    for t in trials:
        if set(t.params) != set(spec.space):
            continue  # a trial that never got its configuration (e.g. it failed while sampling)
        exp = spec.trial_experiment(t.params)
        out.append(TrialRecord(spec.study_name, t.number, trial_state(t, retried), t.value, spec.decode(t.params),
                               spec.trial_description(t.number, exp), exp, dict(t.intermediate_values),
                               dict(t.user_attrs), t.duration.total_seconds() if t.duration else None))
    return out


def trial_experiments(experiments: Mapping) -> tuple[dict, dict]:
    """The trials of the studies around ``experiments`` as experiments: ``({description: experiment},
    {description: TrialRecord})`` (empty without studies); ``status`` and ``results`` show them with the recipe's."""
    found, records = {}, {}
    for name in studies_of(experiments):
        spec, study = load_study(name)
        for record in trial_records(spec, study):
            if record.state == "retried":
                continue  # its retry, a later trial, is the same configuration
            found[record.description] = record.experiment
            records[record.description] = record
    return found, records


@dataclass
class SearchStatus:
    """A study's progress and its best trial (see :func:`search_status`)."""

    study: str
    storage: str
    metric: str
    direction: str
    n_trials: int
    counts: dict
    best: TrialRecord | None
    spec: SearchSpec
    trials: list = field(default_factory=list)
    #: what the search that returned this did here (trained steps, failed trials, stopped), when one did
    run: WorkResult | None = None


def search_status(study_name: str) -> SearchStatus:
    """Trials complete / pruned / running / waiting / failed / retried, and the best complete trial so far."""
    spec, study = load_study(study_name)
    trials = study.get_trials(deepcopy=False)
    counts = tally(trials)
    records = trial_records(spec, study)
    complete = [r for r in records if r.state == "complete" and r.value is not None]
    best = None
    if complete:
        pick = max if spec.direction == "maximize" else min
        best = pick(complete, key=lambda r: r.value)
    return SearchStatus(study_name, storage_url(), spec.metric, spec.direction,
                        study.user_attrs[ATTRIBUTE].get("n_trials", spec.n_trials), counts, best, spec, records)


def set_overrides(values: Mapping) -> list[str]:
    """``--set`` arguments that give an experiment these values (exactly: floats as Python writes them)."""
    return [f"{path}={json.dumps(value)}" for path, value in values.items()]


def recipe_snippet(spec: SearchSpec, record: TrialRecord) -> str:
    """Python for a recipe that adds the trial's configuration as an experiment of its own."""
    table = "transfer_experiments" if isinstance(spec.experiment, TransferExperiment) else "experiments"
    base = spec.description
    lines = [f"{table}[Description({(base.name + ' (best of search)')!r}, {record.experiment.seed})] = "
             f"{table}[Description({base.name!r}, {base.seed})].replace(**{{"]
    lines += [f"    {path!r}: {value!r}," for path, value in record.values.items()]
    lines.append("})")
    return "\n".join(lines)


__all__ = ["PRUNERS", "SAMPLERS", "STATES", "SearchSpec", "SearchStatus", "SearchStopped", "SearchWorker",
           "TrialFailed", "TrialRecord", "TrialStop", "base_hash", "default_direction", "load_study", "make_spec",
           "open_study", "parse_metric", "read_space", "recipe_snippet", "retry_trial", "run_search",
           "search_status", "search_worker", "set_overrides", "stored_curve", "studies_of", "submit_search", "tally",
           "trial_experiments", "trial_records"]
