"""Built-in main-loop modules: NoiseAugmentation, RepresentationMatching, RepresentationMonitor, ModelWrapper."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nntransfer.trainer import CancelBatch, CapturingModule, MainLoopModule, register_module, trainer


def data(n=64, batch_size=32, zeros=False):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 6) if zeros else torch.randn(n, 6, generator=g)
    y = torch.arange(n) % 2
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    return {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def fit(model=None, loaders=None, **config):
    config = {"loss_functions": {"t": "CrossEntropyLoss"}, "verbose": False, "save_every_n": 0, "max_iter": 1, **config}
    return trainer(model or net(), loaders or data(), seed=5, **config)


SEEN = []


@register_module("SeeInputs")
class SeeInputs(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        std = shared_memory.get("noise_std")
        SEEN.append((self.mode, inputs.detach().cpu(), None if std is None else std.cpu()))
        return model, inputs


def test_noise_augmentation_by_std_mixture_and_snr():
    SEEN.clear()
    fit(loaders=data(n=2048, batch_size=2048, zeros=True), main_loop_modules=["NoiseAugmentation", "SeeInputs"],
        module_options={"NoiseAugmentation": {"std": 0.5}})
    train = [x for mode, x, _ in SEEN if mode == "Training"][0]
    assert train.std().item() == pytest.approx(0.5, rel=0.05)
    assert all(x.abs().sum() == 0 for mode, x, _ in SEEN if mode != "Training")  # no noise in evaluation

    SEEN.clear()
    fit(loaders=data(n=2048, batch_size=2048, zeros=True), main_loop_modules=["NoiseAugmentation", "SeeInputs"],
        module_options={"NoiseAugmentation": {"std": {0.0: 0.5, 1.0: 0.5}}})
    _, x, std = [s for s in SEEN if s[0] == "Training"][0]
    assert set(std.tolist()) == {0.0, 1.0}
    assert torch.all(x[std == 0] == 0) and x[std == 1].std().item() == pytest.approx(1.0, rel=0.05)

    SEEN.clear()
    fit(loaders=data(n=512, batch_size=512), main_loop_modules=["NoiseAugmentation", "SeeInputs"],
        module_options={"NoiseAugmentation": {"snr": 2.0}})
    _, x, std = [s for s in SEEN if s[0] == "Training"][0]
    clean = data(n=512)["train"]["t"].dataset.tensors[0]
    torch.testing.assert_close(std, clean.std(dim=1) / 2.0)


def test_evaluation_noise_is_seeded_so_scores_repeat():
    options = {"main_loop_modules": ["NoiseAugmentation"], "module_options": {"NoiseAugmentation": {"std": 2.0, "in_eval": True}}}
    a, out_a, _ = fit(**options)
    b, out_b, _ = fit(**options)
    assert a == b and out_a["test"] == out_b["test"]
    # same training noise, evaluation without noise: only the evaluation differs
    _, out_clean, state_clean = fit(main_loop_modules=["NoiseAugmentation"],
                                    module_options={"NoiseAugmentation": {"std": 2.0, "in_eval": False}})
    _, _, state_a = fit(**options)
    assert all(torch.equal(state_a[k], state_clean[k]) for k in state_a)
    assert out_a["test"]["t"]["loss"] != out_clean["test"]["t"]["loss"]


def test_representation_matching_adds_a_logged_term_that_changes_training():
    _, plain, plain_state = fit(max_iter=2)
    _, matched, matched_state = fit(max_iter=2, main_loop_modules=["NoiseAugmentation", "RepresentationMatching"],
                                    module_options={"NoiseAugmentation": {"std": 0.3},
                                                    "RepresentationMatching": {"layer": "1", "weight": 5.0}})
    term = matched["tracker"]["log"]["Training"]["t"]["representation_matching"]
    assert len(term) == 2 and all(v > 0 for v in term)  # one value per training pass (the mean of its batches)
    assert not torch.equal(plain_state["0.weight"], matched_state["0.weight"])
    with pytest.raises(ValueError, match="needs module_options"):
        fit(main_loop_modules=["RepresentationMatching"])


def test_representation_monitor_logs_statistics_of_the_layer():
    model = net()
    _, output, state = fit(model, main_loop_modules=["RepresentationMonitor"],
                           module_options={"RepresentationMonitor": {"layers": ["1"]}}, restore_best=False)
    logged = output["test"]["t"]
    x = data()["test"]["t"].dataset.tensors[0].to(next(model.parameters()).device)  # the trainer's device
    with torch.no_grad():
        rep = model[1](model[0](x))
    assert logged["1/mean"] == pytest.approx(rep.mean().item(), rel=1e-5)
    assert logged["1/sparsity"] == pytest.approx((rep == 0).float().mean().item(), rel=1e-5)
    assert "1/mean" not in output["tracker"]["log"]["Training"]["t"]  # evaluation only by default


class KeyedTupleNet(nn.Module):
    """Needs its task as ``session=`` (the trainer itself passes only neuralpredictors' ``data_key``) and returns
    ``(something else, logits)`` or ``{"aux": ..., "logits": ...}``."""

    def __init__(self, as_dict=False):
        super().__init__()
        self.body = net()
        self.as_dict = as_dict
        self.sessions = []

    def forward(self, x, session):
        self.sessions.append(session)
        logits = self.body(x)
        return {"aux": x.mean(), "logits": logits} if self.as_dict else (x.mean(), logits)


@pytest.mark.parametrize("as_dict,output", [(False, 1), (True, "logits")])
def test_model_wrapper_passes_the_task_key_and_selects_the_logits(as_dict, output):
    wrapped = KeyedTupleNet(as_dict)
    score, out, state = fit(wrapped, main_loop_modules=["ModelWrapper"], optimizer="SGD",
                            module_options={"ModelWrapper": {"task_key_argument": "session", "output": output}})
    # two batches of training, validation, final validation and test: every forward got its task
    assert wrapped.sessions == ["t"] * 8
    # the selected output is what the loss and the accuracy saw: the same as training the bare network
    plain_score, plain_out, plain_state = fit(net(), optimizer="SGD")
    assert score == plain_score and out["test"] == plain_out["test"]
    assert all(torch.equal(state[f"body.{name}"], value) for name, value in plain_state.items())
    with pytest.raises(TypeError, match="session"):  # without the wrapper the model cannot be called
        fit(KeyedTupleNet(as_dict))


@register_module("CancelsEveryTestBatch")
class CancelsEveryTestBatch(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Test":
            raise CancelBatch
        return model, inputs


@register_module("CancelsEveryTrainingBatch")
class CancelsEveryTrainingBatch(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training" and self.batch_index == 1:  # the pass's last batch
            raise CancelBatch
        return model, inputs


@pytest.mark.parametrize("representation_module,options", [
    ("RepresentationMonitor", {"layers": ["1"], "modes": ["Training", "Validation", "Test"]}),
    ("RepresentationMatching", {"layer": "1"}),
])
def test_representation_modules_stop_watching_a_layer_when_a_later_module_cancels_the_batch(representation_module,
                                                                                             options):
    model = net()
    # watching starts, then a later module cancels the batch (RepresentationMatching watches training batches)
    canceller = "CancelsEveryTrainingBatch" if representation_module == "RepresentationMatching" \
        else "CancelsEveryTestBatch"
    modules = [representation_module, canceller]
    _, output, _ = fit(model, main_loop_modules=modules, module_options={representation_module: options})
    assert not model[1]._forward_hooks  # no capture left on the model after training
    if representation_module == "RepresentationMonitor":
        assert "1/mean" in output["validation"]["t"] and output["test"] == {}  # every test batch was cancelled


SEEN_SHAPES = []


@register_module("RecordsHiddenShapes")
class RecordsHiddenShapes(CapturingModule):
    """A user module on CapturingModule: captures layer "1" of training batches only."""

    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Training":
            self.start_capture(["1"])
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        reps = self.end_capture()
        SEEN_SHAPES.append((self.mode, None if reps is None else tuple(reps["1"].shape)))
        return outputs, loss, targets


def test_a_capturing_module_gets_the_layer_outputs_of_exactly_the_batches_it_captured():
    model = net()
    SEEN_SHAPES.clear()
    fit(model, main_loop_modules=["RecordsHiddenShapes"])
    training = [shape for mode, shape in SEEN_SHAPES if mode == "Training"]
    assert training and all(shape is not None and shape[0] == 32 and shape[1] == model[0].out_features
                            for shape in training)  # the batch's outputs of layer "1", batch size 32
    assert all(shape is None for mode, shape in SEEN_SHAPES if mode != "Training")  # nothing captured there
    assert not model[1]._forward_hooks


def test_an_option_with_choices_refuses_any_other_value_naming_them():
    from nntransfer.configs import ConfigError
    from nntransfer.trainer import Option

    units = Option("normalised", str, choices=("normalised", "pixels"))
    assert units.check("NoiseAugmentation", "units", "pixels") == "pixels"
    with pytest.raises(ConfigError, match=r"\['units'\] must be 'normalised' or 'pixels', got 'pixel'"):
        units.check("NoiseAugmentation", "units", "pixel")
