"""The trainer: hook order, modules, early stopping, schedules, checkpoints and exact resume (CPU)."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nntransfer.configs import ConfigError, TrainerConfig
from nntransfer.trainer import (
    CancelBatch,
    CancelEpoch,
    DirectoryCheckpointStore,
    MainLoopModule,
    MemoryCheckpointStore,
    Trainer,
    TrainingDiverged,
    register_module,
    trainer,
)


def loaders(n_train=64, n_eval=32, batch_size=32, tasks=("t",), shuffle=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_eval, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    out = {"train": {}, "validation": {}, "test": {}}
    for i, task in enumerate(tasks):
        n = n_train // (i + 1)  # unequal sizes for several tasks
        out["train"][task] = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=shuffle)
        out["validation"][task] = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=batch_size)
        out["test"][task] = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=batch_size)
    return out


def model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def train(m=None, data=None, **config):
    config.setdefault("loss_functions", {"t": "CrossEntropyLoss"})
    config.setdefault("verbose", False)
    return trainer(m or model(), data or loaders(), seed=1, **config)


CALLS = []


@register_module("Recorder")
class Recorder(MainLoopModule):
    """Written the original nntransfer way: ``__init__(self, trainer)`` and the original hook signatures."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self.built_for = trainer

    def state(self):
        """The loop's state the hook runner set before this call."""
        return self.mode, self.train_mode, self.epoch, self.task_key, self.batch_index

    def pre_epoch(self, model, mode, **options):
        super().pre_epoch(model, mode, **options)
        CALLS.append(("pre_epoch", self.state(), mode, options, isinstance(model, nn.Module), self.shared_memory))

    def pre_forward(self, model, inputs, task_key, shared_memory):
        CALLS.append(("pre_forward", self.state(), tuple(inputs.shape), task_key, sorted(shared_memory),
                      shared_memory is self.shared_memory))
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        CALLS.append(("post_forward", self.state(), tuple(outputs.shape), float(loss), tuple(targets.shape),
                      sorted(shared_memory)))
        return outputs, loss, targets

    def post_backward(self, model):
        CALLS.append(("post_backward", self.state(), all(p.grad is not None for p in model.parameters())))

    def pre_optimizer(self, model):
        CALLS.append(("pre_optimizer", self.state()))

    def post_optimizer(self, model):
        CALLS.append(("post_optimizer", self.state()))

    def post_epoch(self, model):
        CALLS.append(("post_epoch", self.state(), self.shared_memory))


def test_hook_order_arguments_and_state_for_training_validation_and_test():
    CALLS.clear()
    config = TrainerConfig(max_iter=1, main_loop_modules=["Recorder"], save_every_n=0, verbose=False,
                           loss_functions={"t": "CrossEntropyLoss"})
    t = Trainer(model(), loaders(), seed=1, config=config)
    (module,) = t.modules
    assert module.built_for is t and (module.model, module.config, module.seed) == (t.model, config, 1)
    assert module.device == t.device and module.tracker is t.tracker and module.options == {}
    t.train()

    def batch(index):
        state = ("Training", True, 1, "t", index)
        return [("pre_forward", state, (32, 6), "t", ["extra"], True),
                ("post_forward", state, (32, 2), 0.0, (32,), ["extra"]),
                ("post_backward", state, True), ("pre_optimizer", state), ("post_optimizer", state)]

    def evaluation(mode):
        state = (mode, False, 1, "t", 0)
        return [("pre_epoch", (mode, False, 1, None, None), mode, {"epoch": 1}, True, None),
                ("pre_forward", state, (32, 6), "t", ["extra"], True),
                ("post_forward", state, (32, 2), 0.0, (32,), ["extra"]),
                ("post_epoch", (mode, False, 1, None, None), None)]

    expected = ([("pre_epoch", ("Training", True, 1, None, None), "Training", {"epoch": 1}, True, None)]
                + batch(0) + batch(1) + [("post_epoch", ("Training", True, 1, None, None), None)]
                + evaluation("Validation")   # the epoch's evaluation
                + evaluation("Validation")   # final score of the restored best parameters
                + evaluation("Test"))
    assert CALLS == expected


class AddLossTerm(MainLoopModule):
    def post_forward(self, outputs, loss, targets, **shared_memory):
        extra = sum((p ** 2).sum() for p in self.model.parameters())
        return outputs, loss + 10 * extra, targets


class ZeroInputs(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        return model, torch.zeros_like(inputs)


def first_gradient(modules):
    grads = []

    class Grab(MainLoopModule):
        def post_backward(self, model):
            if not grads:
                grads.append(model[0].weight.grad.detach().cpu().clone())

    register_module("Grab")(Grab)
    train(max_iter=1, main_loop_modules=modules + ["Grab"], save_every_n=0, optimizer="SGD",
          optimizer_options={"lr": 0.1})
    return grads[0]


def test_a_module_adding_a_loss_term_changes_the_gradients():
    register_module("AddLossTerm")(AddLossTerm)
    plain, regularised = first_gradient([]), first_gradient(["AddLossTerm"])
    expected_extra = 20 * model()[0].weight  # d/dw of 10 * sum(w^2), before any step
    torch.testing.assert_close(regularised - plain, expected_extra.detach(), rtol=1e-4, atol=1e-5)


def test_a_module_changing_inputs_is_seen_by_the_model():
    register_module("ZeroInputs")(ZeroInputs)
    seen = []
    m = model()
    m[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].abs().sum().item()))
    train(m, max_iter=1, main_loop_modules=["ZeroInputs"], save_every_n=0)
    assert seen and all(v == 0 for v in seen)


def test_cancel_batch_and_cancel_epoch():
    steps = []

    @register_module("SkipFirst")
    class SkipFirst(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if self.mode == "Training" and self.batch_index == 0:
                raise CancelBatch
            return model, inputs

        def post_optimizer(self, model):
            steps.append(self.epoch)

    train(max_iter=2, main_loop_modules=["SkipFirst"], save_every_n=0)
    assert steps == [1, 2]  # two batches per epoch, the first skipped

    evaluated = []

    @register_module("StopEarly")
    class StopEarly(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if self.batch_index == 1:
                raise CancelEpoch
            evaluated.append(self.mode)
            return model, inputs

    train(max_iter=1, main_loop_modules=["StopEarly"], data=loaders(n_train=128), save_every_n=0)
    assert evaluated.count("Training") == 1


def scripted_validation(accuracies):
    """A module that makes validation accuracy follow ``accuracies`` (one per evaluation)."""
    state = {"evaluations": 0, "params": {}}

    @register_module("Scripted")
    class Scripted(MainLoopModule):
        def pre_epoch(self, model, mode, **options):
            super().pre_epoch(model, mode, **options)
            if mode == "Validation":
                state["evaluations"] += 1

        def post_forward(self, outputs, loss, targets, **shared):
            if self.mode == "Validation" and state["evaluations"] <= len(accuracies):
                acc = accuracies[state["evaluations"] - 1]
                n_right = round(acc * len(targets))
                fake = torch.zeros_like(outputs)
                fake[torch.arange(len(targets)), targets] = 1.0
                fake[n_right:] = -fake[n_right:]
                return fake, loss, targets
            return outputs, loss, targets

        def post_epoch(self, model):
            if self.mode == "Training":
                state["params"][self.epoch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    return state


def test_early_stopping_after_patience_and_restore_best():
    state = scripted_validation([0.5, 0.9, 0.6, 0.6, 0.6, 0.95])
    m = model()
    score, output, final = train(m, max_iter=20, patience=3, main_loop_modules=["Scripted"], save_every_n=0)
    assert output["epochs"] == 5  # best at epoch 2, then 3 non-improving evaluations
    assert output["best_epoch"] == 2
    for name, value in state["params"][2].items():
        assert torch.equal(final[name], value)


def test_plateau_schedule_restores_best_and_decays_the_lr():
    scripted_validation([0.5, 0.9, 0.6, 0.6, 0.6, 0.6, 0.6])
    _, output, _ = train(max_iter=20, patience=2, lr_schedule="plateau", lr_decay_steps=2, lr_decay_factor=0.5,
                         main_loop_modules=["Scripted"], save_every_n=0, optimizer_options={"lr": 0.2})
    lrs = output["tracker"]["log"]["Training"]["all"]["lr"]
    # patience runs out after epoch 4: decay (lr 0.1 from epoch 5); again after epoch 6: stop
    assert lrs == [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]


def test_warmup_milestones_and_iteration_budget():
    _, output, _ = train(max_iter=6, warmup_epochs=2, lr_schedule="milestones", milestones=[4], lr_decay_factor=0.1,
                         optimizer_options={"lr": 1.0}, optimizer="SGD", save_every_n=0, early_stopping=False)
    lrs = output["tracker"]["log"]["Training"]["all"]["lr"]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1])
    _, output, _ = train(max_iter=100, max_steps=5, save_every_n=0, early_stopping=False)
    assert output["epochs"] == 3  # two steps per epoch: the 5th step ends epoch 3


def test_freeze_leaves_parameters_unchanged_and_reset_reinitialises():
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _, _, after = train(m, max_iter=2, freeze=["0.*"], save_every_n=0, restore_best=False)
    assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["0.bias"], before["0.bias"])
    assert not torch.equal(after["3.weight"], before["3.weight"])
    with pytest.raises(ConfigError, match="freeze pattern 'nope' matches no parameter"):
        train(model(), max_iter=1, freeze=["nope"])


def test_gradient_accumulation_matches_a_larger_batch():
    data_small = loaders(batch_size=16, shuffle=False)
    data_large = loaders(batch_size=32, shuffle=False)
    opts = dict(max_iter=1, optimizer="SGD", optimizer_options={"lr": 0.5}, save_every_n=0, restore_best=False)
    _, _, accumulated = train(model(), data_small, accumulate_gradients=2, **opts)
    _, _, large = train(model(), data_large, **opts)
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], rtol=1e-5, atol=1e-6)


def test_several_tasks_cycle_the_shorter_loader():
    seen = []

    @register_module("TaskLog")
    class TaskLog(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if self.mode == "Training":
                seen.append(task_key)
            return model, inputs

    train(data=loaders(n_train=128, tasks=("a", "b")), max_iter=1, save_every_n=0, main_loop_modules=["TaskLog"],
          loss_functions={"a": "CrossEntropyLoss", "b": "CrossEntropyLoss"})
    assert seen == ["a", "b"] * 4  # a has 4 batches, b has 2 and is cycled


def test_nan_loss_stops_with_epoch_and_batch_named():
    @register_module("Poison")
    class Poison(MainLoopModule):
        def post_forward(self, outputs, loss, targets, **shared):
            if self.mode == "Training" and self.epoch == 2 and self.batch_index == 1:
                loss = loss + float("nan")
            return outputs, loss, targets

    with pytest.raises(TrainingDiverged, match="epoch 2, batch 1"):
        train(max_iter=3, main_loop_modules=["Poison"], save_every_n=0)


def test_checkpoint_pruning_keeps_last_and_best():
    scripted_validation([0.5, 0.9, 0.6, 0.7, 0.6, 0.8])
    store = MemoryCheckpointStore()
    train(max_iter=6, patience=10, checkpoints=store, save_every_n=1, keep_last_n=2, keep_best_n=1,
          main_loop_modules=["Scripted"])
    assert sorted(store.states) == [2, 5, 6]  # best (epoch 2) + last two


class RunsCodeWhenUnpickled:
    """A checkpoint someone else wrote: unpickling it would call ``marker.write_text`` (any callable could run)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_directory_store_loads_weights_only(tmp_path):
    import pickle

    store = DirectoryCheckpointStore(tmp_path / "ckpt")
    store.save(3, 0.5, {"w": torch.ones(2), "epoch": 3})
    store.save(4, 0.7, {"w": torch.zeros(2), "epoch": 4})
    assert store.latest()["epoch"] == 4
    store.prune(keep_last_n=1, keep_best_n=0)
    assert len(list((tmp_path / "ckpt").glob("*.pt"))) == 1
    marker = tmp_path / "marker"
    store.save(5, 0.9, {"w": torch.ones(2), "payload": RunsCodeWhenUnpickled(marker)})
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        store.latest()
    assert not marker.exists()  # stored bytes never execute code


RESUME_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_trainer import loaders, model
    from nntransfer.trainer import DirectoryCheckpointStore, MainLoopModule, register_module, trainer

    kill_at = int(os.environ.get("KILL_AT", "0"))
    where = os.environ.get("KILL_WHERE", "post_epoch")

    TRAINED_EPOCHS = []

    @register_module("Killer")
    class Killer(MainLoopModule):
        def pre_epoch(self, model, mode, **options):
            super().pre_epoch(model, mode, **options)
            if mode == "Training":
                TRAINED_EPOCHS.append(self.epoch)
            if where == "pre_epoch" and mode == "Training" and self.epoch == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        def post_epoch(self, model):
            if where == "post_epoch" and self.mode == "Validation" and self.epoch == kill_at:
                self.trainer.wait_for_checkpoint()  # the previous epoch's checkpoint is written in the background
                os.kill(os.getpid(), signal.SIGKILL)

    store = DirectoryCheckpointStore(sys.argv[1]) if sys.argv[1] != "-" else None
    score, output, state = trainer(model(dropout=0.3), loaders(n_train=96, batch_size=16), seed=3, checkpoints=store,
                                   max_iter=6, patience=10, main_loop_modules=["Killer", "NoiseAugmentation"],
                                   module_options={{"NoiseAugmentation": {{"std": 0.2}}}},
                                   loss_functions={{"t": "CrossEntropyLoss"}}, verbose=False, save_every_n=1,
                                   **json.loads(os.environ["TRAINER_OPTIONS"]))
    torch.save({{"score": score, "state": state, "tracker": output["tracker"]}}, sys.argv[2])
    print("trained epochs", TRAINED_EPOCHS)
""")


@pytest.mark.slow  # processes killed with SIGKILL (in-process stops: test_trainer_loop.py)
@pytest.mark.parametrize("kill_at,where,options", [
    (3, "post_epoch", {"force_cpu": True}), (1, "pre_epoch", {"force_cpu": True}),  # needs nothing more on the CPU
    pytest.param(3, "post_epoch", {"deterministic": True}, marks=pytest.mark.cuda, id="cuda")])
def test_killed_and_resumed_run_ends_bit_identical(tmp_path, kill_at, where, options):
    import json

    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(tests=os.path.dirname(__file__)))

    def run(store, result, **env):
        return subprocess.run([sys.executable, str(script), str(store), str(result)],
                              env={**os.environ, "TRAINER_OPTIONS": json.dumps(options), **env},
                              capture_output=True, text=True, timeout=300)

    reference = run("-", tmp_path / "reference.pt")
    assert reference.returncode == 0, reference.stderr
    killed = run(tmp_path / "ckpt", tmp_path / "never.pt", KILL_AT=str(kill_at), KILL_WHERE=where)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.pt"))
    assert (saved != []) == (where == "post_epoch")  # killed before the first checkpoint: nothing saved
    resumed = run(tmp_path / "ckpt", tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr
    # after a kill in epoch 3 it resumes from epoch 2's checkpoint; killed before any checkpoint: from scratch
    first = 3 if where == "post_epoch" else 1
    assert f"trained epochs {list(range(first, 7))}" in resumed.stdout
    a = torch.load(tmp_path / "reference.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a["score"] == b["score"]
    assert a["tracker"] == b["tracker"]
    for name in a["state"]:
        assert torch.equal(a["state"][name], b["state"][name]), name
