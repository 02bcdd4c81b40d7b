"""Representation-level transfer: RDL, online knowledge distillation, and RepresentationMatching's layers, second
noise draw, only_for_clean and learned layer weights."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nntransfer.configs import ConfigError
from nntransfer.trainer.handover import Handover, copy_model
from nntransfer.trainer.losses import Distillation
from nntransfer.trainer.modules.knowledge_distillation import distillation_term
from nntransfer.trainer.modules.rdl import rdm, rdm_loss

from bias_helpers import fit, handover_from, net, points


# -- RDL --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance,transform", [
    ("correlation", lambda x: 3.0 * x + 1.5),  # scaled and shifted patterns
    ("correlation", lambda x: x * torch.linspace(0.5, 2.0, len(x))[:, None] - 0.7),  # each pattern its own scale
    ("cosine", lambda x: x * torch.linspace(0.5, 2.0, len(x))[:, None]),
    ("euclidean", lambda x: x @ torch.linalg.qr(torch.randn(x.shape[1], x.shape[1]))[0] + 2.0),  # rotated, moved
])
def test_rdl_loss_is_zero_for_representations_equal_up_to_the_distance_s_invariance(distance, transform):
    torch.manual_seed(0)
    teacher = torch.randn(12, 10)
    student = transform(teacher)
    assert float(rdm_loss(student, teacher, distance)) == pytest.approx(0.0, abs=1e-8)
    assert float(rdm_loss(torch.randn(12, 10), teacher, distance)) > 1e-3  # and not for others
    # 'correlation' comparison of the RDMs: a global scale of the dissimilarities does not count either
    scaled = 2.0 * teacher if distance == "euclidean" else teacher
    assert float(rdm_loss(scaled, teacher, distance, "correlation")) == pytest.approx(0.0, abs=1e-6)


def test_rdm_of_correlation_distance_is_one_minus_pearson():
    x = torch.randn(5, 7)
    expected = 1 - torch.corrcoef(x)
    torch.testing.assert_close(rdm(x, "correlation"), expected, atol=1e-6, rtol=1e-5)


def test_rdl_term_decreases_while_training_towards_a_teacher():
    _, _, teacher_state = fit(net(hidden=16, seed=3), data=points(rule=1), max_iter=2)
    handover = handover_from(teacher_state, model=net(hidden=16))
    handover.model_state = None  # the student starts from its own initialisation
    _, output, _ = fit(net(seed=0, hidden=16), handover=handover, max_iter=8, optimizer_options={"lr": 0.02},
                       early_stopping=False, main_loop_modules=["RDL"],
                       module_options={"RDL": {"layers": ["1"], "distance": "correlation", "weight": 10.0}})
    terms = output["tracker"]["log"]["Training"]["t"]["rdl"]
    assert len(terms) == 8 and terms[-1] < 0.5 * terms[0]


def test_rdl_reads_handed_over_representations_from_the_batch_s_transfer_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    teacher = torch.relu(x @ torch.randn(6, 10, generator=g))  # e.g. a teacher step's representation per example
    loader = torch.utils.data.DataLoader(
        [(xi, int(xi[0] > 0), {"hidden": ti}) for xi, ti in zip(x, teacher)], batch_size=16)
    data = {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}
    _, output, _ = fit(net(hidden=16), data=data, max_iter=8, optimizer_options={"lr": 0.02}, early_stopping=False,
                       main_loop_modules=["RDL"], module_options={"RDL": {"layers": ["1"], "source": "transfer_data",
                                                                          "teacher_layers": {"1": "hidden"},
                                                                          "weight": 10.0}})
    terms = output["tracker"]["log"]["Training"]["t"]["rdl"]
    assert terms[-1] < 0.5 * terms[0]
    with pytest.raises(ConfigError, match="reads the teacher's representations"):
        fit(data=data, main_loop_modules=["RDL"], module_options={"RDL": {"layers": ["1"], "source": "transfer_data"}})


def test_rdl_without_an_earlier_step_says_it_needs_a_teacher():
    with pytest.raises(ConfigError, match="RDL needs a teacher"):
        fit(main_loop_modules=["RDL"], module_options={"RDL": {"layers": ["1"]}})


# -- online distillation ---------------------------------------------------------------------------------------------
def test_online_distillation_loss_is_alpha_t2_kl_plus_one_minus_alpha_cross_entropy():
    data = points(n=32, batch_size=32, shuffle=False)  # one batch: the tracked loss is that batch's
    teacher = net(seed=9)
    handover = Handover(previous_model=copy_model(teacher))
    student = net(seed=0)
    x, y = data["train"]["t"].dataset.tensors
    with torch.no_grad():
        s, t = student(x), teacher(x)
    expected = 0.7 * distillation_term(s, t, 3.0) + 0.3 * F.cross_entropy(s, y)
    _, output, _ = fit(student, data, handover=handover, max_iter=1, optimizer="SGD", optimizer_options={"lr": 0.0},
                       main_loop_modules=["KnowledgeDistillation"],
                       module_options={"KnowledgeDistillation": {"temperature": 3.0, "alpha": 0.7}})
    assert output["tracker"]["log"]["Training"]["t"]["loss"][0] == pytest.approx(float(expected), rel=1e-5)
    # the same number as the offline Distillation loss on stored teacher logits
    offline = Distillation(temperature=3.0, alpha=0.7)(s, y, {"logits": t})
    assert float(offline) == pytest.approx(float(expected), rel=1e-6)
    assert output["test"]["t"]["loss"] == pytest.approx(float(F.cross_entropy(s, y)), rel=1e-5)  # evaluation: CE


# -- RepresentationMatching completed ---------------------------------------------------------------------------------
def matching(options, std=None, **config):
    noise = {"std": std if std is not None else {0.0: 0.5, 0.5: 0.5}, "fractions": "fixed"}
    return fit(data=points(n=64, batch_size=32), main_loop_modules=["NoiseAugmentation", "RepresentationMatching"],
               module_options={"NoiseAugmentation": noise, "RepresentationMatching": options}, **config)


def test_only_for_clean_pairs_the_clean_samples_with_their_second_noise_draw():
    # second draw of std 0: the pairs are (clean sample, the same clean sample), so the term is exactly 0 ...
    _, output, _ = matching({"layers": ["0", "1"], "second_noise_std": 0.0, "only_for_clean": True})
    training = output["tracker"]["log"]["Training"]["t"]
    assert training["representation_matching"] == pytest.approx([0.0, 0.0], abs=1e-10)
    assert training["representation_matching/0"] == pytest.approx([0.0, 0.0], abs=1e-10)  # also logged per layer
    # ... but not when every sample is paired: half of the first draws were noisy
    _, output, _ = matching({"layers": ["0", "1"], "second_noise_std": 0.0})
    assert all(v > 0 for v in output["tracker"]["log"]["Training"]["t"]["representation_matching"])
    # a second draw of std 0.5 on the clean samples makes the term positive again
    _, output, _ = matching({"layers": ["0", "1"], "second_noise_std": [0.4, 0.6], "only_for_clean": True})
    assert all(v > 0 for v in output["tracker"]["log"]["Training"]["t"]["representation_matching"])
    with pytest.raises(ConfigError, match="only_for_clean.*set 'second_noise_std'"):
        matching({"layer": "1", "only_for_clean": True})


def test_layer_weights_scale_each_layer_and_learned_weights_are_trained_with_the_model():
    _, fixed, _ = matching({"layers": {"0": 1.0, "1": 0.0}, "second_noise_std": 0.3}, max_iter=1)
    training = fixed["tracker"]["log"]["Training"]["t"]
    assert training["representation_matching"][0] == pytest.approx(training["representation_matching/0"][0], rel=1e-6)

    from nntransfer.configs import TrainerConfig
    from nntransfer.trainer import Trainer

    config = TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, verbose=False, save_every_n=0, max_iter=3,
                           optimizer_options={"lr": 0.05}, main_loop_modules=["NoiseAugmentation",
                                                                              "RepresentationMatching"],
                           module_options={"RepresentationMatching": {"layers": ["0", "1"],
                                                                      "layer_weights": "learned"}})
    trainer = Trainer(net(), points(), 5, config)
    module = trainer.modules[1]
    assert any(module.log_variances is p for group in trainer.optimizer.param_groups for p in group["params"])
    trainer.train()
    assert float(module.log_variances.detach().abs().min()) > 0  # moved from 0 by the optimizer


def test_a_teacher_step_hands_over_layer_outputs_per_example_for_rdl_from_transfer_data():
    from nntransfer import Experiment, TransferExperiment, train
    from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

    digits = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2], examples_per_class=30, in_memory=True)
    quick = dict(max_iter=2, verbose=False, save_every_n=0, num_threads=1)
    teacher = TrainerConfig(data_transfer=True, transfer_layers=["readout.4"], **quick)
    student = TrainerConfig(transfer_parameters=False, main_loop_modules=["RDL"],
                            module_options={"RDL": {"layers": ["readout.4"], "source": "transfer_data"}}, **quick)
    chain = train(TransferExperiment([Experiment(digits, ModelConfig(type="lenet"), teacher, 1),
                                      Experiment(digits, ModelConfig(type="lenet"), student, 1)]))
    handed = chain[0].transfer_data["train"]
    assert handed["readout.4"].shape == (len(handed["example_indices"]), 84)  # flattened per example
    model, loader = chain[0].model.eval(), chain[0].dataloaders["train"]["img_classification"]
    x, _ = next(iter(loader.unshuffled()))
    with torch.no_grad():  # readout.4: the output of the second linear layer (on the device the trainer chose)
        second_linear = model.readout[:5](model.core(x.to(next(model.parameters()).device))).cpu()
    rows = {int(i): r for i, r in zip(handed["example_indices"], handed["readout.4"])}
    first = loader.dataset.example_indices[: len(x)]  # aligned by example index, like the logits
    torch.testing.assert_close(torch.as_tensor(np.stack([rows[int(i)] for i in first])), second_linear,
                               rtol=1e-5, atol=1e-6)
    assert len(chain.last.history["Training"]["img_classification"]["rdl"]) == 2
    with pytest.raises(ConfigError, match="set data_transfer=True too"):
        TrainerConfig(transfer_layers=["readout.4"])
