"""Parameter and data transfer between steps, with the real digits data, LeNet and trainer."""
import numpy as np
import pytest
import torch

from nntransfer import Description, Experiment, TransferExperiment, run
from nntransfer.configs import ConfigError, ImageDatasetConfig, ModelConfig, TrainerConfig
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
    from nntransfer.runner.transfer import load_transferred_state

    source = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 5))  # new head size
    fresh_head = target[1].weight.clone()
    skipped = load_transferred_state(target, source.state_dict(), strict=False)
    assert skipped == ["1.bias", "1.weight"]
    assert torch.equal(target[0].weight, source[0].weight) and torch.equal(target[1].weight, fresh_head)
    with pytest.raises(ConfigError, match=r"different shapes: 1.bias \(3,\) -> \(5,\), 1.weight \(3, 8\) -> "
                                          r"\(5, 8\).*transfer_strict=False"):
        load_transferred_state(target, source.state_dict(), strict=True)


# -- issue 10 item 10: transfers that cannot do what they say are ConfigErrors --------------------------------
def test_strict_transfer_between_architectures_names_the_keys_and_the_option():
    from nntransfer.runner.transfer import load_transferred_state

    source = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with pytest.raises(ConfigError, match=r"missing in the previous step's model: 2.bias, 2.weight; only in the "
                                          r"previous step's model: 1.bias, 1.weight.*Set trainer.transfer_strict=False"):
        load_transferred_state(target, source.state_dict(), strict=True)
    assert load_transferred_state(target, source.state_dict(), strict=False) == ["2.bias", "2.weight"]


def test_non_strict_transfer_that_transfers_nothing_is_an_error():
    from nntransfer.runner.transfer import load_transferred_state

    source = torch.nn.Sequential(torch.nn.Linear(4, 8))
    target = torch.nn.Sequential(torch.nn.Linear(6, 2))
    with pytest.raises(ConfigError, match=r"transfer_strict=False transferred no parameter.*0.bias, 0.weight.*"
                                          r"transfer_parameters=False"):
        load_transferred_state(target, source.state_dict(), strict=False)


def test_a_strict_transfer_error_is_recorded_by_the_job(clean_db):
    tex = TransferExperiment([Experiment(ToyData(), ToyModel(hidden=8), ToyTrainer(max_iter=1), 1),
                              Experiment(ToyData(), ToyModel(hidden=16), ToyTrainer(max_iter=1), 1)])
    rows = run({Description("resized", 1): tex}, quiet=True)
    assert [r["state"] for r in rows] == ["done", "error"]
    message = clean_db.TransferredTrainedModel.jobs.errors.to_dicts()[0]["error_message"]
    assert "different shapes: 0.bias (8,) -> (16,)" in message and "transfer_strict=False" in message


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
    from nntransfer.orchestration.fill import fill_tables

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


# -- issue 10 item 11: transfer data is aligned by example index ------------------------------------------------
TASK = "img_classification"


class LookupTeacher(torch.nn.Module):
    """A perfect teacher on the examples it was built from: logits are 20 x the one-hot of each input's label."""

    def __init__(self, dataloaders):
        from nntransfer.dataset import unshuffled

        super().__init__()
        batches = [b for split in ("train", "validation", "test") for b in unshuffled(dataloaders[split][TASK])]
        self.register_buffer("inputs", torch.cat([b[0].flatten(1) for b in batches]))
        self.register_buffer("labels", torch.cat([b[1] for b in batches]))
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        nearest = torch.cdist(x.flatten(1), self.inputs).argmin(1)
        return 20 * self.scale * torch.nn.functional.one_hot(self.labels[nearest], 10).float()


def perfect_teacher(dataloaders, seed, **config):
    return LookupTeacher(dataloaders)


class TeacherConfig(ModelConfig):
    fn = "test_transfer:perfect_teacher"


def teacher_data(**config):
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.runner.transfer import generate_transfer_data

    loaders = image_dataset_loader(dataset_cls="digits", **config)
    return generate_transfer_data(perfect_teacher(loaders, 0), loaders)


def agreement(loader):
    from nntransfer.dataset import unshuffled

    hits = [(extra["logits"].argmax(1) == y) for _, y, extra in unshuffled(loader)]
    return float(torch.cat(hits).float().mean())


@pytest.mark.parametrize("in_memory", [False, True])
def test_each_example_gets_its_own_teacher_rows_whatever_the_seed_and_selection(in_memory):
    from nntransfer.dataset import image_dataset_loader

    data = teacher_data(seed=1, filter_classes=[0, 1, 2, 3, 4], valid_size=0.2)
    assert set(data) == {"train", "test"} and set(data["train"]) == {"logits", "example_indices"}
    assert isinstance(data["train"]["logits"], np.ndarray)  # stored on the CPU
    for student in (dict(seed=2), dict(seed=3, examples_per_class=20, valid_size=0.3),
                    dict(seed=1, examples_per_class=7, test_rotations=[90])):
        loaders = image_dataset_loader(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], transfer_data=data,
                                       in_memory=in_memory, **{"valid_size": 0.2, **student})
        for split in ("train", "validation", "test"):  # every split the teacher covered gets its rows
            assert agreement(loaders[split][TASK]) == 1.0, (student, split)
        if "test_rotations" in student:  # the teacher never saw rotated images: no rows there
            batch = next(iter(loaders["test"][f"{TASK}_rotated_90"]))
            assert len(batch) == 2


def test_examples_the_teacher_did_not_see_are_a_config_error():
    from nntransfer.dataset import image_dataset_loader

    data = teacher_data(seed=1, examples_per_class=20)
    with pytest.raises(ConfigError, match=r"transfer data covers 200 examples of the source's train set, but \d+ of "
                                          r"this step's \d+ training examples are not among them.*examples_per_class"):
        image_dataset_loader(seed=2, dataset_cls="digits", transfer_data=data)  # wants every example
    with pytest.raises(ConfigError, match="not among them"):
        image_dataset_loader(seed=5, dataset_cls="digits", examples_per_class=20, transfer_data=data)  # other picks
    same = image_dataset_loader(seed=1, dataset_cls="digits", examples_per_class=20, valid_size=0.3, transfer_data=data)
    assert agreement(same["train"][TASK]) == 1.0 and agreement(same["validation"][TASK]) == 1.0
    assert len(next(iter(same["test"][TASK]))) == 3  # the teacher's test set is whole: the student's is covered


def test_a_second_step_with_another_seed_distils_its_own_examples_teacher_logits(clean_db):
    digits = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=64)
    teacher = Experiment(digits, TeacherConfig(), TrainerConfig(max_iter=1, data_transfer=True, verbose=False), 1)
    student = Experiment(digits.replace(valid_size=0.3), ModelConfig(type="mlp"), TrainerConfig(
        max_iter=2, verbose=False, loss_functions={TASK: "Distillation"}, transfer_parameters=False,
        loss_options={"Distillation": {"temperature": 2.0, "alpha": 0.5}}), 2)
    tex = TransferExperiment([teacher, student])
    rows = run({Description("distil", 2): tex}, quiet=True)
    assert [r["state"] for r in rows] == ["done", "done"], clean_db.TransferredTrainedModel.jobs.errors.to_dicts()
    dataloaders, _ = clean_db.TransferredTrainedModel().load_model(tex.get_restrictions(1))
    for split in ("train", "validation", "test"):
        assert agreement(dataloaders[split][TASK]) == 1.0, split


def test_transfer_data_is_computed_on_the_models_device():
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.runner.transfer import generate_transfer_data

    class Recorder(torch.nn.Module):  # parameters on another device than the CPU; "meta" exists everywhere
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1, device="meta"))
            self.devices = set()

        def forward(self, x):
            self.devices.add(x.device.type)
            return torch.zeros(len(x), 10)

    model = Recorder()
    data = generate_transfer_data(model, image_dataset_loader(seed=1, dataset_cls="digits"))
    assert model.devices == {"meta"} and data["train"]["logits"].shape == (1437, 10)


@pytest.mark.cuda
def test_transfer_data_on_cuda_is_stored_on_the_cpu():
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.models import classification_model_builder
    from nntransfer.runner.transfer import generate_transfer_data

    loaders = image_dataset_loader(seed=1, dataset_cls="digits", in_memory=True, device="cuda")
    model = classification_model_builder(loaders, seed=1, type="lenet").cuda()
    data = generate_transfer_data(model, loaders)
    assert isinstance(data["train"]["logits"], np.ndarray) and len(data["train"]["logits"]) == 1437


def test_distillation_loss_mixes_teacher_and_labels_and_falls_back_to_labels():
    from nntransfer.trainer.losses import make_loss

    torch.manual_seed(0)
    student, teacher, labels = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    loss = make_loss("Distillation", {"temperature": 2.0, "alpha": 0.25})
    soft = torch.nn.functional.kl_div(torch.log_softmax(student / 2, 1), torch.softmax(teacher / 2, 1),
                                      reduction="batchmean")
    hard = torch.nn.functional.cross_entropy(student, labels)
    torch.testing.assert_close(loss(student, labels, {"logits": teacher}), 0.25 * 4 * soft + 0.75 * hard)
    torch.testing.assert_close(loss(student, labels, {}), hard)  # a batch without teacher logits
    for bad in ({"temperature": 0.0}, {"alpha": 1.5}):
        with pytest.raises(ConfigError, match="Distillation"):
            make_loss("Distillation", bad)
    with pytest.raises(ConfigError, match="does not take"):
        make_loss("Distillation", {"temp": 1.0})


def test_the_distillation_example_runs_and_shares_its_teacher(clean_db):
    from pathlib import Path

    from nntransfer.orchestration.recipes import apply_overrides, load_recipe
    from nntransfer.orchestration.plan import plan

    example = Path(__file__).resolve().parents[1] / "examples" / "digits_distillation.py"
    experiments = apply_overrides(load_recipe(example), {"trainer.max_iter": 2})
    targets = plan(experiments)
    teachers = {tuple(sorted(t.key.items())) for t in targets if t.step == 0 and "distilled" in t.description.name}
    assert len(teachers) == 1  # one teacher for every seed
    rows = run(experiments, quiet=True)
    seeds = {d.seed for d in experiments}
    assert len(seeds) > 1
    # one row per step and seed: the labels-only student (one step) and the distilled one (teacher, student)
    assert [r["state"] for r in rows] == ["done"] * len(rows) and len(rows) == 3 * len(seeds)
    students = [d for d in experiments if "distilled" in d.name]
    for desc in students:
        dataloaders, _ = clean_db.TransferredTrainedModel().load_model(experiments[desc].get_restrictions(1))
        batch = next(iter(dataloaders["train"][TASK]))
        assert set(batch[2]) == {"logits"}
