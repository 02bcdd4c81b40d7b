"""Transfer steps: recipe rows chain experiments; TransferredTrainedModel trains them in order.

A ``TrainedModelTransferRecipe`` row is one step of a transfer experiment: its own key
(``transfer_step``, dataset/model/trainer keys, seed, ``collapsed_history``) and the full key of
the step before it (``prev_*``, null for step 0). ``TransferredTrainedModel``'s key source is
the recipe restricted to steps whose previous step is trained, so step n+1 only becomes
populatable once step n exists.
"""
from __future__ import annotations

import datajoint as dj

from .codec import private_writes
from .nnfabrik import Dataset, Fabrikant, Model, Seed, Trainer  # noqa: F401  (referenced by the definitions)
from .schema import schema
from .trained_model import PROVENANCE_DEFINITION, TrainedModelBase

# key attribute -> name of the same attribute of the previous step
PREV = {
    "transfer_step": "prev_transfer_step",
    "model_fn": "prev_model_fn",
    "model_hash": "prev_model_hash",
    "dataset_fn": "prev_dataset_fn",
    "dataset_hash": "prev_dataset_hash",
    "trainer_fn": "prev_trainer_fn",
    "trainer_hash": "prev_trainer_hash",
    "seed": "prev_seed",
    "collapsed_history": "prev_collapsed_history",
}


@schema
class TrainedModelTransferRecipe(dj.Manual):
    definition = """
    # one step of a transfer experiment and the step it starts from
    transfer_step: int32
    -> Model
    -> Dataset
    -> Trainer
    -> Seed
    collapsed_history: char(32)      # hash of the keys of all previous steps
    ---
    prev_transfer_step=null: int32
    -> [nullable] Model.proj(prev_model_fn='model_fn', prev_model_hash='model_hash')
    -> [nullable] Dataset.proj(prev_dataset_fn='dataset_fn', prev_dataset_hash='dataset_hash')
    -> [nullable] Trainer.proj(prev_trainer_fn='trainer_fn', prev_trainer_hash='trainer_hash')
    -> [nullable] Seed.proj(prev_seed='seed')
    prev_collapsed_history=null: char(32)
    """

    def add_entry(self, key: dict, prev_key: dict | None) -> None:
        row = dict(key)
        if prev_key is not None:
            row.update({PREV[k]: v for k, v in prev_key.items() if k in PREV})
        self.insert1(row, skip_duplicates=True)

    def previous(self, key: dict) -> dict | None:
        """The full key of the step before ``key`` (None for step 0)."""
        row = (self & _own_key(key)).fetch1()
        if row["prev_transfer_step"] is None:
            return None
        return {k: row[p] for k, p in PREV.items()}


def _own_key(key: dict) -> dict:
    return {k: key[k] for k in PREV}


@schema
class TransferredTrainedModel(TrainedModelBase, dj.Computed):
    definition = """
    -> TrainedModelTransferRecipe
    ---
    comment="":                     varchar(768)
    score:                          float64
    output:                         <blob>
    -> Fabrikant
    transferredtrainedmodel_ts=CURRENT_TIMESTAMP: datetime
    """

    class ModelStorage(dj.Part):
        definition = """
        -> master
        ---
        model_state: <torchstate@nntransfer>
        """

    class Provenance(dj.Part):
        definition = PROVENANCE_DEFINITION

    class TransferData(dj.Part):
        definition = """
        # data a step generated for later steps (e.g. logits per training example)
        -> master
        ---
        transfer_data: <blob@nntransfer>
        """

    @property
    def key_source(self):
        previous_done = TransferredTrainedModel.proj(**{p: k for k, p in PREV.items()})
        recipe = TrainedModelTransferRecipe()
        # prev_* attributes are plain columns, so the lineage check cannot match them: skip it.
        return recipe.restrict(["transfer_step = 0", previous_done], semantic_check=False).proj()

    # -- what a step gets from earlier steps ------------------------------------------------------
    def earlier_steps(self, key) -> tuple:
        """(previous step's key or None, key of the nearest earlier step with transfer data or None)."""
        previous = TrainedModelTransferRecipe().previous(key)
        data_source = previous
        while data_source is not None and not (self.TransferData & data_source):
            data_source = TrainedModelTransferRecipe().previous(data_source)
        return previous, data_source

    def handover(self, spec, previous, data_source):
        """The previous step's parameters (unless ``transfer_parameters=False``), the nearest earlier step's data and a
        way to build the previous step's trained model."""
        from ..runner import Handover
        from ..runner.steps import starts_from_previous

        state = (self.ModelStorage & previous).fetch1("model_state") \
            if previous is not None and starts_from_previous(spec.trainer_config) else None
        data = (self.TransferData & data_source).fetch1("transfer_data") if data_source is not None else None
        # a teacher (RDL, online distillation) is the previous step's trained model, built only when a module asks
        teacher = (lambda: self.load_model(previous, include_dataloader=False)) if previous is not None else None
        return Handover(model_state=state, transfer_data=data, previous_model=teacher)

    stores_transfer_data = True

    def insert_extra(self, key, transfer_data) -> None:
        if transfer_data is not None:
            with private_writes():
                self.TransferData.insert1(dict(key, transfer_data=transfer_data))


TransferData = TransferredTrainedModel.TransferData


# nnfabrik keeps one recipe table per kind of change between steps. Here every step stores its full key
# and its predecessor's, so those kinds are views of the one recipe table (named like nnfabrik's tables).
def _changed_only(*parts: str):
    same = [f"{p}_{a} = prev_{p}_{a}" for p in ("dataset", "model", "trainer") if p not in parts for a in ("fn", "hash")]
    return TrainedModelTransferRecipe() & "transfer_step > 0" & dj.AndList(same)


def DatasetTransferRecipe():  # noqa: N802 - named like the nnfabrik table it stands for
    """Transfer steps that change the dataset and keep model and trainer."""
    return _changed_only("dataset")


def ModelTransferRecipe():  # noqa: N802
    """Transfer steps that change the model and keep dataset and trainer."""
    return _changed_only("model")


def TrainerTransferRecipe():  # noqa: N802
    """Transfer steps that change the trainer and keep dataset and model."""
    return _changed_only("trainer")
