"""Trainer contracts others code against: module construction, output types, resume after early stopping,
loss selection, transfer data in batches, evaluation interval, parameter patterns, mode control."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nntransfer.configs import ConfigError, TrainerConfig
from nntransfer.trainer import (
    MainLoopModule,
    MemoryCheckpointStore,
    Trainer,
    Option,
    TrainingDiverged,
    register_module,
    trainer,
)
from nntransfer.trainer.losses import register_loss
from test_trainer import loaders, model, scripted_validation, train


class WithOwnInit(MainLoopModule):
    """A user module with the original nntransfer constructor signature, ``__init__(self, trainer)``."""

    options_declared = {"alpha": Option(1, int, "an example option")}

    def __init__(self, trainer):
        super().__init__(trainer)
        self.built_with = (self.model, self.config, self.device, self.seed)
        self.calls = 0

    def post_forward(self, outputs, loss, targets, **shared_memory):
        self.calls += 1
        return outputs, loss, targets

    def post_epoch(self, model):
        self.log("t", "calls", self.calls)


def test_modules_are_built_from_the_trainer_and_get_their_options():
    m = model()
    config = TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, verbose=False, save_every_n=0, max_iter=1,
                           main_loop_modules=["test_trainer_contracts.WithOwnInit"],
                           module_options={"test_trainer_contracts.WithOwnInit": {"alpha": 3}})
    t = Trainer(m, loaders(), seed=7, config=config)
    (module,) = t.modules
    assert isinstance(module, WithOwnInit)
    assert module.built_with == (m, config, t.device, 7)
    assert module.options == {"alpha": 3} and module.trainer is t and module.tracker is t.tracker
    assert module.train_loader is t.loaders["train"]  # the original's attribute: {task: loader}
    t.train()
    assert module.calls == 2 + 1 + 1 + 1  # two training batches, validation, final validation, test
    # built by hand, e.g. in a unit test: anything with model, config, device and seed; its own tracker
    alone = WithOwnInit(SimpleNamespace(model=m, config=config, device=torch.device("cpu"), seed=0))
    assert alone.options == {"alpha": 3} and alone.mode is None
    with pytest.raises(RuntimeError, match="log\\(\\) is for hooks"):  # no pass, no mode to log in
        alone.log("t", "x", 1.0)
    alone.mode = "Training"  # as the hook runner does before it calls a hook
    alone.post_epoch(m)
    assert alone.tracker.log["Training"]["t"]["calls"] == [0]
    with pytest.raises(ConfigError, match="unknown main-loop module 'Nope'"):
        train(main_loop_modules=["Nope"])


def _plain(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, np.generic))


def test_output_is_plain_python_state_is_on_the_cpu_and_cb_runs_once_per_epoch():
    calls = []
    net = model()
    score, output, state = trainer(net, loaders(), 1, {"seed": 1}, lambda **kwargs: calls.append(kwargs), max_iter=3,
                                   loss_functions={"t": "CrossEntropyLoss"}, verbose=False, comment="ignored",
                                   early_stopping=False)
    # nnfabrik's convention: cb(**kwargs), here uid, epoch, model and info (steps; the epoch's validation score)
    assert [(c["uid"], c["epoch"], c["model"] is net, c["info"]["step"]) for c in calls] == \
        [({"seed": 1}, epoch, True, 2 * epoch) for epoch in (1, 2, 3)]
    assert calls[-1]["info"]["validation"]["t"]["accuracy"] == output["tracker"]["log"]["Validation"]["t"]["accuracy"][-1]
    assert isinstance(score, float) and 0 <= score <= 1
    assert _plain(output) and set(output) >= {"tracker", "test", "validation"}
    assert output["validation"]["t"]["accuracy"] == score
    assert set(output["test"]["t"]) == {"loss", "accuracy"}
    assert output["tracker"]["epochs"]["Training"] == [1, 2, 3]
    assert all(v.device.type == "cpu" for v in state.values()) and set(state) == set(model().state_dict())


def test_a_run_resumed_after_its_early_stop_does_not_train_further():
    scripted_validation([0.5, 0.9, 0.6, 0.6, 0.6, 0.95])
    store = MemoryCheckpointStore()
    score, output, state = train(max_iter=20, patience=3, main_loop_modules=["Scripted"], checkpoints=store,
                                 keep_last_n=1, keep_best_n=0)
    assert output["epochs"] == 5 and list(store.states) == [5]
    # the job died after its last checkpoint: the restart only re-does the final evaluation
    trained = []

    @register_module("CountEpochs")
    class CountEpochs(MainLoopModule):
        def pre_epoch(self, model, mode, **options):
            super().pre_epoch(model, mode, **options)
            trained.append(mode)

    again, output2, state2 = train(max_iter=20, patience=3, main_loop_modules=["CountEpochs"], checkpoints=store)
    assert "Training" not in trained and output2["epochs"] == 5 and output2["best_epoch"] == 2
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_checkpoints_are_ranked_by_their_own_epochs_score():
    scripted_validation([0.5, 0.9, 0.6, 0.7, 0.6, 0.8])
    store = MemoryCheckpointStore()
    train(max_iter=6, patience=10, checkpoints=store, save_every_n=1, keep_last_n=1, keep_best_n=2,
          main_loop_modules=["Scripted"])
    assert sorted(store.states) == [2, 6]
    assert {e: s for e, (s, _) in store.states.items()} == {2: 29 / 32, 6: 26 / 32}  # 0.9, 0.8 of 32 samples
    scripted_validation([0.5, 0.6, 0.95, 0.7, 0.6, 0.8])
    store = MemoryCheckpointStore()
    train(max_iter=6, patience=10, checkpoints=store, save_every_n=2, keep_last_n=0, keep_best_n=1,
          main_loop_modules=["Scripted"])
    assert sorted(store.states) == [6]  # saved at 2, 4, 6 only (0.6, 0.7, 0.8)


def test_loss_by_task_key_extra_test_sets_and_transfer_data_in_the_loss():
    got = {}

    @register_loss("TeacherMSE")
    class TeacherMSE(nn.Module):
        uses_extra = True

        def forward(self, outputs, targets, extra):
            got.setdefault("keys", set(extra))
            return ((outputs - extra["logits"]) ** 2).mean()

    @register_module("SeeExtra")
    class SeeExtra(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if shared_memory["extra"]:
                got["module"] = shared_memory["extra"]["logits"].shape
            return model, inputs

    x, y = torch.randn(32, 6), torch.arange(32) % 2
    teacher = torch.randn(32, 2)

    def collate(items):
        return (torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]),
                {"logits": torch.stack([i[2] for i in items])})

    with_teacher = DataLoader(TensorDataset(x, y, teacher), batch_size=16, collate_fn=collate)
    plain = DataLoader(TensorDataset(x, y), batch_size=16)
    data = {"train": {"t": with_teacher}, "validation": {"t": with_teacher}, "test": {"t": with_teacher}}
    m = model()
    _, output, _ = train(m, data=data, max_iter=1, loss_functions={"t": "TeacherMSE"}, save_every_n=0,
                         main_loop_modules=["SeeExtra"], restore_best=False)
    assert got["keys"] == {"logits"} and got["module"] == (16, 2)
    device = next(m.parameters()).device  # where the trainer left the model
    with torch.no_grad():
        expected = ((m(x.to(device)) - teacher.to(device)) ** 2).mean().item()
    assert output["test"]["t"]["loss"] == pytest.approx(expected, rel=1e-5)

    # extra test sets find their loss by the longest task-key prefix; several entries need a match
    data = {"train": {"t": plain}, "validation": {"t": plain}, "test": {"t": plain, "t_rotated_10": plain}}
    _, output, _ = train(data=data, max_iter=1, save_every_n=0,
                         loss_functions={"t": "CrossEntropyLoss", "u": "MSELoss"})
    assert set(output["test"]) == {"t", "t_rotated_10"}
    assert output["test"]["t_rotated_10"] == output["test"]["t"]
    with pytest.raises(ConfigError, match="no loss function for task 'v'"):
        train(data={"train": {"v": plain}, "validation": {"v": plain}}, max_iter=1,
              loss_functions={"t": "CrossEntropyLoss", "u": "MSELoss"})
    # no test split at all: fine, output["test"] is empty
    _, output, _ = train(data={"train": {"t": plain}, "validation": {"t": plain}}, max_iter=1, save_every_n=0)
    assert output["test"] == {}


def test_validation_and_test_measure_the_plain_loss_a_training_objective_declares():
    """A distilled student's evaluation loss is cross-entropy, like a label-only student's (issue 18)."""
    import torch.nn.functional as F

    from nntransfer.trainer.losses import Distillation, evaluation_loss

    g = torch.Generator().manual_seed(0)
    x, y, teacher = torch.randn(32, 6, generator=g), torch.arange(32) % 2, 3 * torch.randn(32, 2, generator=g)

    def collate(items):
        return (torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]),
                {"logits": torch.stack([i[2] for i in items])})

    with_teacher = DataLoader(TensorDataset(x, y, teacher), batch_size=32, collate_fn=collate)
    data = {"train": {"t": with_teacher}, "validation": {"t": with_teacher}, "test": {"t": with_teacher}}
    options = dict(data=data, max_iter=1, save_every_n=0, optimizer="SGD", optimizer_options={"lr": 0.0})
    m = model()
    _, distilled, _ = train(m, loss_functions={"t": "Distillation"}, **options)
    _, label_only, _ = train(model(), loss_functions={"t": "CrossEntropyLoss"}, **options)
    device = next(m.parameters()).device
    with torch.no_grad():  # lr 0: the parameters the passes saw
        outputs = m(x.to(device))
        cross_entropy = F.cross_entropy(outputs, y.to(device)).item()
        objective = Distillation()(outputs, y.to(device), {"logits": teacher.to(device)}).item()
    assert objective > 1.5 * cross_entropy  # so that a mix-up would show
    for mode in ("validation", "test"):
        assert distilled[mode]["t"]["loss"] == pytest.approx(cross_entropy, rel=1e-5)
        assert distilled[mode]["t"]["loss"] == pytest.approx(label_only[mode]["t"]["loss"], rel=1e-5)
    assert distilled["tracker"]["log"]["Training"]["t"]["loss"] == [pytest.approx(objective, rel=1e-5)]
    # the rule: a loss names its plain loss as evaluation_loss; one that names none is measured as it is
    assert isinstance(evaluation_loss(Distillation()), nn.CrossEntropyLoss)
    mse = nn.MSELoss()
    assert evaluation_loss(mse) is mse


def test_regression_needs_stop_metric_loss():
    x = torch.randn(32, 6)
    y = torch.randn(32, 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    data = {"train": {"r": loader}, "validation": {"r": loader}, "test": {"r": loader}}
    with pytest.raises(ConfigError, match="stop_metric='accuracy' was not measured"):
        train(data=data, max_iter=1, loss_functions={"r": "MSELoss"})
    score, output, _ = train(data=data, max_iter=2, loss_functions={"r": "MSELoss"}, stop_metric="loss")
    assert score == output["validation"]["r"]["loss"] > 0  # the score is the loss itself (lower is better)


def test_evaluation_interval_and_iteration_tracking():
    _, output, _ = train(max_iter=5, interval=2, early_stopping=False, track_iterations=True, save_every_n=0)
    tracker = output["tracker"]
    assert tracker["epochs"]["Validation"] == [2, 4, 5]  # every 2nd epoch and the last one
    assert tracker["steps"]["Validation"] == [4, 8, 10]  # two steps per epoch
    assert len(tracker["iterations"]["Training"]["t"]) == 5 * 2
    assert tracker["log"]["Training"]["t"]["loss"][-1] == pytest.approx(np.mean(tracker["iterations"]["Training"]["t"][-2:]))


def test_regex_freeze_and_reset_patterns():
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _, _, after = train(m, max_iter=1, freeze=[r"re:3\.(weight|bias)"], save_every_n=0, restore_best=False)
    assert torch.equal(after["3.weight"], before["3.weight"]) and not torch.equal(after["0.weight"], before["0.weight"])
    t = Trainer(model(), loaders(), 1, TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, reset=["re:[3]"]))
    torch.manual_seed(1)
    expected = nn.Linear(16, 2)
    assert torch.equal(t.model[0].weight.cpu(), before["0.weight"])
    assert torch.equal(t.model[3].weight.cpu(), expected.weight)
    with pytest.raises(ConfigError, match="no trainable parameter"):
        train(model(), max_iter=1, freeze=["*"])
    t = Trainer(model(), loaders(), 1, TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, freeze=["0.*"]))
    frozen = {id(p) for p in t.model[0].parameters()}
    assert not any(id(p) in frozen for group in t.optimizer.param_groups for p in group["params"])


def test_dropout_mode_eval_turns_dropout_off_while_training():
    states = []

    @register_module("DropoutState")
    class DropoutState(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if self.mode == "Training":
                states.append((model.training, model[2].training))
            return model, inputs

    train(model(dropout=0.5), max_iter=1, save_every_n=0, main_loop_modules=["DropoutState"], dropout_mode="eval")
    assert states == [(True, False)] * 2
    states.clear()
    train(model(dropout=0.5), max_iter=1, save_every_n=0, main_loop_modules=["DropoutState"])
    assert states == [(True, True)] * 2


def test_nan_batch_index_counts_cancelled_batches_and_is_a_runtime_error():
    from nntransfer.trainer import CancelBatch

    @register_module("SkipThenPoison")
    class SkipThenPoison(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if self.mode == "Training" and self.batch_index == 0:
                raise CancelBatch
            return model, inputs

        def post_forward(self, outputs, loss, targets, **shared):
            if self.mode == "Training" and self.batch_index == 2:
                loss = loss + float("inf")
            return outputs, loss, targets

    # code that catches RuntimeError (as for any failure of a torch computation) catches a diverged run too
    with pytest.raises(RuntimeError, match=r"loss is inf in epoch 1, batch 2;") as raised:
        train(data=loaders(n_train=128), max_iter=2, main_loop_modules=["SkipThenPoison"], save_every_n=0)
    assert raised.type is TrainingDiverged


def test_accumulated_gradients_left_at_the_end_of_an_epoch_are_used_in_that_epoch():
    steps = []

    @register_module("CountSteps")
    class CountSteps(MainLoopModule):
        def post_optimizer(self, model):
            steps.append(self.epoch)
            assert all(p.grad is None for p in model.parameters())  # zeroed after each step

    t = Trainer(model(), loaders(n_train=128), 1, TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, max_iter=2,
                                                                accumulate_gradients=3, verbose=False, save_every_n=0,
                                                                main_loop_modules=["CountSteps"]))
    t.train()
    assert steps == [1, 1, 2, 2] and t.steps == 4  # 4 batches per epoch: a step after batch 3 and one after batch 4


def test_memory_store_keeps_each_epochs_state_and_resuming_from_an_earlier_one_matches(tmp_path):
    from nntransfer.trainer import DirectoryCheckpointStore

    store = MemoryCheckpointStore()
    exact = dict(deterministic=True, early_stopping=False, restore_best=False)  # bit-identical on a GPU too
    _, out_ref, ref = train(model(dropout=0.3), max_iter=4, checkpoints=store, keep_last_n=4, keep_best_n=0, **exact)
    assert sorted(store.states) == [1, 2, 3, 4]
    epoch2 = store.states[2][1]
    assert not torch.equal(epoch2["model"]["0.weight"], ref["0.weight"])  # a copy, not the live parameters
    # a store holding only epoch 2 (e.g. the job died during epoch 3) resumes to the same end
    disk = DirectoryCheckpointStore(tmp_path)
    disk.save(2, store.states[2][0], epoch2)
    assert disk.latest()["progress"]["epoch"] == 2  # loads with weights_only=True
    _, out, resumed = train(model(dropout=0.3), max_iter=4, checkpoints=disk, **exact)
    assert out["tracker"] == out_ref["tracker"]
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)


def test_batchnorm_mode_eval_keeps_running_statistics_while_training():
    def bn_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))

    _, _, frozen_stats = train(bn_model(), max_iter=1, save_every_n=0, batchnorm_mode="eval", restore_best=False)
    _, _, moving_stats = train(bn_model(), max_iter=1, save_every_n=0, restore_best=False)
    assert torch.equal(frozen_stats["1.running_mean"], torch.zeros(16))
    assert not torch.equal(moving_stats["1.running_mean"], torch.zeros(16))
    assert int(frozen_stats["1.num_batches_tracked"]) == 0 and int(moving_stats["1.num_batches_tracked"]) == 2


def test_batchnorm_mode_frozen_keeps_the_statistics_of_frozen_batch_norms_only():
    def two_blocks():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(),  # the "core", frozen
                             nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))  # trained

    runs = {mode: train(two_blocks(), max_iter=1, save_every_n=0, restore_best=False, freeze=["0.*", "1.*"],
                        batchnorm_mode=mode)[2] for mode in ("train", "eval", "frozen")}
    moved = {mode: {bn: not torch.equal(stats[f"{bn}.running_mean"], torch.zeros(stats[f"{bn}.running_mean"].shape))
                    for bn in (1, 4)} for mode, stats in runs.items()}
    assert moved["train"] == {1: True, 4: True}  # freeze alone: the frozen block's statistics still move
    assert moved["eval"] == {1: False, 4: False}  # eval: no batch norm learns its statistics, new ones neither
    assert moved["frozen"] == {1: False, 4: True}  # frozen: only the frozen block keeps its statistics
    with pytest.raises(ConfigError, match="batchnorm_mode"):
        TrainerConfig(batchnorm_mode="fixed")


def test_a_log_line_per_epoch_and_progress_bars(caplog, capsys):
    import logging

    with caplog.at_level(logging.INFO, logger="nntransfer.trainer"):
        train(max_iter=2, save_every_n=0, verbose=False, early_stopping=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and lines[1].startswith("epoch 2 | Training/t: loss ")
    assert "Validation/t: loss " in lines[1] and "accuracy " in lines[1]
    assert capsys.readouterr().err == ""  # verbose=False: no bars
    train(max_iter=1, save_every_n=0, verbose=True)
    err = capsys.readouterr().err
    assert "epochs" in err and "Training 1" in err  # tqdm bars for epochs and batches


def test_unknown_config_fields_name_the_way_to_a_subclass():
    with pytest.raises(ConfigError, match=r"does not know: \['noise_level'\].*own fn"):
        train(max_iter=1, noise_level=0.3)
