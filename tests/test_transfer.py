"""Parameter and data transfer between steps, with the real digits data, LeNet and trainer."""
import numpy as np
import torch

from nntransfer import Description, Experiment, TransferExperiment, run
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
from toy_pipeline import ToyData, ToyModel, ToyTrainer


def test_frozen_core_keeps_the_transferred_parameters(clean_db):
    data_a = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=32)
    data_b = ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], batch_size=32)
    lenet = ModelConfig(type="lenet")
    tex = TransferExperiment([
        Experiment(data_a, lenet, TrainerConfig(max_iter=2, verbose=False), 1),
        Experiment(data_b, lenet, TrainerConfig(max_iter=2, verbose=False, freeze=["core.*"]), 1),
    ])
    rows = run({Description("frozen", 1): tex}, quiet=True)
    assert [r["state"] for r in rows] == ["done", "done"]
    storage = clean_db.TransferredTrainedModel.ModelStorage
    before = (storage & tex.get_restrictions(0)).fetch1("model_state")
    after = (storage & tex.get_restrictions(1)).fetch1("model_state")
    core = [name for name in before if name.startswith("core.")]
    assert core and all(torch.equal(before[n], after[n]) for n in core)
    assert not torch.equal(before["readout.7.weight"], after["readout.7.weight"])  # the classifier trained


def test_partial_transfer_loads_matching_parameters_only():
    from nntransfer.transfer import load_transferred_state

    source = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 5))  # new head size
    fresh_head = target[1].weight.clone()
    skipped = load_transferred_state(target, source.state_dict(), strict=False)
    assert skipped == ["1.bias", "1.weight"]
    assert torch.equal(target[0].weight, source[0].weight) and torch.equal(target[1].weight, fresh_head)
    try:
        load_transferred_state(target, source.state_dict(), strict=True)
    except RuntimeError as err:
        assert "size mismatch" in str(err)
    else:
        raise AssertionError("strict transfer accepted a different head")


def test_data_transfer_hands_step_0_logits_to_step_1_loader(clean_db):
    tex = TransferExperiment([
        Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=2, data_transfer=True), 1),
        Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1),
        Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1, lr=0.01), 1),
    ])
    run({Description("distill", 1): tex}, quiet=True)
    TT = clean_db.TransferredTrainedModel
    produced = (TT.TransferData & tex.get_restrictions(0)).fetch1("transfer_data")["train"]["logits"]
    # the stored arrays are the trained step-0 model's logits on the training examples, in order
    from toy_pipeline import toy_data, toy_model

    net = toy_model(None, seed=1)
    net.load_state_dict((TT.ModelStorage & tex.get_restrictions(0)).fetch1("model_state"))
    x = toy_data(1)["train"]["toy"].dataset.tensors[0]
    with torch.no_grad():
        np.testing.assert_allclose(produced, net(x).numpy(), rtol=1e-6)
    for level in (1, 2):  # the nearest earlier step that produced data feeds every later step
        received = (TT & tex.get_restrictions(level)).fetch1("output")["received_transfer_data"]
        np.testing.assert_array_equal(received, produced)  # one epoch, unshuffled: exactly the stored rows
    assert len(TT.TransferData()) == 1


def test_recipe_views_tell_what_changed_between_steps(clean_db):
    from nntransfer.recipes import fill_tables

    base = Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1)
    new_data = Experiment(ToyData(n=32), ToyModel(), ToyTrainer(max_iter=1), 1)
    new_trainer = Experiment(ToyData(n=32), ToyModel(), ToyTrainer(max_iter=2), 1)
    tex = TransferExperiment([base, new_data, new_trainer])
    fill_tables({Description("views", 1): tex})
    steps = lambda view: sorted(k["transfer_step"] for k in view.keys())  # noqa: E731
    assert steps(clean_db.DatasetTransferRecipe()) == [1]
    assert steps(clean_db.TrainerTransferRecipe()) == [2]
    assert steps(clean_db.ModelTransferRecipe()) == []
    assert len(clean_db.TransferData()) == 0
