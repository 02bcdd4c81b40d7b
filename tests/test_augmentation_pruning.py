"""Training-time augmentation and pruning: NoiseAugmentation's original semantics, Mixup/CutMix, noise-adversarial
training, lottery-ticket pruning and RandomReadoutReset."""
import pytest
import torch
import torch.nn.functional as F

from nntransfer.configs import ConfigError, TrainerConfig
from nntransfer.trainer import MainLoopModule, Trainer, register_module
from nntransfer.trainer.modules.mixup import cut_and_paste
from nntransfer.trainer.modules.noise_adversarial import reverse_gradient

from bias_helpers import fit, handover_from, image_net, net, pixel_batches, points

SEEN = []


@register_module("SeesBatches")
class SeesBatches(MainLoopModule):
    """Records every training batch's inputs, noise levels and Mixup draw (it runs after the module under test)."""

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training":
            std = shared_memory.get("noise_std")
            clean, mixup = shared_memory.get("clean_inputs"), shared_memory.get("mixup")
            SEEN.append({"inputs": inputs.detach().cpu().clone(), "std": None if std is None else std.cpu(),
                         "clean": None if clean is None else clean.cpu(),
                         "mixup": None if mixup is None else (mixup[0], mixup[1].cpu())})
        return model, inputs


# -- NoiseAugmentation with the original's semantics ---------------------------------------------------------------
def test_original_noise_semantics_pixel_units_fixed_fractions_and_clamping():
    SEEN.clear()
    options = {"std": {0.1: 0.25, 0.05: 0.5, -1: 0.25}, "units": "pixels", "clamp": True, "fractions": "fixed"}
    fit(image_net(), pixel_batches(n=200, batch_size=200), max_iter=1,
        main_loop_modules=["NoiseAugmentation", "SeesBatches"], module_options={"NoiseAugmentation": options})
    batch = SEEN[0]
    std, noisy, clean = batch["std"], batch["inputs"], batch["clean"]
    # fixed fractions: int(fraction * 200) samples per level; -1 and what is left over stay clean
    assert [int((std == level).sum()) for level in (0.1, 0.05, 0.0)] == [50, 100, 50]
    assert torch.equal(noisy[std == 0], clean[std == 0])
    # pixel units: the noise in pixel space (times each channel's normalisation std) has the level's std
    channel_std = torch.tensor([0.2, 0.4]).view(1, 2, 1, 1)
    pixel_noise = (noisy - clean) * channel_std
    for level in (0.1, 0.05):
        assert float(pixel_noise[std == level].std()) == pytest.approx(level, rel=0.05)
        assert float(pixel_noise[std == level].mean()) == pytest.approx(0.0, abs=0.005)

    SEEN.clear()  # a large level: clamped to the pixel range [0, 1], per channel
    fit(image_net(), pixel_batches(n=200, batch_size=200), max_iter=1,
        main_loop_modules=["NoiseAugmentation", "SeesBatches"],
        module_options={"NoiseAugmentation": dict(options, std={2.0: 1.0})})
    noisy = SEEN[0]["inputs"]
    pixels = noisy * channel_std + torch.tensor([0.3, 0.6]).view(1, 2, 1, 1)
    assert float(pixels.min()) == pytest.approx(0.0, abs=1e-6) and float(pixels.max()) == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < float(((pixels < 1e-6) | (pixels > 1 - 1e-6)).float().mean()) < 0.9  # many hit the bounds


@register_module("SeesRandomState")
class SeesRandomState(MainLoopModule):
    """Records the inputs and torch's RNG state before the next module draws (it runs before the module under test)."""

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training":  # the generator of the inputs' device: NoiseAugmentation draws there
            rng = torch.cuda.get_rng_state(inputs.device) if inputs.is_cuda else torch.get_rng_state()
            SEEN.append({"before": inputs.detach().clone(), "rng": rng})
        return model, inputs


def test_noise_augmentation_keeps_its_earlier_behaviour_and_refuses_unclear_levels():
    SEEN.clear()
    fit(data=points(n=64, batch_size=64), max_iter=1,
        main_loop_modules=["SeesRandomState", "NoiseAugmentation", "SeesBatches"],
        module_options={"NoiseAugmentation": {"std": 0.5}})
    before, after = SEEN[0], SEEN[1]
    inputs = before["before"]
    generator = torch.Generator(device=inputs.device).set_state(before["rng"])
    expected = (inputs + torch.randn(inputs.shape, generator=generator, device=inputs.device) * 0.5).cpu()
    assert torch.equal(after["inputs"], expected)  # the draws of the module before its new options
    with pytest.raises(ConfigError, match="negative level -1.0: use 0 for clean"):
        fit(main_loop_modules=["NoiseAugmentation"], module_options={"NoiseAugmentation": {"std": {-1: 0.5, 0.1: 0.5}}})
    with pytest.raises(ConfigError, match="no 'mean' and 'std'"):
        fit(main_loop_modules=["NoiseAugmentation"], module_options={"NoiseAugmentation": {"units": "pixels"}})


# -- Mixup --------------------------------------------------------------------------------------------------------
def test_mixup_loss_is_the_convex_combination_of_the_two_targets_losses():
    SEEN.clear()
    data = points(n=32, batch_size=32, shuffle=False)
    model = net()
    x, y = data["train"]["t"].dataset.tensors
    _, output, _ = fit(model, data, max_iter=1, optimizer="SGD", optimizer_options={"lr": 0.0},
                       track_iterations=True, main_loop_modules=["Mixup", "SeesBatches"],
                       module_options={"Mixup": {"alpha": 0.4}})
    lam, partner = SEEN[0]["mixup"]
    assert 0 < lam < 1
    torch.testing.assert_close(SEEN[0]["inputs"], lam * x + (1 - lam) * x[partner])
    with torch.no_grad():  # lr 0: the model as it was for that batch (on the device the trainer chose)
        out = model(SEEN[0]["inputs"].to(next(model.parameters()).device)).cpu()
    expected = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[partner])
    assert output["tracker"]["iterations"]["Training"]["t"][0] == pytest.approx(float(expected), rel=1e-6)


def test_cutmix_pastes_a_box_whose_share_is_one_minus_lambda():
    torch.manual_seed(0)
    images = torch.zeros(4, 1, 10, 10)
    images[1] = 1.0
    partner = torch.tensor([1, 0, 3, 2])
    mixed, lam = cut_and_paste(images, partner, 0.64)
    assert float(mixed[0].mean()) == pytest.approx(1 - lam)  # image 0 took its box from the all-ones image 1
    assert 0.64 <= lam < 1


# -- noise-adversarial training -------------------------------------------------------------------------------------
def test_gradient_reversal_flips_and_scales_the_gradient_at_the_representation():
    torch.manual_seed(0)
    representation = torch.randn(5, 4, requires_grad=True)
    weights = torch.randn(4, 3)

    def discriminator_loss(features):
        return torch.tanh(features @ weights).pow(2).sum()

    (plain,) = torch.autograd.grad(discriminator_loss(representation), representation)
    reversed_features = reverse_gradient(representation, 0.7)
    assert torch.equal(reversed_features, representation)  # the forward pass is the identity
    (reversed_grad,) = torch.autograd.grad(discriminator_loss(reversed_features), representation)
    torch.testing.assert_close(reversed_grad, -0.7 * plain)


def test_noise_adversarial_trains_a_discriminator_whose_reversed_gradient_reaches_the_model():
    config = TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, verbose=False, save_every_n=0, max_iter=3,
                           optimizer_options={"lr": 0.01}, main_loop_modules=["NoiseAugmentation", "NoiseAdversarial"],
                           module_options={"NoiseAugmentation": {"std": {0.0: 0.5, 1.0: 0.5}},
                                           "NoiseAdversarial": {"layer": "1", "levels": [0.0, 1.0], "reversal": 0.5,
                                                                "weight": 2.0}})
    trainer = Trainer(net(), points(n=128, batch_size=32), 5, config)
    module = trainer.modules[1]
    before = {n: p.detach().clone() for n, p in module.discriminator.named_parameters()}
    # the gradient at the representation from the module's term is -reversal * weight * d(discriminator loss)
    rep = torch.randn(8, 8, device=module.device, requires_grad=True)
    levels = torch.tensor([0.0, 1.0] * 4, device=module.device)
    classes = levels.long()
    (towards,) = torch.autograd.grad(2.0 * F.cross_entropy(module.discriminator(rep), classes), rep)
    (through,) = torch.autograd.grad(
        2.0 * F.cross_entropy(module.discriminator(reverse_gradient(rep, module.reversal_scale())), classes), rep)
    torch.testing.assert_close(through, -0.5 * towards)
    _, output, _ = trainer.train()
    training = output["tracker"]["log"]["Training"]["t"]
    assert len(training["noise_adversarial"]) == 3 and len(training["noise_discriminator_accuracy"]) == 3
    assert any(not torch.equal(p, before[n]) for n, p in module.discriminator.named_parameters())
    with pytest.raises(ConfigError, match="put NoiseAugmentation before it"):
        fit(main_loop_modules=["NoiseAdversarial"], module_options={"NoiseAdversarial": {"layer": "1"}})


# -- lottery tickets ------------------------------------------------------------------------------------------------
WEIGHTS = []


@register_module("SeesWeights")
class SeesWeights(MainLoopModule):
    """Records the first layer's weights at the start and end of every training pass (after LotteryTicket's hooks)."""

    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            WEIGHTS.append(("start", self.epoch, model[0].weight.detach().cpu().clone()))

    def post_epoch(self, model):
        if self.mode == "Training":
            WEIGHTS.append(("end", self.epoch, model[0].weight.detach().cpu().clone()))


def lottery(rounds=3, fraction=0.5, max_iter=None, data_transfer=False, **options):
    config = TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, verbose=False, save_every_n=0,
                           max_iter=max_iter or 2 * rounds + 2, early_stopping=False, optimizer_options={"lr": 0.01},
                           main_loop_modules=["LotteryTicket", "SeesWeights"], data_transfer=data_transfer,
                           module_options={"LotteryTicket": {"rounds": rounds, "round_epochs": 2,
                                                             "prune_fraction": fraction, **options}})
    return Trainer(net(hidden=16), points(n=64, batch_size=16), 5, config)


@pytest.mark.parametrize("fraction,scope", [(0.5, "layer"), (0.2, "layer"), (0.2, "global")])
def test_sparsity_after_k_rounds_is_one_minus_one_minus_p_to_the_k_and_pruned_weights_stay_zero(fraction, scope):
    WEIGHTS.clear()
    trainer = lottery(rounds=3, fraction=fraction, scope=scope)
    module = trainer.modules[0]
    _, output, state = trainer.train()
    sparsity = output["tracker"]["log"]["Training"]["all"]["sparsity"]
    expected = [1 - (1 - fraction) ** k for k in (0, 0, 1, 1, 2, 2, 3, 3)]  # pruned at the start of epochs 3, 5, 7
    tolerance = 3 / min(m.numel() for m in module.masks.values())  # each round rounds to whole weights
    assert sparsity == pytest.approx(expected, abs=tolerance if fraction != 0.5 else 1e-12)
    for name, mask in module.masks.items():
        assert torch.all(state[name][~mask.cpu()] == 0)  # the returned weights
    pruned = ~module.masks["0.weight"].cpu()
    assert all(torch.all(w[pruned] == 0) for _, epoch, w in WEIGHTS if epoch >= 7)  # through the last round


def test_rewinding_restores_the_weights_of_the_rewind_epoch():
    WEIGHTS.clear()
    trainer = lottery(rounds=2, fraction=0.3, rewind_epoch=1)
    trainer.train()
    at_rewind_epoch = next(w for when, epoch, w in WEIGHTS if when == "end" and epoch == 1)
    for epoch in (3, 5):  # the rounds start with the weights of the end of epoch 1, masked
        started = next(w for when, e, w in WEIGHTS if when == "start" and e == epoch)
        kept = started != 0
        assert torch.equal(started[kept], at_rewind_epoch[kept]) and int((~kept).sum()) > 0
    end_of_round = next(w for when, e, w in WEIGHTS if when == "end" and e == 2)
    assert not torch.equal(end_of_round, at_rewind_epoch)  # training had moved them


def test_a_ticket_is_handed_to_a_later_step_and_retrained_there():
    first = lottery(rounds=2, fraction=0.5)
    _, output, state = first.train()
    ticket = output["transfer_data"]["parameters"]["LotteryTicket"]
    assert ticket["sparsity"] == pytest.approx(0.75)
    config = TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, verbose=False, save_every_n=0, max_iter=2,
                           main_loop_modules=["LotteryTicket"])
    later = Trainer(net(hidden=16, seed=7), points(rule=1), 5, config,
                    handover=handover_from(state, output, net(hidden=16)))
    module = later.modules[0]
    for name, mask in module.masks.items():
        assert (mask.cpu().numpy() == ticket["mask"][name].astype(bool)).all()
    _, out, retrained = later.train()
    assert out["tracker"]["log"]["Training"]["all"]["sparsity"] == pytest.approx([0.75, 0.75])
    assert torch.all(retrained["0.weight"][~module.masks["0.weight"].cpu()] == 0)
    with pytest.raises(ConfigError, match="rounds=0 retrains a ticket an earlier step found, but none was handed"):
        Trainer(net(), points(), 5, TrainerConfig(loss_functions={"t": "CrossEntropyLoss"},
                                                   main_loop_modules=["LotteryTicket"]))
    with pytest.raises(ConfigError, match="set early_stopping=False"):
        Trainer(net(), points(), 5, TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, max_iter=5,
                                                   main_loop_modules=["LotteryTicket"],
                                                   module_options={"LotteryTicket": {"rounds": 1, "round_epochs": 2}}))


# -- RandomReadoutReset ------------------------------------------------------------------------------------------
READOUT = []


@register_module("SeesReadout")
class SeesReadout(MainLoopModule):
    def pre_epoch(self, model, mode, **options):
        if mode == "Training":
            READOUT.append(("start", self.epoch, model[2].weight.detach().cpu().clone(),
                            model[0].weight.detach().cpu().clone()))

    def post_epoch(self, model):
        if self.mode == "Training":
            READOUT.append(("end", self.epoch, model[2].weight.detach().cpu().clone(),
                            model[0].weight.detach().cpu().clone()))


def test_random_readout_reset_reinitialises_the_chosen_layers_every_n_epochs():
    READOUT.clear()
    fit(max_iter=5, early_stopping=False, main_loop_modules=["RandomReadoutReset", "SeesReadout"],
        module_options={"RandomReadoutReset": {"layers": ["2"], "every": 2}})
    starts = {epoch: (readout, core) for when, epoch, readout, core in READOUT if when == "start"}
    ends = {epoch: (readout, core) for when, epoch, readout, core in READOUT if when == "end"}
    for epoch in (2, 3, 4, 5):
        readout_changed = not torch.equal(starts[epoch][0], ends[epoch - 1][0])
        assert readout_changed == (epoch in (3, 5))  # reset before epochs 3 and 5
        assert torch.equal(starts[epoch][1], ends[epoch - 1][1])  # other layers untouched
    bound = 1 / 8 ** 0.5  # nn.Linear(8, 2)'s initialisation is uniform within +-1/sqrt(fan_in)
    assert float(starts[3][0].abs().max()) <= bound
