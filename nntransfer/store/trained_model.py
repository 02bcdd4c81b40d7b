"""TrainedModel (nnfabrik layout) and the Checkpoint table used to resume interrupted training.

Training runs in DataJoint's three-part make: ``make_fetch`` reads the configs, ``make_compute``
trains outside any transaction (checkpoints are committed as they are written; the trainer's ``cb``
keeps the connection alive and stops a copy whose reservation was taken over; SIGTERM/SIGINT ask the
trainer to checkpoint and stop, and the job is then released, see :mod:`nntransfer.store.jobs`),
``make_insert`` writes the result in one short transaction and drops the entry's checkpoints (rows and
files).
"""
from __future__ import annotations

import inspect
import logging
import time

import datajoint as dj

from ..runner import provenance
from ..core.compat import make_hash
from ..core.config import resolve_import_path
from ..errors import ConfigError
from .db import STORE
from ..trainer.checkpointing import _choose
from .nnfabrik import Dataset, Fabrikant, Model, Seed, Trainer
from .jobs import _JobsDescriptor, keep_alive
from .schema import schema
from .codec import StoredState, TorchStateCodec, UnreadableState, delete_files, referenced_paths, state_path, \
    write_state

__all__ = ["Checkpoint", "TableCheckpointStore", "TorchStateCodec", "TrainedModel", "TrainedModelBase",
           "clear_checkpoints"]

logger = logging.getLogger(__name__)


@schema
class Checkpoint(dj.Manual):
    definition = """
    # training state saved every few epochs, so that a restarted job resumes
    target_table: varchar(64)        # the computed table that is being populated
    key_hash: char(32)               # make_hash of that table's full primary key
    epoch: int32
    ---
    score: float64                   # validation score at this epoch
    state: <torchstate@nntransfer>   # model, optimizer, scheduler, tracker, RNG states, ...
    target_key: <blob>               # the full key, for inspection
    checkpoint_ts=CURRENT_TIMESTAMP: datetime
    """


class TableCheckpointStore:
    """The trainer's CheckpointStore on the Checkpoint table, for one entry being trained.

    Thread-safe: the trainer may save and prune from a background thread while its main thread calls the
    keep-alive callback. The state file is written outside any lock, straight to its place in the store;
    only the row's insert (and deletes) hold :data:`nntransfer.store.db.lock`. Every row deleted here takes its
    file with it. Lost connections are re-opened and the row written again.
    """

    def __init__(self, target_table: str, key: dict):
        from . import bind

        bind()
        self.ident = {"target_table": target_table, "key_hash": make_hash(dict(key))}
        self.key = dict(key)

    def _rows(self):
        return Checkpoint & self.ident

    def _locked(self, fn):
        from . import db

        with db.lock:
            if Checkpoint.connection._in_transaction:  # part of make_insert: a lost connection loses it all
                return fn()
            return db.retrying(fn, Checkpoint.connection, "the database (checkpoints)")

    def latest(self):
        """The newest readable state; unreadable ones are skipped with a warning (the next older one is used)."""
        epochs = sorted(self._locked(lambda: list(self._rows().to_arrays("epoch"))), reverse=True)
        for epoch in epochs:
            try:
                return self._locked(lambda: (self._rows() & {"epoch": int(epoch)}).fetch1("state"))
            except UnreadableState as err:
                logger.warning("skipping the checkpoint of epoch %d: %s", epoch, err)
        return None

    def save(self, epoch: int, score: float, state: dict) -> None:
        # Committed on its own (training runs outside make's transaction): it must survive a crash.
        row_key = dict(self.ident, epoch=int(epoch))
        path = state_path(Checkpoint(), "state", row_key, STORE)
        written = write_state(state, path, STORE, Checkpoint.connection._config)
        row = dict(row_key, score=float(score), state=StoredState(written), target_key=self.key)

        def replace():
            with Checkpoint.connection.transaction:
                if Checkpoint.connection.adapter.backend == "postgresql":
                    # a checkpoint is a resume point, not a result: don't wait for the WAL flush (~0.1 s
                    # per commit on a busy disk); a server crash just then costs this checkpoint, not data
                    Checkpoint.connection.query("SET LOCAL synchronous_commit TO OFF")
                replaced = referenced_paths(Checkpoint & row_key, "state")
                (Checkpoint & row_key).delete_quick()
                Checkpoint.insert1(row)
            return replaced

        try:
            replaced = self._locked(replace)
        except BaseException:
            delete_files([(path, STORE)])  # no row references it
            raise
        delete_files([p for p in replaced if p[0] != path])

    def prune(self, keep_last_n: int, keep_best_n: int) -> None:
        rows = self._locked(lambda: self._rows().proj("score").to_dicts(order_by="epoch"))
        keep = _choose([(r["epoch"], r["score"]) for r in rows], keep_last_n, keep_best_n)
        drop = [r["epoch"] for r in rows if r["epoch"] not in keep]
        if drop:
            self._delete(self._rows() & [{"epoch": e} for e in drop])

    def clear(self) -> None:
        self._delete(self._rows())

    def _delete(self, rows) -> None:
        def delete():
            paths = referenced_paths(rows, "state")
            rows.delete_quick()
            return paths

        delete_files(self._locked(delete))


def clear_checkpoints(target_table: str, keys: list[dict]) -> int:
    """Delete the checkpoints (rows and files) of these entries; returns how many were dropped."""
    count = 0
    for key in keys:
        store = TableCheckpointStore(target_table, key)
        count += len(store._rows())
        store.clear()
    return count


class TrainedModelBase:
    """Shared make / load logic of TrainedModel and TransferredTrainedModel."""

    jobs = _JobsDescriptor()  # DataJoint's job table with heartbeats, conditional releases and retries

    # -- the three-part make ----------------------------------------------------------------------
    def make_fetch(self, key):
        dataset_fn, dataset_config = (Dataset & key).fn_config
        model_fn, model_config = (Model & key).fn_config
        trainer_fn, trainer_config = (Trainer & key).fn_config
        return (dataset_fn, dataset_config, model_fn, model_config, trainer_fn, trainer_config) + self.extra_fetch(key)

    def extra_fetch(self, key) -> tuple:
        """Further inputs of a training job (transfer steps add the previous step's results)."""
        return ()

    def make_compute(self, key, dataset_fn, dataset_config, model_fn, model_config, trainer_fn, trainer_config, *extra):
        from ..runner.signals import stop_on_signals

        seed = int(key["seed"])
        dataloaders, model = self.build(key, dataset_fn, dataset_config, model_fn, model_config, extra)
        trainer = resolve_import_path(trainer_fn, what="trainer_fn")
        store = TableCheckpointStore(self.table_name, key)
        # called as nnfabrik calls a trainer; only trainers that name `checkpoints` get the store. cb keeps the
        # connection alive during long epochs and stops a copy whose reservation was taken over; SIGTERM/SIGINT
        # ask the trainer to checkpoint and stop (the job is then released, not failed)
        extra = {"checkpoints": store} if _takes_keyword(trainer, "checkpoints") else {}
        started = time.perf_counter()
        with stop_on_signals():
            score, output, model_state = trainer(model=model, dataloaders=dataloaders, seed=seed, uid=dict(key),
                                                 cb=keep_alive(self, key), **extra, **trainer_config)
        if trainer_config.get("data_transfer") and self.stores_transfer_data:
            if not isinstance(output, dict):
                raise ConfigError(f"data_transfer=True needs a trainer that returns a dict output; {trainer_fn} "
                                  f"returned a {type(output).__name__}")
            if "transfer_data" not in output:
                from ..runner.transfer import generate_transfer_data

                model.load_state_dict(model_state)
                output = dict(output, transfer_data=generate_transfer_data(model, dataloaders))
        return float(score), output, model_state, provenance.collect(model, time.perf_counter() - started)

    def make_insert(self, key, score, output, model_state, run_provenance):
        transfer_data = None
        if isinstance(output, dict) and "transfer_data" in output:  # any other output is stored as it is
            output = dict(output)
            transfer_data = output.pop("transfer_data")
        self.insert1(dict(key, score=score, output=output, comment=self.comment_for(key),
                          fabrikant_name=Fabrikant.get_current_user()))
        self.ModelStorage.insert1(dict(key, model_state=model_state))
        self.insert_extra(key, transfer_data)
        self.Provenance.insert1(dict(key, **run_provenance))
        TableCheckpointStore(self.table_name, key).clear()

    stores_transfer_data = False

    def insert_extra(self, key, transfer_data) -> None:
        if transfer_data is not None:
            logger.warning("%s does not keep transfer_data; run the experiment as a TransferExperiment step",
                           type(self).__name__)

    def comment_for(self, key) -> str:
        parts = [(Model & key).fetch1("model_comment"), (Dataset & key).fetch1("dataset_comment"),
                 (Trainer & key).fetch1("trainer_comment")]
        return ".".join(p for p in parts if p)[:768]

    # -- building and loading -------------------------------------------------------------------
    def build(self, key, dataset_fn, dataset_config, model_fn, model_config, extra):
        """Dataloaders and model of an entry, as its training starts."""
        seed = int(key["seed"])
        loader = resolve_import_path(dataset_fn, what="dataset_fn")
        dataloaders = loader(seed=seed, **dataset_config, **self.loader_inputs(extra))
        model = resolve_import_path(model_fn, what="model_fn")(dataloaders, seed=seed, **model_config)
        self.initialise(model, key, extra)
        return dataloaders, model

    def loader_inputs(self, extra: tuple) -> dict:
        """Keyword arguments for the dataset loader beyond its config (transfer steps: transfer data)."""
        return {}

    def initialise(self, model, key, extra: tuple) -> None:
        """Set the model's starting parameters beyond its builder (transfer steps: the previous step's)."""

    def load_model(self, key: dict | None = None, include_dataloader: bool = True):
        """Rebuild dataloaders and model of a trained entry with its trained weights.

        Returns ``(dataloaders, model)`` (or just the model with ``include_dataloader=False``).
        """
        entry = self & key if key is not None else self
        if len(entry) != 1:
            raise ValueError(f"load_model needs a key matching exactly one trained model; {len(entry)} match {key}")
        full_key = entry.keys()[0]
        fetched = self.make_fetch(full_key)
        dataloaders, model = self.build(full_key, *fetched[:4], fetched[6:])
        model.load_state_dict((self.ModelStorage & full_key).fetch1("model_state"))
        return (dataloaders, model) if include_dataloader else model


def _takes_keyword(fn, name: str) -> bool:
    """Whether ``fn`` declares a parameter ``name`` (a ``**kwargs`` catch-all does not count)."""
    try:
        parameter = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


@schema
class TrainedModel(TrainedModelBase, dj.Computed):
    definition = """
    -> Model
    -> Dataset
    -> Trainer
    -> Seed
    ---
    comment="":                     varchar(768)   # short description
    score:                          float64        # main score (see the trainer's docs)
    output:                         <blob>         # tracker history and test results
    -> Fabrikant
    trainedmodel_ts=CURRENT_TIMESTAMP: datetime    # time of insertion
    """

    class ModelStorage(dj.Part):
        definition = """
        -> master
        ---
        model_state: <torchstate@nntransfer>   # trained parameters (state_dict)
        """

    class Provenance(dj.Part):
        definition = provenance.DEFINITION
