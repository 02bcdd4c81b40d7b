"""TrainedModel (nnfabrik layout) and the Checkpoint table used to resume interrupted training.

Training runs in DataJoint's three-part make: ``make_fetch`` reads the configs, ``make_compute``
trains outside any transaction (checkpoints are committed as they are written, and the connection
is pinged every epoch), ``make_insert`` writes the result in one short transaction.
"""
from __future__ import annotations

import inspect
import io
import logging
import time

import datajoint as dj

from .. import provenance
from ..compat import make_hash
from ..configs.base import resolve_import_path
from ..configs.errors import ConfigError
from .nnfabrik import Dataset, Fabrikant, Model, Seed, Trainer
from .schema import schema

logger = logging.getLogger(__name__)


class TorchStateCodec(dj.Codec):
    """``<torchstate@store>``: tensors and plain containers via ``torch.save``; loaded with ``weights_only=True``."""

    name = "torchstate"

    def get_dtype(self, is_store: bool) -> str:
        return "<hash>" if is_store else "bytes"

    def encode(self, value, *, key=None, store_name=None) -> bytes:
        import torch

        buffer = io.BytesIO()
        torch.save(value, buffer)
        return buffer.getvalue()

    def decode(self, stored: bytes, *, key=None):
        import torch

        # weights_only: stored bytes must never execute code
        return torch.load(io.BytesIO(stored), map_location="cpu", weights_only=True)


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
    """The trainer's CheckpointStore on the Checkpoint table, for one entry being trained."""

    def __init__(self, target_table: str, key: dict):
        self.ident = {"target_table": target_table, "key_hash": make_hash(dict(key))}
        self.key = dict(key)

    def _rows(self):
        return Checkpoint & self.ident

    def latest(self):
        rows = self._rows()
        if not rows:
            return None
        epoch = max(rows.to_arrays("epoch"))
        return (rows & {"epoch": int(epoch)}).fetch1("state")

    def save(self, epoch: int, score: float, state: dict) -> None:
        # Committed on its own (training runs outside make's transaction): it must survive a crash.
        row = dict(self.ident, epoch=int(epoch), score=float(score), state=state, target_key=self.key)
        with Checkpoint.connection.transaction:
            (Checkpoint & dict(self.ident, epoch=int(epoch))).delete_quick()
            Checkpoint.insert1(row)

    def prune(self, keep_last_n: int, keep_best_n: int) -> None:
        rows = self._rows().to_dicts(order_by="epoch")
        if not rows:
            return
        epochs = [r["epoch"] for r in rows]
        keep = set(epochs[-keep_last_n:]) if keep_last_n > 0 else set()
        if keep_best_n > 0:
            best = sorted(rows, key=lambda r: r["score"], reverse=True)[:keep_best_n]
            keep |= {r["epoch"] for r in best}
        for epoch in epochs:
            if epoch not in keep:
                (Checkpoint & dict(self.ident, epoch=epoch)).delete_quick()

    def clear(self) -> None:
        self._rows().delete_quick()


class TrainedModelBase:
    """Shared make / load logic of TrainedModel and TransferredTrainedModel."""

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
        from .. import db

        seed = int(key["seed"])
        dataloaders, model = self.build(key, dataset_fn, dataset_config, model_fn, model_config, extra)
        trainer = resolve_import_path(trainer_fn, what="trainer_fn")
        store = TableCheckpointStore(self.table_name, key)
        connection = db.connection()

        def keep_alive(*_args, **_kwargs):
            connection.ping()  # long epochs must not let the server drop the connection

        # called as nnfabrik calls a trainer; only trainers that name `checkpoints` get the store
        extra = {"checkpoints": store} if _takes_keyword(trainer, "checkpoints") else {}
        started = time.perf_counter()
        score, output, model_state = trainer(model=model, dataloaders=dataloaders, seed=seed, uid=dict(key),
                                             cb=keep_alive, **extra, **trainer_config)
        if trainer_config.get("data_transfer") and self.stores_transfer_data:
            if not isinstance(output, dict):
                raise ConfigError(f"data_transfer=True needs a trainer that returns a dict output; {trainer_fn} "
                                  f"returned a {type(output).__name__}")
            if "transfer_data" not in output:
                from ..transfer import generate_transfer_data

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
