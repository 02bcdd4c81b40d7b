"""Neural-response prediction: simulated FileTreeDataset sessions, the loader, core + readout models, Poisson
loss and correlation by name, regularizers in the loss, sessions cycled with LongCycler, core transfer."""
import json
import pickle

import numpy as np
import pytest
import torch

import nntransfer.core.compat  # noqa: F401  (neuralpredictors needs the collections aliases)
from nntransfer.configs import ConfigError, NeuralDatasetConfig, NeuralModelConfig, TrainerConfig
from nntransfer.dataset import neural_dataset_loader, simulate_neurons
from nntransfer.models.neural import neural_model_builder
from nntransfer.trainer import MainLoopModule

SIZE = 12  # small images keep the tests fast


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models: a second intra-op thread only adds waiting when other processes share the cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("neurons")
    simulate_neurons(root / "a", n_neurons=7, image_size=SIZE, seed=0)
    simulate_neurons(root / "b", n_neurons=5, image_size=SIZE, seed=1, behavior=True)
    return root


def loaders(data_dir, sessions=("a", "b"), **options):
    return neural_dataset_loader(seed=1, data_dir=str(data_dir), sessions=list(sessions), batch_size=32, **options)


def model_config(**options) -> dict:
    cfg = NeuralModelConfig(**{"hidden_channels": 4, "layers": 2, "input_kern": 5, "hidden_kern": 3, **options})
    config = cfg.to_dict()
    config.pop("comment")
    return config


def test_neuralpredictors_imports_after_the_compat_shims_and_only_when_used():
    import subprocess
    import sys

    code = ("import sys, nntransfer.models, nntransfer.dataset, nntransfer.trainer\n"
            "assert 'neuralpredictors' not in sys.modules  # lazy: classification never pays for it\n"
            "import nntransfer.core.compat\n"
            "import neuralpredictors.data.datasets, neuralpredictors.data.transforms, neuralpredictors.layers.cores\n"
            "import neuralpredictors.layers.readouts, neuralpredictors.measures.modules, neuralpredictors.training\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


# -- simulate_neurons ---------------------------------------------------------------------------------
def test_simulate_neurons_writes_a_dataset_neuralpredictors_opens(data_dir):
    from neuralpredictors.data.datasets import FileTreeDataset

    data = FileTreeDataset(str(data_dir / "a"), "images", "responses")
    assert data.img_shape == (1, 1, SIZE, SIZE)
    assert data.n_neurons == 7
    tiers = data.trial_info.tiers
    # digits: 1437 training images (20 % of them validation) and 360 test images
    assert len(data) == 1797
    assert {t: int((tiers == t).sum()) for t in ("train", "validation", "test")} == \
        {"train": 1150, "validation": 287, "test": 360}
    responses = np.stack([data[i].responses for i in range(50)])
    assert responses.min() >= 0 and np.all(responses == np.round(responses))  # spike counts
    assert len(data.neurons.unit_ids) == 7 and len(data.neurons.rf_orientation) == 7
    with_behavior = FileTreeDataset(str(data_dir / "b"), "images", "responses", "behavior", "pupil_center")
    assert with_behavior[0].behavior.shape == (3,) and with_behavior[0].pupil_center.shape == (2,)
    simulation = json.loads((data_dir / "a" / "config.json").read_text())["simulation"]
    assert 0.3 < simulation["test_ceiling_correlation"] < 1


def test_simulate_neurons_is_deterministic_and_keeps_or_refuses_existing_sessions(data_dir, tmp_path):
    again = simulate_neurons(tmp_path / "a", n_neurons=7, image_size=SIZE, seed=0)
    for key in ("images", "responses"):
        for trial in (0, 100, 1796):
            assert np.array_equal(np.load(again / "data" / key / f"{trial}.npy"),
                                  np.load(data_dir / "a" / "data" / key / f"{trial}.npy"))
    assert np.array_equal(np.load(again / "meta/trials/tiers.npy"), np.load(data_dir / "a/meta/trials/tiers.npy"))
    other_seed = simulate_neurons(tmp_path / "c", n_neurons=7, image_size=SIZE, seed=5)
    assert not np.array_equal(np.load(other_seed / "meta/neurons/rf_x.npy"), np.load(again / "meta/neurons/rf_x.npy"))
    marker = again / "data" / "responses" / "0.npy"
    before = marker.stat().st_mtime_ns
    simulate_neurons(tmp_path / "a", n_neurons=7, image_size=SIZE, seed=0)  # same parameters: kept as it is
    assert marker.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="n_neurons"):
        simulate_neurons(tmp_path / "a", n_neurons=8, image_size=SIZE, seed=0)
    assert not list(tmp_path.glob(".*tmp*"))  # no half-written session left behind


# -- the loader ----------------------------------------------------------------------------------------
def test_loader_gives_one_task_per_session_and_normalised_batches(data_dir):
    from neuralpredictors.data.datasets import FileTreeDataset
    from neuralpredictors.data.transforms import NeuroNormalizer

    out = loaders(data_dir)
    assert {split: sorted(tasks) for split, tasks in out.items()} == \
        {"train": ["a", "b"], "validation": ["a", "b"], "test": ["a", "b"]}
    images, responses = next(iter(out["train"]["a"]))
    assert images.shape == (32, 1, SIZE, SIZE) and responses.shape == (32, 7)
    assert images.dtype == responses.dtype == torch.float32
    assert len(out["test"]["b"].dataset) == 360
    # the same values as neuralpredictors' NeuroNormalizer gives, in tier order
    raw = FileTreeDataset(str(data_dir / "a"), "images", "responses")
    raw.transforms.append(NeuroNormalizer(raw))
    first_test = int(np.flatnonzero(raw.trial_info.tiers == "test")[0])
    test_images, test_responses = next(iter(out["test"]["a"]))
    assert torch.allclose(test_images[0], torch.as_tensor(raw[first_test].images))
    assert torch.allclose(test_responses[0], torch.as_tensor(raw[first_test].responses))
    pooled = torch.cat([batch[0] for batch in out["train"]["a"]])
    assert abs(float(pooled.mean())) < 0.1 and abs(float(pooled.std()) - 1) < 0.1


def test_loader_extra_and_the_in_memory_path_give_the_same_batches(data_dir):
    plain = loaders(data_dir, sessions=["b"], include_behavior=True, shuffle=False)
    fast = loaders(data_dir, sessions=["b"], include_behavior=True, shuffle=False, in_memory=True)
    for split in ("train", "validation", "test"):
        assert len(plain[split]["b"]) == len(fast[split]["b"])
        for one, other in zip(plain[split]["b"], fast[split]["b"]):
            assert len(one) == len(other) == 3
            assert torch.equal(one[0], other[0]) and torch.equal(one[1], other[1])
            assert sorted(one[2]) == sorted(other[2]) == ["behavior", "pupil_center"]
            assert all(torch.equal(one[2][k], other[2][k]) for k in one[2])
    # shuffled epochs follow torch's global RNG, as the trainer seeds it
    shuffled = loaders(data_dir, sessions=["b"], in_memory=True)["train"]["b"]
    torch.manual_seed(3)
    first = next(iter(shuffled))[1]
    torch.manual_seed(3)
    assert torch.equal(next(iter(shuffled))[1], first)


def test_loader_splits_pickle_for_dataloader_workers(data_dir):
    split = loaders(data_dir, sessions=["a"])["validation"]["a"].dataset
    copy = pickle.loads(pickle.dumps(split))
    assert copy._data is None  # reopened in the worker
    assert all(torch.equal(x, y) for x, y in zip(copy[5], split[5]))
    workers = loaders(data_dir, sessions=["a"], shuffle=False, num_workers=1)["validation"]["a"]
    single = loaders(data_dir, sessions=["a"], shuffle=False)["validation"]["a"]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(workers, single))


def test_loader_errors_name_the_cause(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*simulate_neurons"):
        loaders(data_dir, sessions=["missing"])
    with pytest.raises(ConfigError, match="data/behavior"):
        loaders(data_dir, sessions=["a"], include_behavior=True)
    with pytest.raises(ConfigError, match="plain directory name"):
        NeuralDatasetConfig(sessions=["static.1"])
    with pytest.raises(ConfigError, match="at least one session"):
        NeuralDatasetConfig()
    with pytest.raises(ConfigError, match="unknown data keys"):
        NeuralDatasetConfig(sessions=["a"], exclude_from_normalization=["spikes"])
    # a session without a validation tier needs valid_size > 0, which then draws from the train tier
    import shutil

    shutil.copytree(data_dir / "a", tmp_path / "a")
    tiers = np.load(tmp_path / "a/meta/trials/tiers.npy")
    np.save(tmp_path / "a/meta/trials/tiers.npy", np.where(tiers == "validation", "train", tiers))
    with pytest.raises(ConfigError, match="no 'validation' tier; set valid_size"):
        loaders(tmp_path, sessions=["a"])
    drawn = loaders(tmp_path, sessions=["a"], valid_size=0.25)
    n_train, n_valid = len(drawn["train"]["a"].dataset), len(drawn["validation"]["a"].dataset)
    assert n_train + n_valid == 1437 and n_valid == round(0.25 * 1437)
    assert not set(drawn["train"]["a"].dataset.indices) & set(drawn["validation"]["a"].dataset.indices)
    np.save(tmp_path / "a/meta/trials/tiers.npy", np.full(len(tiers), "train"))  # no test trials: no test loader
    for in_memory in (False, True):
        assert loaders(tmp_path, sessions=["a"], valid_size=0.25, in_memory=in_memory)["test"] == {}


# -- models --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("core, readout", [("stacked2d", "gaussian"), ("se2d", "factorized"),
                                           ("lenet", "gaussian")])
def test_model_has_one_output_column_per_neuron_of_each_session(data_dir, core, readout):
    out = loaders(data_dir)
    model = neural_model_builder(out, seed=1, **model_config(type=core, readout=readout))
    images = next(iter(out["train"]["a"]))[0]
    model.eval()
    assert model(images, data_key="a").shape == (32, 7)
    assert model(images, data_key="b").shape == (32, 5)
    assert bool((model(images, data_key="b") > 0).all())  # rates for a Poisson loss
    with pytest.raises(ValueError, match="data_key"):
        model(images)
    single = neural_model_builder(loaders(data_dir, sessions=["a"]), seed=1, **model_config(type=core, readout=readout))
    assert single(images).shape == (32, 7)


def test_same_seed_same_model_and_config_errors(data_dir):
    out = loaders(data_dir)
    one, two = (neural_model_builder(out, seed=4, **model_config()) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(one.state_dict().values(), two.state_dict().values()))
    with pytest.raises(ConfigError, match="unknown core 'lenett'.*stacked2d.*lenet"):
        neural_model_builder(out, seed=1, **model_config(type="lenett"))
    with pytest.raises(ConfigError, match="does not take these options.*core_options"):
        neural_model_builder(out, seed=1, **model_config(core_options={"not_an_option": 1}))
    with pytest.raises(ConfigError, match="not_an_option.*not options of FullGaussian2d.*gauss_type"):
        neural_model_builder(out, seed=1, **model_config(readout_options={"not_an_option": 1}))
    isotropic = neural_model_builder(out, seed=1, **model_config(readout_options={"gauss_type": "isotropic"}))
    assert isotropic.readout["a"].sigma.shape == (1, 7, 1, 1)
    with pytest.raises(ConfigError, match="'resnet18' needs core_layer.*layer1 \\[64, 12, 12\\], layer1.0"):
        neural_model_builder(out, seed=1, **model_config(type="resnet18"))
    with pytest.raises(ConfigError, match="feature maps"):
        neural_model_builder(out, seed=1, **model_config(type="lenet", core_layer="readout.1"))
    with pytest.raises(ConfigError, match="cannot be cut inside a BasicBlock"):
        neural_model_builder(out, seed=1, **model_config(type="resnet18", core_layer="layer1.0.conv1"))


def test_classifier_cores_keep_the_classifiers_parameter_names(data_dir):
    from nntransfer.models import classification_model_builder

    out = loaders(data_dir, sessions=["a"])
    neural = neural_model_builder(out, seed=1, **model_config(type="resnet18", core_layer="layer2"))
    classifier = classification_model_builder({"train": {"x": [(torch.zeros(2, 1, SIZE, SIZE), torch.tensor([0, 1]))]}},
                                              seed=1, type="resnet18")
    core = {k for k in neural.state_dict() if not k.startswith(("readout.", "core_norm."))}
    assert core and core <= set(classifier.state_dict())
    assert {k.split(".")[0] for k in core} == {"conv1", "bn1", "layer1", "layer2"}
    # torchvision models take 3 channels: grayscale images are repeated, as TransferLearningCore does
    tv = neural_model_builder(out, seed=1, **model_config(type="torchvision.vgg11", core_layer="features.5"))
    images = next(iter(out["train"]["a"]))[0]
    assert tv.features[0].in_channels == 3 and tv.eval()(images).shape == (32, 7)
    with pytest.raises(ConfigError, match="needs core_layer.*features.0 \\[64, 12, 12\\]"):  # too small for all
        neural_model_builder(out, seed=1, **model_config(type="torchvision.vgg11"))
    lenet = neural_model_builder(out, seed=1, **model_config(type="lenet", core_layer="core.4"))
    assert [k for k in lenet.state_dict() if k.startswith("core.")] == \
        ["core.0.weight", "core.0.bias", "core.3.weight", "core.3.bias"]


def test_regularizers_of_core_and_readout_reach_the_training_loss(data_dir):
    from nntransfer.trainer.trainer import Trainer

    out = loaders(data_dir, sessions=["a"], in_memory=True)
    strong = model_config(gamma_input=50.0, gamma_readout=2.0)
    model = neural_model_builder(out, seed=1, **strong)
    expected = model.core.regularizer() + model.readout["a"].regularizer()
    assert float(expected.detach()) > 0 and torch.allclose(model.regularizer("a"), expected)
    # one SGD step with and without the penalties: the difference is exactly -lr * their gradient
    lr = 0.01
    grads = torch.autograd.grad(model.regularizer("a"), list(model.parameters()), allow_unused=True)
    runs = {}
    for name, config in (("with", strong), ("without", model_config(gamma_input=0.0, gamma_readout=0.0))):
        trained = neural_model_builder(out, seed=1, **config)
        cfg = TrainerConfig(optimizer="SGD", optimizer_options={"lr": lr}, max_steps=1, max_iter=1,
                            loss_functions={"a": "PoissonLoss"}, metrics=["correlation"], stop_metric="correlation",
                            restore_best=False, verbose=False, force_cpu=True)
        Trainer(trained, out, 1, cfg).train()
        runs[name] = dict(trained.named_parameters())
    for (name, param), grad in zip(model.named_parameters(), grads):
        expected_step = torch.zeros_like(param) if grad is None else -lr * grad
        assert torch.allclose(runs["with"][name] - runs["without"][name], expected_step, atol=1e-6), name


def test_gamma_convention_nnvision_weighs_the_penalties_as_nnvisions_trainer_does(data_dir):
    """nnvision's trainer minimises sqrt(N/B) * summed Poisson loss + penalties; with gamma_convention='nnvision'
    nntransfer's averaged loss + penalties is that objective divided by neurons * sqrt(N * B), so the same gammas
    give the same gradient directions."""
    import math

    from neuralpredictors.measures.modules import PoissonLoss

    out = loaders(data_dir, sessions=["a"], in_memory=True)
    gammas = dict(gamma_input=5.0, gamma_readout=2.0)
    averaged = neural_model_builder(out, seed=1, **model_config(**gammas))
    nnvision = neural_model_builder(out, seed=1, **model_config(**gammas, gamma_convention="nnvision"))
    neurons, n_train, batch = 7, len(out["train"]["a"].dataset), 32
    images, responses = next(iter(out["train"]["a"]))[:2]
    assert images.shape[0] == batch and n_train > batch
    nnvision.eval(), averaged.eval()  # readouts at their mean positions (training samples them)
    prediction = nnvision(images, "a")
    assert torch.equal(prediction, averaged(images, "a"))  # the same model; only the penalties' weight differs
    with pytest.warns(UserWarning, match="averaged per batch"):  # neuralpredictors recommends its summed loss
        averaged_loss = PoissonLoss(avg=True)
    ours = averaged_loss(prediction, responses) + nnvision.regularizer("a")
    theirs = math.sqrt(n_train / batch) * PoissonLoss(avg=False)(prediction, responses) + averaged.regularizer("a")
    assert float(averaged.regularizer("a").detach()) > 0
    assert torch.allclose(ours * neurons * math.sqrt(n_train * batch), theirs, rtol=1e-5)
    # a field added in 0.3: configs without it keep their keys; "averaged" is the default
    assert NeuralModelConfig().gamma_convention == "averaged"
    assert "gamma_convention" not in NeuralModelConfig().hashed_dict()
    assert NeuralModelConfig(gamma_convention="nnvision").get_key() != NeuralModelConfig().get_key()
    with pytest.raises(ConfigError, match="gamma_convention"):
        NeuralModelConfig(gamma_convention="summed")


# -- loss and metric by name; training several sessions --------------------------------------------------
def test_poisson_loss_by_name_is_neuralpredictors():
    from neuralpredictors.measures.modules import PoissonLoss

    from nntransfer.trainer.losses import make_loss

    output, target = torch.rand(6, 4) + 0.1, torch.poisson(torch.full((6, 4), 2.0))
    with pytest.warns(UserWarning):
        reference = PoissonLoss(avg=True)
    assert torch.allclose(make_loss("PoissonLoss")(output, target), reference(output, target))
    assert make_loss("AnscombeMSE")(output, target).shape == ()


def test_correlation_is_computed_as_neuralpredictors_computes_it():
    from neuralpredictors.measures.np_functions import corr

    from nntransfer.trainer.metrics import METRICS

    generator = torch.Generator().manual_seed(0)
    targets = torch.poisson(torch.rand(50, 6, generator=generator) * 4, generator=generator)
    outputs = targets * 0.5 + torch.rand(50, 6, generator=generator) * 3 + 10  # offset: tests the running sums
    outputs[:, 5] = 2.0  # a constant prediction: eps keeps it 0, not NaN
    metric = METRICS.get("correlation")()
    for chunk in (slice(0, 7), slice(7, 30), slice(30, 50)):  # accumulated over batches of a pass
        metric.update(outputs[chunk], targets[chunk])
    expected = corr(outputs.numpy().astype(np.float64), targets.numpy().astype(np.float64), axis=0).mean()
    assert metric.compute() == pytest.approx(float(expected), abs=1e-9)
    assert METRICS.get("correlation").higher_is_better
    assert METRICS.get("correlation").applies(outputs, targets)
    assert not METRICS.get("correlation").applies(torch.rand(4, 10), torch.tensor([1, 2, 3, 4]))
    assert not METRICS.get("accuracy").applies(outputs, targets)


def test_sessions_are_cycled_with_neuralpredictors_long_cycler(data_dir, monkeypatch):
    from neuralpredictors.training import cyclers

    from nntransfer.trainer.trainer import Trainer

    used = []

    class Spy(cyclers.LongCycler):
        def __init__(self, loaders):
            used.append(sorted(loaders))
            super().__init__(loaders)

    monkeypatch.setattr(cyclers, "LongCycler", Spy)
    out = loaders(data_dir, in_memory=True)
    model = neural_model_builder(out, seed=1, **model_config())
    cfg = TrainerConfig(max_iter=1, loss_functions={"neurons": "PoissonLoss"}, metrics=["correlation"],
                        stop_metric="correlation", verbose=False, track_iterations=True)
    trainer = Trainer(model, out, 1, cfg)
    tasks = [task for task, _ in trainer._batches(out["train"], cycle=True)]
    assert used == [["a", "b"]]
    longest = max(len(loader) for loader in out["train"].values())
    assert tasks == ["a", "b"] * longest  # alternating; the shorter session cycles until the longest ends
    score, output, _ = trainer.train()
    # test correlation and Poisson loss per session; the score is the validation correlation
    assert sorted(output["test"]) == ["a", "b"]
    assert all(set(output["test"][s]) == {"loss", "correlation"} for s in ("a", "b"))
    assert score == pytest.approx(np.mean([output["validation"][s]["correlation"] for s in ("a", "b")]))


# -- transfer of a classifier's core -----------------------------------------------------------------------
STARTS: list = []


class RecordStart(MainLoopModule):
    """Keeps the model's parameters as training starts (built by the trainer after the transfer)."""

    def __init__(self, trainer):
        super().__init__(trainer)
        STARTS.append({k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})


def test_a_transferred_classifier_core_keeps_its_weights_at_the_start_of_the_neural_step(clean_db, data_dir):
    from nntransfer import Description, Experiment, TransferExperiment, run
    from nntransfer.configs import ImageDatasetConfig, ModelConfig
    from nntransfer.tables import TransferredTrainedModel

    STARTS.clear()
    digits = ImageDatasetConfig(dataset_cls="digits", input_width=SIZE, input_height=SIZE, in_memory=True)
    classify = TrainerConfig(max_iter=1, verbose=False)
    neurons = NeuralDatasetConfig(data_dir=str(data_dir), sessions=["a"], in_memory=True)
    predict = TrainerConfig(max_iter=1, loss_functions={"a": "PoissonLoss"}, metrics=["correlation"],
                            stop_metric="correlation", transfer_strict=False, verbose=False,
                            main_loop_modules=["test_neural:RecordStart"])
    transfer = TransferExperiment([Experiment(digits, ModelConfig(type="lenet"), classify, 1),
                                   Experiment(neurons, NeuralModelConfig(type="lenet", core_layer="core.4"), predict, 1)])
    rows = run({Description("core transfer", 1): transfer}, quiet=True)
    assert [row["state"] for row in rows] == ["done", "done"]
    pretrained = (TransferredTrainedModel.ModelStorage & transfer.get_restrictions(0)).fetch1("model_state")
    start = STARTS[-1]
    for name in ("core.0.weight", "core.0.bias", "core.3.weight", "core.3.bias"):
        assert torch.equal(start[name], pretrained[name]), name
    fresh = neural_model_builder(neural_dataset_loader(1, **{k: v for k, v in neurons.to_dict().items()
                                                             if k != "comment"}), seed=1,
                                 type="lenet", core_layer="core.4")
    assert not torch.equal(fresh.state_dict()["core.0.weight"], pretrained["core.0.weight"])
    assert torch.equal(start["readout.a._mu"], fresh.state_dict()["readout.a._mu"])  # the readout starts fresh
    assert rows[1]["test/a/correlation"] > 0.1



@pytest.mark.cuda
def test_neural_training_on_the_gpu(data_dir):
    from nntransfer.trainer.trainer import Trainer

    out = loaders(data_dir, in_memory=True, device="cuda")
    model = neural_model_builder(out, seed=1, **model_config())
    cfg = TrainerConfig(max_iter=2, loss_functions={"neurons": "PoissonLoss"}, metrics=["correlation"],
                        stop_metric="correlation", verbose=False)
    trainer = Trainer(model, out, 1, cfg)
    assert trainer.device.type == "cuda" and next(model.parameters()).is_cuda
    score, output, state = trainer.train()
    assert all(not t.is_cuda for t in state.values())
    assert 0 < score < 1 and all(0 < output["test"][s]["correlation"] < 1 for s in ("a", "b"))
