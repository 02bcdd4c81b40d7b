"""Regularised transfer: L2-SP, EWC and SI, and the handover that carries per-parameter data between steps."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nntransfer.configs import ConfigError
from nntransfer.trainer import MainLoopModule, register_module
from nntransfer.trainer.handover import Handover
from nntransfer.trainer.modules.ewc import EWC, diagonal_fisher
from nntransfer.trainer.modules.l2sp import L2SP
from nntransfer.trainer.modules.si import SI

from bias_helpers import fake_trainer, fit, handover_from, net, points, started_from


def distance_from(state, start, prefix="0."):
    return sum(float((state[k] - start[k]).pow(2).sum()) for k in state if k.startswith(prefix))


# -- L2-SP --------------------------------------------------------------------------------------------------------
def test_l2sp_penalty_is_alpha_half_squared_distance_of_transferred_plus_beta_half_squared_norm_of_new():
    start = net(seed=1).state_dict()
    model = started_from(start)
    with torch.no_grad():  # as with TrainerConfig(reset=["2"]): the classifier starts fresh
        model[2].weight.normal_()
        model[2].bias.normal_()
    module = L2SP.create(fake_trainer(model, Handover(model_state=start, transferred=tuple(start)),
                                      main_loop_modules=["L2SP"], module_options={"L2SP": {"alpha": 0.7, "beta": 0.3}}),
                         "L2SP")
    assert sorted(module.transferred) == ["0.bias", "0.weight"] and sorted(module.new) == ["2.bias", "2.weight"]
    with torch.no_grad():
        model[0].weight.add_(0.5)
        model[2].bias.add_(1.0)
    expected = 0.35 * sum(float((model[0].state_dict()[k] - start[f"0.{k}"]).pow(2).sum()) for k in ("weight", "bias"))
    expected += 0.15 * sum(float(p.detach().pow(2).sum()) for p in model[2].parameters())
    assert float(module.penalty().detach()) == pytest.approx(expected, rel=1e-6)


def test_l2sp_needs_transferred_parameters():
    with pytest.raises(ConfigError, match="starts from a fresh initialisation"):
        L2SP.create(fake_trainer(net(), main_loop_modules=["L2SP"]), "L2SP")


def test_with_a_large_alpha_fine_tuned_weights_stay_closer_to_the_earlier_step():
    _, _, start = fit(data=points(rule=0), max_iter=3)
    handover = handover_from(start)
    on_b = dict(data=points(rule=1, seed=1), max_iter=4, optimizer_options={"lr": 0.05}, early_stopping=False,
                restore_best=False)
    _, _, plain = fit(started_from(start), handover=handover, **on_b)
    _, output, regularised = fit(started_from(start), handover=handover, main_loop_modules=["L2SP"],
                                 module_options={"L2SP": {"alpha": 50.0, "beta": 0.0}}, **on_b)
    assert distance_from(regularised, start, "") < 0.2 * distance_from(plain, start, "")
    assert len(output["tracker"]["log"]["Training"]["t"]["l2sp"]) == 4  # logged once per training pass


# -- EWC ----------------------------------------------------------------------------------------------------------
def test_ewc_fisher_equals_a_hand_computation_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]  # batches of unequal size: a mean over examples
    fisher = diagonal_fisher(model, batches, "empirical", None, torch.device("cpu"))
    with torch.no_grad():
        residual = torch.softmax(model(x), dim=1) - F.one_hot(y, 3).float()  # d(-log p_y)/d logits
    torch.testing.assert_close(fisher["weight"], (residual[:, :, None] * x[:, None, :]).pow(2).mean(0))
    torch.testing.assert_close(fisher["bias"], residual.pow(2).mean(0))

    # sampled labels: y drawn from the model's own distribution with the generator (the same draws by hand)
    sampled = diagonal_fisher(model, batches, "sampled", torch.Generator().manual_seed(7), torch.device("cpu"))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
        drawn = torch.cat([torch.multinomial(probs[:16], 1, generator=generator).flatten(),
                           torch.multinomial(probs[16:], 1, generator=generator).flatten()])
    residual = probs - F.one_hot(drawn, 3).float()
    torch.testing.assert_close(sampled["bias"], residual.pow(2).mean(0))
    # and its expectation is the Fisher information: sum_c p_c (p - e_c)^2, here with many draws of one input
    many = [(x[:1].repeat(4000, 1), y[:1].repeat(4000))]
    estimate = diagonal_fisher(model, many, "sampled", torch.Generator().manual_seed(1), torch.device("cpu"))
    p = probs[0]
    exact = sum(p[c] * (p - F.one_hot(torch.tensor(c), 3).float()).pow(2) for c in range(3))
    torch.testing.assert_close(estimate["bias"], exact, atol=0.01, rtol=0.05)


def test_ewc_penalty_is_half_lambda_fisher_weighted_squared_distance_summed_over_earlier_tasks():
    model = net()
    names = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    tasks = {}
    for t in ("0", "1"):
        tasks[t] = {"fisher": {n: torch.rand(p.shape, generator=g).numpy() for n, p in names.items()},
                    "anchor": {n: torch.randn(p.shape, generator=g).numpy() for n, p in names.items()}}
    tasks["1"]["fisher"]["2.weight"] = np.zeros((5, 5), np.float32)  # another shape (another classifier): not used
    handover = Handover(transfer_data={"parameters": {"EWC": {"tasks": tasks}}}, previous_model=lambda: net())
    module = EWC.create(fake_trainer(model, handover, main_loop_modules=["EWC"],
                                     module_options={"EWC": {"strength": 3.0}}), "EWC")
    expected = 0.0
    for t, task in tasks.items():
        for n, p in names.items():
            fisher, anchor = torch.as_tensor(task["fisher"][n]), torch.as_tensor(task["anchor"][n])
            if fisher.shape == p.shape:
                expected += float((fisher * (p.detach() - anchor).pow(2)).sum())
    assert float(module.penalty().detach()) == pytest.approx(1.5 * expected, rel=1e-5)


def test_ewc_with_a_large_lambda_keeps_fine_tuned_weights_closer_and_fisher_accumulates_over_steps():
    first = fit(data=points(rule=0), max_iter=3, main_loop_modules=["EWC"], module_options={"EWC": {"samples": 32}})
    _, output_a, start = first
    assert list(output_a["transfer_data"]) == ["parameters"]  # no data_transfer: only the per-parameter data
    handover = handover_from(start, output_a)
    on_b = dict(data=points(rule=1, seed=1), max_iter=4, optimizer_options={"lr": 0.05}, early_stopping=False,
                restore_best=False)
    _, _, plain = fit(started_from(start), **on_b)
    _, output_b, regularised = fit(started_from(start), handover=handover, main_loop_modules=["EWC"],
                                   module_options={"EWC": {"strength": 2000.0}}, **on_b)
    assert distance_from(regularised, start, "") < 0.5 * distance_from(plain, start, "")
    tasks = output_b["transfer_data"]["parameters"]["EWC"]["tasks"]
    assert sorted(tasks) == ["0", "1"]  # the received task and this step's
    assert all(np.array_equal(tasks["0"]["fisher"][n], output_a["transfer_data"]["parameters"]["EWC"]["tasks"]["0"]
                              ["fisher"][n]) for n in start)
    assert all(np.allclose(tasks["1"]["anchor"][n], regularised[n].numpy()) for n in regularised)


def test_ewc_in_a_later_step_without_fisher_information_is_a_config_error():
    with pytest.raises(ConfigError, match="found no Fisher information"):
        EWC.create(fake_trainer(net(), Handover(model_state=net().state_dict()), main_loop_modules=["EWC"]), "EWC")


# -- SI -----------------------------------------------------------------------------------------------------------
GRADIENTS = []


@register_module("RecordsGradients")
class RecordsGradients(MainLoopModule):
    def pre_optimizer(self, model):
        GRADIENTS.append({n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()
                          if p.grad is not None})


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = net()
        self.unused = nn.Parameter(torch.ones(3))  # never in the loss: no gradient, no importance

    def forward(self, x):
        return self.body(x)


def test_si_importance_is_the_nonnegative_path_integral_and_zero_for_untouched_parameters():
    GRADIENTS.clear()
    model = WithUnused()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr, damping = 0.1, 1e-3
    _, output, final = fit(model, max_iter=3, optimizer="SGD", optimizer_options={"lr": lr}, freeze=["body.0.bias"],
                           restore_best=False, main_loop_modules=["RecordsGradients", "SI"],
                           module_options={"SI": {"damping": damping}})
    importance = {n: torch.as_tensor(v) for n, v in output["transfer_data"]["parameters"]["SI"]["importance"].items()}
    assert all(bool((v >= 0).all()) for v in importance.values())
    assert float(importance["unused"].abs().sum()) == 0 and float(importance["body.0.bias"].abs().sum()) == 0
    # plain SGD moves each weight by -lr * g, so the path integral -sum g * dw is lr * sum g^2
    for name in ("body.0.weight", "body.2.weight", "body.2.bias"):
        omega = lr * sum(step[name].pow(2) for step in GRADIENTS)
        expected = omega / ((final[name] - start[name]).pow(2) + damping)
        torch.testing.assert_close(importance[name], expected, rtol=1e-3, atol=1e-6)
    assert float(importance["body.0.weight"].sum()) > 0


def test_si_penalty_adds_its_gradient_two_c_omega_times_the_distance_before_each_step():
    model = net()
    names = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    importance = {n: torch.rand(p.shape, generator=g).numpy() for n, p in names.items()}
    anchor = {n: torch.randn(p.shape, generator=g).numpy() for n, p in names.items()}
    handover = Handover(transfer_data={"parameters": {"SI": {"importance": importance, "anchor": anchor}}},
                        previous_model=lambda: net())
    module = SI.create(fake_trainer(model, handover, main_loop_modules=["SI"],
                                    module_options={"SI": {"strength": 0.5}}), "SI")
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    module.mode, module.task_key = "Training", "t"
    module.pre_optimizer(model)
    for n, p in names.items():
        expected = 1 + 2 * 0.5 * torch.as_tensor(importance[n]) * (p.detach() - torch.as_tensor(anchor[n]))
        torch.testing.assert_close(p.grad, expected)


# -- the handover through the runner: per-parameter data next to the per-example data --------------------------------
def test_a_chain_hands_fisher_information_on_and_keeps_the_per_example_data_as_before():
    from toy_pipeline import ToyData, ToyModel

    from nntransfer import Experiment, TransferExperiment, train
    from nntransfer.configs import TrainerConfig

    base = TrainerConfig(loss_functions={"toy": "CrossEntropyLoss"}, max_iter=2, verbose=False, save_every_n=0,
                         main_loop_modules=["EWC"], module_options={"EWC": {"samples": 32}})
    steps = [Experiment(ToyData(), ToyModel(), base.replace(data_transfer=True), seed=1),
             Experiment(ToyData(), ToyModel(), base, seed=1),
             Experiment(ToyData(), ToyModel(), base.replace(loss_functions={"toy": "Distillation"}), seed=1)]
    result = train(TransferExperiment(steps))
    first, second, third = result
    assert sorted(first.transfer_data) == ["parameters", "train"]  # logits per example and the Fisher information
    # step 1 does not set data_transfer: it passes the logits it received on, with its own Fisher information
    assert np.array_equal(second.transfer_data["train"]["logits"], first.transfer_data["train"]["logits"])
    assert sorted(second.transfer_data["parameters"]["EWC"]["tasks"]) == ["0", "1"]
    assert "ewc" in second.history["Training"]["toy"] and "ewc" in third.history["Training"]["toy"]
