"""TrainedModel (nnfabrik layout) and the Checkpoint table used to resume interrupted training.

Training runs in DataJoint's three-part make: ``make_fetch`` reads the configs, ``make_compute``
trains outside any transaction (checkpoints are committed as they are written; the trainer's ``cb``
keeps the connection alive and stops a copy whose reservation was taken over; SIGTERM/SIGINT ask the
trainer to checkpoint and stop, and the job is then released, see :mod:`nntransfer.store.jobs`),
``make_insert`` writes the result in one short transaction and drops the entry's checkpoint rows (their files
go once it has committed). The step itself is built and trained by :func:`nntransfer.runner.train_step`, as in
memory; the runner (torch) is imported when a step is trained or loaded, so that reading the tables (``status``,
results) stays fast.
"""
from __future__ import annotations

import logging

import datajoint as dj

from ..core.compat import make_hash
from ..core.keys import key_ident
from . import internals
from .codec import (
    StoredState,
    TorchStateCodec,
    UnreadableState,
    delete_files,
    referenced_paths,
    state_path,
    write_state,
    written_on_insert,
)
from .db import STORE
from .jobs import JobSession, _JobsDescriptor, keep_alive, reporting_evaluations
from .nnfabrik import Dataset, Fabrikant, Model, Seed, Trainer  # noqa: F401  (Seed: referenced by the definition)
from .schema import schema

__all__ = ["Checkpoint", "PROVENANCE_COLUMNS", "TableCheckpointStore", "TorchStateCodec", "TrainedModel",
           "TrainedModelBase", "clear_checkpoints"]

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
            if internals.in_transaction(Checkpoint.connection):  # part of make_insert: a lost connection loses it all
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
        written = write_state(state, path, STORE, internals.connection_config(Checkpoint.connection))
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
        from ..trainer.checkpointing import _choose

        rows = self._locked(lambda: self._rows().proj("score").to_dicts(order_by="epoch"))
        keep = _choose([(r["epoch"], r["score"]) for r in rows], keep_last_n, keep_best_n)
        drop = [r["epoch"] for r in rows if r["epoch"] not in keep]
        if drop:
            self._delete(self._rows() & [{"epoch": e} for e in drop])

    def clear(self) -> None:
        delete_files(self.drop_rows())

    def drop_rows(self) -> list[tuple[str, str | None]]:
        """Delete this entry's checkpoint rows; returns their files, for the caller to delete when it may (inside
        ``make_insert``'s transaction: only after the commit)."""
        return self._drop(self._rows())

    def _delete(self, rows) -> None:
        delete_files(self._drop(rows))

    def _drop(self, rows) -> list[tuple[str, str | None]]:
        def drop():
            paths = referenced_paths(rows, "state")
            rows.delete_quick()
            return paths

        return self._locked(drop)


def clear_checkpoints(target_table: str, keys: list[dict]) -> int:
    """Delete the checkpoints (rows and files) of these entries; returns how many were dropped."""
    count = 0
    for key in keys:
        store = TableCheckpointStore(target_table, key)
        count += len(store._rows())
        store.clear()
    return count


# the provenance part table of both result tables: one column per value that runner.provenance.collect records
PROVENANCE_DEFINITION = """
# versions, code, machine and time that made this result
-> master
---
nntransfer_version:         varchar(32)
python_version:             varchar(32)
torch_version:              varchar(32)
torchvision_version="":     varchar(32)
datajoint_version:          varchar(32)
numpy_version:              varchar(32)
recipe="":                  varchar(255)   # recipe file (or script) the experiment came from
git_repository="":          varchar(255)   # top folder of the git repository holding the recipe
git_commit="":              varchar(40)    # HEAD commit of that repository ("" outside one)
git_dirty=null:             bool           # uncommitted changes to tracked files, or the recipe not committed
host:                       varchar(255)
device:                     varchar(255)   # e.g. "cpu" or "cuda:1 (NVIDIA H100 80GB HBM3)"
wall_time:                  float64        # seconds of training (make_compute)
"""


#: the provenance columns besides the key, in table order (``runner.provenance.collect`` records exactly these)
PROVENANCE_COLUMNS = tuple(line.split(":")[0].split("=")[0].strip()
                           for line in PROVENANCE_DEFINITION.split("---")[1].strip().splitlines())


class TrainedModelBase:
    """Shared make / load logic of TrainedModel and TransferredTrainedModel.

    Whoever populates a table instance may set ``table.session`` (a :class:`~nntransfer.store.jobs.JobSession`:
    stop token, retries, run settings, recipe, heartbeat); a plain ``populate`` gets a default session.
    """

    jobs = _JobsDescriptor()  # DataJoint's job table with heartbeats, conditional releases and retries

    @property
    def session(self) -> JobSession:
        if "_session" not in self.__dict__:
            self._session = JobSession()
        return self._session

    @session.setter
    def session(self, session: JobSession) -> None:
        self._session = session

    # -- the three-part make ----------------------------------------------------------------------
    def make_fetch(self, key):
        """The step's builders and configs, and the keys of the earlier steps it starts from (transfer steps)."""
        configs = {}
        for part, table in (("dataset", Dataset), ("model", Model), ("trainer", Trainer)):
            configs[f"{part}_fn"], configs[f"{part}_config"] = (table & key).fn_config
        return configs, *self.earlier_steps(key)

    def earlier_steps(self, key) -> tuple:
        """(key of the step whose parameters this one starts from, key of the step whose data it gets); transfer
        steps override it."""
        return None, None

    def make_compute(self, key, configs, previous, data_source):
        from ..runner import StepSpec, train_step

        session = self.session
        spec = StepSpec(dict(key), **configs).with_run_settings(session.run_settings.get(key_ident(key)))
        cb = keep_alive(self, key)
        if session.on_evaluation is not None:
            cb = reporting_evaluations(cb, session.on_evaluation, key)
        result = train_step(spec, self.handover(spec, previous, data_source),
                            checkpoints=TableCheckpointStore(self.table_name, key), cb=cb,
                            stop=session.stop, keep_transfer_data=self.stores_transfer_data, recipe=session.recipe)
        output = result.output
        if isinstance(output, dict) and session.run_settings.get(key_ident(key)):
            output = dict(output, run_settings=session.run_settings[key_ident(key)])  # what this run used
        return result.score, output, result.model_state, result.transfer_data, result.provenance

    def make_insert(self, key, score, output, model_state, transfer_data, run_provenance):
        if isinstance(output, dict) and "transfer_data" in output:  # a trainer's own, on a table that keeps none
            output = {k: v for k, v in output.items() if k != "transfer_data"}
            transfer_data = transfer_data if transfer_data is not None else output.get("transfer_data")
        written = []  # the state files the inserts write: if the transaction rolls back, no row references them
        token = written_on_insert.set(written)
        try:
            self.insert1(dict(key, score=score, output=output, comment=self.comment_for(key),
                              fabrikant_name=Fabrikant.get_current_user()))
            self.ModelStorage.insert1(dict(key, model_state=model_state))
            self.insert_extra(key, transfer_data)
            self.Provenance.insert1(dict(key, **run_provenance))
            # The checkpoint rows go with this transaction; their files only once it has committed (the session
            # deletes them when the job completes; files of a crash in between are unreferenced, for `nntransfer db
            # gc`). A failed commit keeps rows and files: the job resumes from its last checkpoint.
            self.session.delete_after_commit(TableCheckpointStore(self.table_name, key).drop_rows())
        finally:
            written_on_insert.reset(token)
            self.session.delete_on_rollback(written)

    stores_transfer_data = False

    def handover(self, spec, previous, data_source):
        """What earlier steps hand to this one (a :class:`~nntransfer.runner.Handover`; transfer steps override it)."""
        from ..runner import Handover

        return Handover()

    def insert_extra(self, key, transfer_data) -> None:
        if transfer_data is not None:
            logger.warning("%s does not keep transfer_data; run the experiment as a TransferExperiment step",
                           type(self).__name__)

    def comment_for(self, key) -> str:
        parts = [(Model & key).fetch1("model_comment"), (Dataset & key).fetch1("dataset_comment"),
                 (Trainer & key).fetch1("trainer_comment")]
        return ".".join(p for p in parts if p)[:768]

    # -- loading --------------------------------------------------------------------------------
    def load_model(self, key: dict | None = None, include_dataloader: bool = True):
        """Rebuild dataloaders and model of a trained entry with its trained weights.

        Returns ``(dataloaders, model)`` (or just the model with ``include_dataloader=False``).
        """
        entry = self & key if key is not None else self
        if len(entry) != 1:
            raise ValueError(f"load_model needs a key matching exactly one trained model; {len(entry)} match {key}")
        from ..runner import StepSpec, build

        full_key = entry.keys()[0]
        configs, previous, data_source = self.make_fetch(full_key)
        spec = StepSpec(dict(full_key), **configs)
        handover = self.handover(spec, previous, data_source)
        handover.model_state = None  # the trained weights replace any starting point
        dataloaders, model = build(spec, handover)
        model.load_state_dict((self.ModelStorage & full_key).fetch1("model_state"))
        return (dataloaders, model) if include_dataloader else model


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
        definition = PROVENANCE_DEFINITION

