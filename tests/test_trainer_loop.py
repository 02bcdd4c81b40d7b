"""The main-loop contract (issue 10 items 1-5, 7, 8, 19), graceful stops and model regularizers."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from nntransfer.configs import ConfigError, TrainerConfig
from nntransfer.trainer import (
    CancelBatch,
    CancelEpoch,
    DirectoryCheckpointStore,
    MainLoopModule,
    MemoryCheckpointStore,
    Option,
    StopToken,
    Trainer,
    TrainingInterrupted,
    TrainingOutOfMemory,
    check_module_options,
    register_module,
    request_stop,
    stop_requested,
)
from test_trainer import loaders, model, train


def final_state(**config):
    data = config.pop("data", None) or loaders(n_train=128, batch_size=32)
    _, output, state = train(model(dropout=config.pop("dropout", 0.0)), data, **config)
    return output, state


def assert_same_state(a, b):
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- 10.1: CancelBatch drops everything of its batch -------------------------------------------------
@register_module("CancelAt")
class CancelAt(MainLoopModule):
    """Raises CancelBatch in hook ``hook`` for training batch ``batch`` of every epoch."""

    options_declared = {"hook": Option(types=str), "batch": Option(1, int)}

    def _maybe_cancel(self, hook):
        if self.option("hook") == hook and self.mode == "Training" and self.batch_index == self.option("batch"):
            raise CancelBatch

    def pre_forward(self, model, inputs, task_key, shared_memory):
        self._maybe_cancel("pre_forward")
        return model, inputs

    def post_backward(self, model):
        self._maybe_cancel("post_backward")

    def pre_optimizer(self, model):
        self._maybe_cancel("pre_optimizer")


@pytest.mark.parametrize("accumulate", [1, 2])
def test_cancel_batch_in_post_backward_or_pre_optimizer_leaves_no_trace_of_the_batch(accumulate):
    def run(hook, batch=1):
        return final_state(max_iter=2, optimizer="SGD", optimizer_options={"lr": 0.1, "momentum": 0.9},
                           deterministic=True,
                           accumulate_gradients=accumulate, save_every_n=0, restore_best=False,
                           main_loop_modules=["CancelAt"], module_options={"CancelAt": {"hook": hook, "batch": batch}})

    reference_output, reference = run("pre_forward")  # the batch never ran
    _, plain = run("pre_forward", batch=99)
    assert not all(torch.equal(reference[k], plain[k]) for k in plain)  # cancelling batch 1 changes the result
    output, state = run("post_backward")
    assert_same_state(state, reference)
    assert output["tracker"]["log"]["Training"] == reference_output["tracker"]["log"]["Training"]  # not tracked
    if accumulate == 1:  # with accumulation, pre_optimizer of batch 1 would also drop batch 0's gradients
        _, state = run("pre_optimizer")
        assert_same_state(state, reference)


# -- 10.2: one shared_memory dict per batch, seen by every hook ---------------------------------------
SHARED = []


@register_module("WritesShared")
class WritesShared(MainLoopModule):
    def post_forward(self, outputs, loss, targets, **shared_memory):
        self.shared_memory["written_in_post_forward"] = self.batch_index
        shared_memory["written_to_the_copy"] = True  # the keywords are a copy: not shared
        SHARED.append(("writer", id(self.shared_memory)))
        return outputs, loss, targets


@register_module("ReadsSharedAsKeywords")
class ReadsSharedAsKeywords(MainLoopModule):
    def post_forward(self, outputs, loss, targets, written_in_post_forward=None, **shared_memory):
        SHARED.append(("keyword reader", written_in_post_forward, "written_to_the_copy" in shared_memory))
        return outputs, loss, targets


@register_module("ReadsSharedInGradientHooks")
class ReadsSharedInGradientHooks(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        SHARED.append(("pre_forward", id(shared_memory)))
        return model, inputs

    def post_backward(self, model):
        SHARED.append(("post_backward", id(self.shared_memory), self.shared_memory["written_in_post_forward"]))

    def pre_optimizer(self, model):
        SHARED.append(("pre_optimizer", id(self.shared_memory)))

    def post_optimizer(self, model):
        SHARED.append(("post_optimizer", id(self.shared_memory)))


def test_shared_memory_is_one_dict_per_batch_for_every_hook_and_module():
    SHARED.clear()
    train(max_iter=1, save_every_n=0, main_loop_modules=["ReadsSharedInGradientHooks", "WritesShared",
                                                          "ReadsSharedAsKeywords"])
    first_batch = SHARED[:6]
    dict_id = first_batch[0][1]
    assert first_batch == [("pre_forward", dict_id), ("writer", dict_id), ("keyword reader", 0, False),
                           ("post_backward", dict_id, 0), ("pre_optimizer", dict_id), ("post_optimizer", dict_id)]
    assert ("keyword reader", 1, False) in SHARED  # the second batch's own dict


class PreviousConstructor(MainLoopModule):
    def __init__(self, model, config, device, seed):  # this project's previous constructor
        super().__init__(model)


class PreviousGradientHook(MainLoopModule):
    def post_backward(self, model, shared_memory=None):  # would get None without a word
        pass


class PreviousPostForward(MainLoopModule):
    def post_forward(self, outputs, loss, targets, shared_memory):
        return outputs, loss, targets


class PreEpochWithoutOptions(MainLoopModule):
    def pre_epoch(self, model, mode):
        pass


@pytest.mark.parametrize("cls,message", [
    (PreviousConstructor, r"PreviousConstructor.__init__\(self, model, config, device, seed\) does not take the "
                          r"trainer: .*Write `def __init__\(self, trainer\): super\(\).__init__\(trainer\)`"),
    (PreviousGradientHook, r"PreviousGradientHook.post_backward\(self, model, shared_memory=None\) takes shared_memory "
                           r"as a parameter, .*write post_backward\(self, model\) and read the batch's dict as "
                           r"self.shared_memory"),
    (PreviousPostForward, r"write post_forward\(self, outputs, loss, targets, \*\*shared_memory\)"),
    (PreEpochWithoutOptions, r"PreEpochWithoutOptions.pre_epoch\(self, model, mode\) cannot be called as the trainer "
                             r"calls it: write pre_epoch\(self, model, mode, \*\*options\)"),
])
def test_modules_of_another_convention_are_refused_when_built_saying_what_to_write(cls, message):
    path = f"test_trainer_loop.{cls.__name__}"
    config = TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, main_loop_modules=[path])
    with pytest.raises(ConfigError, match=message):
        check_module_options(config)  # before a job is queued
    with pytest.raises(ConfigError, match=message):
        Trainer(model(), loaders(), 1, config)  # and before the trainer builds anything of the module


# -- cancelling: every module hears of it -------------------------------------------------------------------
CANCELS = []


@register_module("HearsCancels")
class HearsCancels(MainLoopModule):
    def after_cancel_batch(self, model):
        CANCELS.append(("batch", self.mode, self.epoch, self.batch_index, sorted(self.shared_memory)))

    def after_cancel_epoch(self, model):
        CANCELS.append(("epoch", self.mode, self.epoch, self.batch_index))

    def post_epoch(self, model):
        CANCELS.append(("post_epoch", self.mode))


@register_module("CancelsEvaluation")
class CancelsEvaluation(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        if self.mode == "Validation" and self.batch_index == 1:
            raise CancelEpoch
        return model, inputs


@pytest.mark.parametrize("hook", ["pre_forward", "post_backward", "pre_optimizer"])
def test_every_module_hears_of_a_cancelled_batch_with_its_state(hook):
    CANCELS.clear()
    train(max_iter=2, save_every_n=0, data=loaders(n_eval=64), main_loop_modules=["HearsCancels", "CancelAt",
                                                                                "CancelsEvaluation"],
          module_options={"CancelAt": {"hook": hook, "batch": 1}})
    batches = [c for c in CANCELS if c[0] == "batch"]
    # the module that cancels comes after the one that hears: all modules are told, with the batch's state
    assert batches == [("batch", "Training", 1, 1, ["extra"]), ("batch", "Training", 2, 1, ["extra"])]
    # a cancelled validation pass: after_cancel_epoch, then post_epoch as for any pass
    assert CANCELS[CANCELS.index(("epoch", "Validation", 1, 1)) + 1] == ("post_epoch", "Validation")


@register_module("DropsTheLeftoverStep")
class DropsTheLeftoverStep(MainLoopModule):
    """With 3 batches and steps of 2, the last step is taken with the epoch's leftover gradients: drop it."""

    def pre_optimizer(self, model):
        if self.batch_index == 2:
            raise CancelBatch


def test_a_step_dropped_at_the_end_of_an_epoch_is_heard_of_and_not_evaluated_again():
    CANCELS.clear()
    t = Trainer(model(), loaders(n_train=96), 1, TrainerConfig(
        loss_functions={"t": "CrossEntropyLoss"}, max_iter=1, accumulate_gradients=2, save_every_n=0, verbose=False,
        eval_every_steps=1, main_loop_modules=["HearsCancels", "DropsTheLeftoverStep"]))
    _, output, _ = t.train()
    assert t.steps == 1 and ("batch", "Training", 1, 2, ["extra"]) in CANCELS
    assert output["tracker"]["steps"]["Validation"] == [1]  # step 1 was evaluated once, the dropped step not at all


# -- 10.3: modules with state resume exactly -----------------------------------------------------------
@register_module("MovingAverageRegulariser")
class MovingAverageRegulariser(MainLoopModule):
    """Adds a penalty weighted by its own moving average (state that changes the result)."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self.average = torch.zeros((), device=self.device)

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode != "Training":
            return outputs, loss, targets
        penalty = sum((p ** 2).sum() for p in self.model.parameters())
        self.shared_memory["penalty"] = penalty.detach()
        return outputs, loss + 0.1 * self.average * penalty, targets

    def post_optimizer(self, model):
        self.average = 0.8 * self.average + 0.2 * self.shared_memory["penalty"]

    def state_dict(self):
        return {"average": self.average}

    def load_state_dict(self, state):
        self.average = state["average"].to(self.device)


def test_module_state_is_saved_in_checkpoints_and_resumes_exactly():
    options = dict(max_iter=4, main_loop_modules=["MovingAverageRegulariser"], early_stopping=False,
                   restore_best=False, deterministic=True)
    store = MemoryCheckpointStore()
    reference, ref_state = final_state(checkpoints=store, keep_last_n=4, keep_best_n=0, **options)
    assert float(store.states[2][1]["modules"][0]["average"]) > 0
    resumed_from_2 = MemoryCheckpointStore()
    resumed_from_2.save(2, *store.states[2])
    output, state = final_state(checkpoints=resumed_from_2, **options)
    assert_same_state(state, ref_state)
    assert output["tracker"] == reference["tracker"]


# -- 10.4: declared module options ---------------------------------------------------------------------
def test_module_options_are_declared_and_unknown_ones_are_config_errors():
    with pytest.raises(ConfigError, match=r"options for 'NoiseAugmentation', which is not in main_loop_modules"):
        TrainerConfig(module_options={"NoiseAugmentation": {"std": 0.5}})  # at construction: no torch needed
    config = TrainerConfig(loss_functions={"t": "CrossEntropyLoss"}, main_loop_modules=["NoiseAugmentation"],
                           module_options={"NoiseAugmentation": {"stdd": 0.5}})
    with pytest.raises(ConfigError, match=r"has 'stdd', which NoiseAugmentation does not declare; its options: "
                                          r"std \(default 0.1\), snr"):
        check_module_options(config)  # before anything is built (e.g. when experiments are filled)
    with pytest.raises(ConfigError, match="'stdd'"):
        Trainer(model(), loaders(), 1, config)  # and when the trainer starts, before any training
    with pytest.raises(ConfigError, match=r"module_options\['NoiseAugmentation'\]\['in_eval'\] must be bool"):
        check_module_options(config.replace(module_options={"NoiseAugmentation": {"in_eval": "yes"}}))
    with pytest.raises(ConfigError, match=r"RepresentationMatching needs module_options\['RepresentationMatching'\]"
                                          r"\['layer'\]"):
        check_module_options(config.replace(main_loop_modules=["RepresentationMatching"], module_options={}))
    # an import-path entry takes its options under the entry or under its class name; ints fit float options
    path = "nntransfer.trainer.modules.noise_augmentation:NoiseAugmentation"
    config = config.replace(main_loop_modules=[path], module_options={"NoiseAugmentation": {"std": 1}})
    check_module_options(config)
    (module,) = Trainer(model(), loaders(), 1, config).modules
    assert module.option("std") == 1.0 and module.option("in_eval") is False


# -- 10.5: an aligned tracker ----------------------------------------------------------------------------
def test_every_series_has_one_value_per_pass_and_the_final_evaluation_its_own_key():
    _, output, _ = train(max_iter=3, early_stopping=False, main_loop_modules=["NoiseAugmentation",
                                                                              "RepresentationMatching"],
                         module_options={"RepresentationMatching": {"layer": "1"}}, save_every_n=0)
    tracker = output["tracker"]
    for mode, tasks in tracker["log"].items():
        assert len(tracker["epochs"][mode]) == len(tracker["steps"][mode])
        for task, objectives in tasks.items():
            for objective, values in objectives.items():
                assert len(values) == len(tracker["epochs"][mode]), (mode, task, objective)
    assert tracker["epochs"]["Validation"] == [1, 2, 3]  # no extra entry for the final evaluation
    assert "representation_matching" in tracker["log"]["Training"]["t"]
    assert tracker["final"]["Validation"] == output["validation"] and tracker["final"]["Test"] == output["test"]
    assert "Test" not in tracker["log"]  # the test pass happens once, after training


# -- 10.7: max_steps, step-based evaluation, schedule and checkpoints --------------------------------------
def test_max_steps_overrides_max_iter():
    _, output, _ = train(data=loaders(n_train=64, batch_size=32), max_iter=10, max_steps=30, save_every_n=0,
                         early_stopping=False)
    assert output["steps"] == 30 and output["epochs"] == 15  # two steps per epoch: epochs go on past max_iter


LRS = []


@register_module("RecordLR")
class RecordLR(MainLoopModule):
    def pre_optimizer(self, model):
        LRS.append(self.trainer.optimizer.param_groups[0]["lr"])


def test_step_based_evaluation_schedule_and_checkpoints():
    LRS.clear()
    store = MemoryCheckpointStore()
    _, output, _ = train(data=loaders(n_train=128, batch_size=32), max_steps=10, eval_every_steps=3,
                         save_every_steps=2, save_every_n=0, keep_last_n=10, keep_best_n=0, early_stopping=False,
                         optimizer="SGD", optimizer_options={"lr": 1.0}, warmup_steps=2, lr_schedule="milestones",
                         milestone_steps=[6], checkpoints=store, main_loop_modules=["RecordLR"])
    tracker = output["tracker"]
    assert tracker["steps"]["Validation"] == [3, 6, 9, 10]  # every 3 steps and at the end
    assert tracker["epochs"]["Validation"] == [1, 2, 3, 3]  # four batches per epoch: inside the epochs
    assert LRS == pytest.approx([0.5] + [1.0] * 5 + [0.1] * 4)  # warm-up over 2 steps, decay after step 6
    saved = {epoch: (state["progress"]["batch"], state["progress"]["steps"])
             for epoch, (_, state) in store.states.items()}
    assert saved == {1: (4, 4), 2: (4, 8), 3: (2, 10)}  # the newest state of each epoch, mid-epoch for epoch 3


RESUME_MID_EPOCH = textwrap.dedent("""
    import os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_trainer import loaders, model
    from nntransfer.trainer import DirectoryCheckpointStore, MainLoopModule, register_module, trainer

    kill = os.environ.get("KILL") == "1"

    @register_module("KillMidEpoch")
    class KillMidEpoch(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if kill and self.mode == "Training" and self.epoch == 2 and self.batch_index == 3:
                self.trainer.wait_for_checkpoint()
                os.kill(os.getpid(), signal.SIGKILL)
            return model, inputs

    store = DirectoryCheckpointStore(sys.argv[1]) if sys.argv[1] != "-" else None
    score, output, state = trainer(model(dropout=0.3), loaders(n_train=160, batch_size=16), seed=3, checkpoints=store,
                                   max_iter=3, patience=10, accumulate_gradients=2, save_every_steps=1,
                                   deterministic=True,
                                   main_loop_modules=["KillMidEpoch", "NoiseAugmentation"],
                                   module_options={{"NoiseAugmentation": {{"std": 0.2}}}},
                                   loss_functions={{"t": "CrossEntropyLoss"}}, verbose=False)
    torch.save({{"score": score, "state": state, "tracker": output["tracker"]}}, sys.argv[2])
""")


@pytest.mark.slow  # a process killed with SIGKILL (in-process stops: the tests below)
def test_a_run_killed_mid_epoch_resumes_bit_identically_from_its_mid_epoch_checkpoint(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_MID_EPOCH.format(tests=os.path.dirname(__file__)))

    def run(store, result, kill):
        return subprocess.run([sys.executable, str(script), str(store), str(result)],
                              env={**os.environ, "KILL": kill}, capture_output=True, text=True, timeout=300)

    reference = run("-", tmp_path / "reference.pt", "0")
    assert reference.returncode == 0, reference.stderr
    killed = run(tmp_path / "ckpt", tmp_path / "never.pt", "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    latest = DirectoryCheckpointStore(tmp_path / "ckpt").latest()["progress"]
    assert (latest["epoch"], latest["batch"], latest["steps"]) == (2, 2, 6)  # 10 batches per epoch, a step every 2
    resumed = run(tmp_path / "ckpt", tmp_path / "resumed.pt", "0")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "reference.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a["score"] == b["score"] and a["tracker"] == b["tracker"]
    assert_same_state(a["state"], b["state"])


# -- graceful stop: a checkpoint exactly where training is, then TrainingInterrupted ----------------------
@register_module("StopRequester")
class StopRequester(MainLoopModule):
    """Asks for a stop in training batch ``batch`` of epoch ``epoch``: through the run's own token, or as a signal
    handler does, through ``request_stop``."""

    options_declared = {"epoch": Option(2, int), "batch": Option(2, int), "via": Option("token", str)}

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode == "Training" and (self.epoch, self.batch_index) == (self.option("epoch"), self.option("batch")):
            if self.option("via") == "token":
                self.trainer.stop.request("SIGTERM (test)")
            else:
                assert request_stop("SIGTERM (test)") == 1  # the one run in progress
        return outputs, loss, targets


@pytest.mark.parametrize("batch,via", [(2, "token"), (3, "token"),  # after a step; between the halves of a step
                                       (3, "request_stop")])
def test_a_stop_request_checkpoints_mid_epoch_and_the_resumed_run_ends_bit_identical(tmp_path, batch, via):
    options = dict(max_iter=3, accumulate_gradients=2, dropout=0.3, early_stopping=False, deterministic=True,
                   main_loop_modules=["NoiseAugmentation"], module_options={"NoiseAugmentation": {"std": 0.2}},
                   data=loaders(n_train=160, batch_size=16))
    reference, ref_state = final_state(**options)
    store = DirectoryCheckpointStore(tmp_path)
    options_with_stop = dict(options, main_loop_modules=["NoiseAugmentation", "StopRequester"],
                             module_options={"NoiseAugmentation": {"std": 0.2},
                                             "StopRequester": {"batch": batch, "via": via}})
    with pytest.raises(TrainingInterrupted, match=rf"SIGTERM \(test\): training stopped in epoch 2 after batch "
                                                  rf"{batch + 1} .*checkpoint written"):
        final_state(checkpoints=store, save_every_n=0, **options_with_stop)
    assert not stop_requested()  # nothing of the request outlives its run
    latest = store.latest()["progress"]
    assert (latest["epoch"], latest["batch"], latest["pending"]) == (2, batch + 1, (batch + 1) % 2)
    options_with_stop["module_options"]["StopRequester"]["epoch"] = 99  # the resumed run is not stopped again
    output, state = final_state(checkpoints=store, **options_with_stop)  # a new run in the same process
    assert_same_state(state, ref_state)
    assert output["tracker"] == reference["tracker"]


def test_a_token_requested_before_an_epoch_stops_that_run_at_the_epoch_boundary_and_no_other():
    store = MemoryCheckpointStore()
    token = StopToken()
    token.request("preempted")
    with pytest.raises(TrainingInterrupted, match="preempted: training stopped after epoch 0"):
        train(max_iter=2, checkpoints=store, stop=token)
    assert token.requested and token.reason == "preempted" and not stop_requested()
    _, output, _ = train(max_iter=2, checkpoints=store)  # the next run in this process has its own token
    assert output["epochs"] == 2


def test_request_stop_reaches_the_tokens_in_use_and_nothing_after_them():
    assert request_stop("nobody is running") == 0 and not stop_requested()
    worker, other = StopToken(), StopToken()
    with worker:
        with worker:  # a worker's token handed on to a run that enters it too
            pass
        assert request_stop("SIGTERM received") == 1  # still in use by the worker
        assert worker.requested and worker.reason == "SIGTERM received" and stop_requested()
        worker.request("a later reason")
        assert worker.reason == "SIGTERM received"  # the first request is the one reported
    assert not stop_requested() and not other.requested
    _, output, _ = train(max_iter=1, save_every_n=0)
    assert output["epochs"] == 1


# -- 10.8: no validation split ----------------------------------------------------------------------------
def test_valid_size_zero_trains_without_validation_and_scores_on_the_test_set():
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.models import classification_model_builder

    data = image_dataset_loader(seed=1, dataset_cls="digits", valid_size=0.0, batch_size=64)
    assert data["validation"] == {}
    n_train = len(data["train"]["img_classification"].dataset)
    assert n_train == len(image_dataset_loader(seed=1, dataset_cls="digits", valid_size=0.1)["train"]
                          ["img_classification"].dataset) + len(image_dataset_loader(
                              seed=1, dataset_cls="digits", valid_size=0.1)["validation"]["img_classification"].dataset)
    net = classification_model_builder(data, seed=1, type="mlp")
    score, output, _ = train(net, data, max_iter=3, patience=1, save_every_n=0,
                             loss_functions={"img_classification": "CrossEntropyLoss"})
    assert output["epochs"] == 3 and output["validation"] == {} and "Validation" not in output["tracker"]["log"]
    assert score == output["test"]["img_classification"]["accuracy"]
    # neither validation nor test: the last training pass's stop_metric
    data = {"train": data["train"]}
    score, output, _ = train(classification_model_builder(data, seed=1, type="mlp"), data, max_iter=2,
                             loss_functions={"img_classification": "CrossEntropyLoss"}, save_every_n=0)
    assert score == output["tracker"]["log"]["Training"]["img_classification"]["accuracy"][-1]


# -- 10.19: out of memory ----------------------------------------------------------------------------------
@register_module("RunsOutOfMemory")
class RunsOutOfMemory(MainLoopModule):
    options_declared = {"mode": Option("Training", str)}

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode == self.option("mode") and self.epoch == 2 and self.batch_index == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                                         "of 79.10 GiB of which 1.20 GiB is free. Including non-PyTorch memory ...")
        return outputs, loss, targets


def test_out_of_memory_stops_with_one_line_naming_batch_size_and_step():
    with pytest.raises(TrainingOutOfMemory) as info:
        train(max_iter=3, main_loop_modules=["RunsOutOfMemory"], save_every_n=0)
    message = str(info.value)
    assert "\n" not in message
    assert "ran out of memory in the training pass of epoch 2, batch 1 (optimizer step 4) with batch size 32 " \
           "(Tried to allocate 2.00 GiB)" in message and "lower the dataset's batch_size" in message
    with pytest.raises(TrainingOutOfMemory, match="in the validation pass of epoch 2, batch 1 with batch size 16"):
        train(data=loaders(n_eval=32, batch_size=16), max_iter=3, main_loop_modules=["RunsOutOfMemory"],
              module_options={"RunsOutOfMemory": {"mode": "Validation"}}, save_every_n=0)


@pytest.mark.cuda
def test_a_real_cuda_out_of_memory_is_reported_the_same_way():
    @register_module("AllocatesTooMuch")
    class AllocatesTooMuch(MainLoopModule):
        def post_forward(self, outputs, loss, targets, **shared_memory):
            free, total = torch.cuda.mem_get_info(outputs.device)
            torch.empty(2 * total, dtype=torch.uint8, device=outputs.device)
            return outputs, loss, targets

    with pytest.raises(TrainingOutOfMemory, match=r"cuda:\d ran out of memory in the training pass of epoch 1, "
                                                  r"batch 0 \(optimizer step 1\) with batch size 32"):
        train(max_iter=1, main_loop_modules=["AllocatesTooMuch"], save_every_n=0)


def test_out_of_memory_is_recorded_by_the_job(clean_db):
    from test_trained_model import digits_experiment

    exp = digits_experiment(max_iter=3, main_loop_modules=["test_trainer_loop.RunsOutOfMemory"])
    exp.add_to_table()
    clean_db.TrainedModel.populate(exp.get_key(), reserve_jobs=True, suppress_errors=True)
    (error,) = clean_db.TrainedModel.jobs.errors.to_dicts()
    message = error["error_message"]
    assert message.startswith("TrainingOutOfMemory: ") and "\n" not in message
    assert "training pass of epoch 2, batch 1 (optimizer step" in message and "with batch size 32" in message


# -- the model's regularizer -------------------------------------------------------------------------------
class RegularisedNet(nn.Module):
    """Like neuralpredictors' models: ``regularizer(data_key)`` is added to the training loss of that task."""

    def __init__(self, strength):
        super().__init__()
        self.body = model()
        self.strength = strength

    def forward(self, x):
        return self.body(x)

    def regularizer(self, data_key):
        return self.strength[data_key] * (self.body[0].weight ** 2).sum()


FIRST_GRADIENT = []


@register_module("GrabFirstGradient")
class GrabFirstGradient(MainLoopModule):
    def post_backward(self, model):
        if not FIRST_GRADIENT:
            FIRST_GRADIENT.append((self.task_key, model.body[0].weight.grad.detach().cpu().clone()))


def test_the_models_regularizer_is_added_to_its_tasks_training_loss_and_tracked():
    data = loaders(n_train=64, tasks=("a", "b"))
    options = dict(data=data, max_iter=1, save_every_n=0, optimizer="SGD", optimizer_options={"lr": 1e-4},
                   loss_functions={"a": "CrossEntropyLoss", "b": "CrossEntropyLoss"}, restore_best=False,
                   main_loop_modules=["GrabFirstGradient"])
    FIRST_GRADIENT.clear()
    _, plain_output, _ = train(RegularisedNet({"a": 0.0, "b": 0.0}), **options)
    (task, plain_gradient), = FIRST_GRADIENT
    FIRST_GRADIENT.clear()
    net = RegularisedNet({"a": 0.5, "b": 0.0})
    initial = net.body[0].weight.detach().clone()
    _, output, _ = train(net, **options)
    (_, gradient), = FIRST_GRADIENT
    assert task == "a"  # the first batch is task a's: its loss has the regularizer's gradient 0.5 * 2w on top
    torch.testing.assert_close(gradient - plain_gradient, initial, rtol=1e-4, atol=1e-6)
    log = output["tracker"]["log"]["Training"]
    assert log["a"]["regularizer"] == [pytest.approx(0.5 * float((initial ** 2).sum()), rel=1e-3)]  # one per pass
    assert log["b"]["regularizer"] == [0.0]
    # the tracked loss is the data loss (comparable with validation's): the regularizer is tracked on its own
    plain_loss = plain_output["tracker"]["log"]["Training"]["a"]["loss"][0]
    assert log["a"]["loss"][0] == pytest.approx(plain_loss, abs=0.01 * log["a"]["regularizer"][0])
    assert "regularizer" not in output["validation"]["a"]  # training only
