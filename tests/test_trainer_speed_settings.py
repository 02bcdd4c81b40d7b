"""Precision, channels_last, compile, gradient clipping and deterministic runs (issue 8 items 2-4)."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nntransfer.configs import ConfigError, TrainerConfig
from nntransfer.trainer import MainLoopModule, MemoryCheckpointStore, Trainer, register_module, trainer

NEW_FIELDS = {"precision": "bf16", "channels_last": True, "compile": True, "max_grad_norm": 1.0, "deterministic": True,
              "num_threads": 2, "eval_every_steps": 5, "warmup_steps": 3}


def test_new_fields_keep_existing_keys_and_change_the_key_when_set():
    base = TrainerConfig()
    assert not set(NEW_FIELDS) & set(base.hashed_dict())  # since="0.2": left out while at their defaults
    for name, value in NEW_FIELDS.items():
        assert TrainerConfig(**{name: value}).get_key() != base.get_key(), name
    assert TrainerConfig(save_every_steps=3).get_key() == base.get_key()  # a run field
    assert TrainerConfig(compile="max-autotune").get_key() != TrainerConfig(compile=True).get_key()


@pytest.mark.parametrize("options,message", [
    ({"amp": True, "precision": "bf16"}, "amp=True means precision='fp16'"),
    ({"precision": "16"}, "precision must be one of"),
    ({"compile": "fastest"}, "compile must be True, False or a torch.compile mode"),
    ({"compile": 1}, "compile must be bool | str"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be positive"),
    ({"warmup_epochs": 2, "warmup_steps": 10}, "warmup_epochs and warmup_steps are both set"),
    ({"milestone_steps": [100]}, "milestone_steps needs lr_schedule='milestones'"),
    ({"eval_every_steps": 10, "interval": 2}, "interval .* and eval_every_steps are both set"),
    ({"num_threads": 0}, "num_threads must be at least 1"),
])
def test_bad_speed_settings_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainerConfig(**options)


def conv_data(n=64, batch_size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    return {"train": {"t": loader}, "validation": {"t": loader}, "test": {"t": loader}}


class ConvNet(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def fit(net=None, data=None, **config):
    config = {"loss_functions": {"t": "CrossEntropyLoss"}, "verbose": False, "save_every_n": 0, "max_iter": 2,
              "early_stopping": False, **config}
    return trainer(net or ConvNet(), data or conv_data(), seed=2, **config)


SEEN = []


@register_module("SeeDtypes")
class SeeDtypes(MainLoopModule):
    def pre_forward(self, model, inputs, task_key, shared_memory):
        SEEN.append(("inputs channels_last", inputs.is_contiguous(memory_format=torch.channels_last)))
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        SEEN.append(("outputs", outputs.dtype))
        return outputs, loss, targets


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("32", torch.float32)])
def test_precision_autocasts_on_the_trainers_device_and_resumes_exactly(precision, dtype):
    SEEN.clear()
    store = MemoryCheckpointStore()
    options = dict(precision=precision, channels_last=True, main_loop_modules=["SeeDtypes"], restore_best=False,
                   deterministic=True)
    _, output, state = fit(checkpoints=store, save_every_n=1, keep_last_n=2, keep_best_n=0, **options)
    assert ("outputs", dtype) in SEEN and ("inputs channels_last", True) in SEEN
    assert output["environment"]["precision"] == precision
    assert (store.states[1][1]["scaler"] is not None) == (precision == "fp16")  # GradScaler for fp16 only
    # resumed from epoch 1's checkpoint: the same end, bit for bit
    resumed_store = MemoryCheckpointStore()
    resumed_store.save(1, *store.states[1])
    _, resumed_output, resumed = fit(checkpoints=resumed_store, **options)
    assert resumed_output["tracker"] == output["tracker"]
    assert all(torch.equal(state[k], resumed[k]) for k in state)
    fresh = ConvNet()
    fresh.load_state_dict(state)  # a plain (contiguous, uncompiled) model takes the state


def test_amp_keeps_its_old_meaning():
    t = Trainer(ConvNet(), conv_data(), 1, TrainerConfig(amp=True, loss_functions={"t": "CrossEntropyLoss"}))
    expected = "fp16" if t.device.type == "cuda" else "32"  # fp16 on CUDA; on the CPU it was always ignored
    assert t.precision == expected and (t.scaler is not None) == (expected == "fp16")


@pytest.mark.cuda
def test_bf16_channels_last_compile_on_cuda_trains_and_resumes_bit_identically():
    options = dict(precision="bf16", channels_last=True, compile=True, deterministic=True, restore_best=False)
    store = MemoryCheckpointStore()
    _, output, state = fit(checkpoints=store, save_every_n=1, keep_last_n=2, keep_best_n=0, **options)
    assert output["environment"]["device"].startswith("cuda") and output["test"]["t"]["accuracy"] > 0
    assert not any(k.startswith("_orig_mod") for k in state)
    resumed_store = MemoryCheckpointStore()
    resumed_store.save(1, *store.states[1])
    _, _, resumed = fit(checkpoints=resumed_store, **options)
    assert all(torch.equal(state[k], resumed[k]) for k in state)


class CompiledNet(ConvNet):
    """Its own forward (a code object no other test compiles), so that compilation really happens here."""

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).amax((2, 3)))


def test_compile_keeps_plain_state_dicts_and_resumes_exactly():
    store = MemoryCheckpointStore()
    options = dict(compile=True, restore_best=False, deterministic=True)
    _, output, state = fit(CompiledNet(), checkpoints=store, save_every_n=1, keep_last_n=2, keep_best_n=0, **options)
    assert output["environment"]["compile"] is True
    assert not any("_orig_mod" in k for k in state) and set(state) == set(CompiledNet().state_dict())
    assert not any("_orig_mod" in k for k in store.states[1][1]["model"])
    resumed_store = MemoryCheckpointStore()
    resumed_store.save(1, *store.states[1])
    _, _, resumed = fit(CompiledNet(), checkpoints=resumed_store, **options)
    assert all(torch.equal(state[k], resumed[k]) for k in state)


class UncompilableNet(ConvNet):
    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).mean((2, 3)))


def test_a_model_that_fails_to_compile_is_a_config_error_naming_the_option(monkeypatch):
    import torch._inductor.compile_fx as compile_fx

    def broken_backend(*args, **kwargs):
        raise RuntimeError("the backend cannot compile this graph")

    monkeypatch.setattr(compile_fx, "compile_fx", broken_backend)
    with pytest.raises(ConfigError, match=r"TrainerConfig.compile=True: torch.compile failed on this model .*"
                                          r"set compile=False"):
        fit(UncompilableNet(), compile=True, max_iter=1)


GRADIENT_NORMS = {"post_backward": [], "pre_optimizer": []}


@register_module("GradientNorms")
class GradientNorms(MainLoopModule):
    def post_backward(self, model):
        GRADIENT_NORMS["post_backward"].append(_norm(model))

    def pre_optimizer(self, model):
        GRADIENT_NORMS["pre_optimizer"].append(_norm(model))


def _norm(model):
    return float(torch.linalg.vector_norm(torch.stack([p.grad.float().norm() for p in model.parameters()])))


def test_max_grad_norm_clips_once_per_step_the_unscaled_accumulated_gradients():
    for values in GRADIENT_NORMS.values():
        values.clear()
    data = conv_data(n=64, batch_size=8)
    options = dict(max_iter=1, main_loop_modules=["GradientNorms"], accumulate_gradients=4, optimizer="SGD",
                   optimizer_options={"lr": 1e-6}, precision="fp16")
    fit(data=data, **options)
    unclipped = list(GRADIENT_NORMS["pre_optimizer"])
    for values in GRADIENT_NORMS.values():
        values.clear()
    fit(data=data, max_grad_norm=0.05, **options)
    clipped = GRADIENT_NORMS["pre_optimizer"]
    assert len(clipped) == 2 and len(GRADIENT_NORMS["post_backward"]) == 8  # 8 batches, a step every 4
    assert min(unclipped) > 0.05  # so clipping applies to every step
    # pre_optimizer sees the unscaled (GradScaler starts at 2**16), accumulated, clipped gradients
    assert clipped == pytest.approx([0.05, 0.05], rel=1e-3)
    assert max(GRADIENT_NORMS["post_backward"]) > 1000 * max(unclipped)  # post_backward: loss-scaled, as documented


DETERMINISTIC_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_trainer_speed_settings import ConvNet, conv_data, fit
torch.set_num_threads(int(sys.argv[1]))  # as a worker does: cores // workers
_, output, state = fit(ConvNet(), conv_data(n=512, batch_size=128), max_iter=2, deterministic=True)
torch.save({{"state": state, "environment": output["environment"]}}, sys.argv[2])
assert torch.get_num_threads() == int(sys.argv[1])  # restored after training
"""


def test_deterministic_results_do_not_depend_on_the_workers_thread_count(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(DETERMINISTIC_SCRIPT.format(tests=os.path.dirname(__file__)))
    results = {}
    for threads in (1, 3):
        out = tmp_path / f"{threads}.pt"
        run = subprocess.run([sys.executable, str(script), str(threads), str(out)], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        results[threads] = torch.load(out, weights_only=True)
    for threads, result in results.items():
        assert result["environment"]["threads"] == 1 and result["environment"]["deterministic"] is True
        assert result["environment"]["device_name"]
    a, b = results[1]["state"], results[3]["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_num_threads_is_used_while_training_and_recorded():
    seen = []

    @register_module("SeeThreads")
    class SeeThreads(MainLoopModule):
        def post_epoch(self, model):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    _, output, _ = fit(num_threads=2, main_loop_modules=["SeeThreads"], max_iter=1)
    assert set(seen) == {2} and output["environment"]["threads"] == 2 and torch.get_num_threads() == before
