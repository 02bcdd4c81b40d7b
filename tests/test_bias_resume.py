"""Every bias-transfer module checkpoints and resumes exactly: a run stopped in the middle of an epoch (a checkpoint
exactly there) and resumed ends bit-identical to one that was never stopped; killed with SIGKILL too (slow)."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nntransfer.trainer import MainLoopModule, MemoryCheckpointStore, Option, TrainingInterrupted, register_module

from bias_helpers import fit, handover_from, image_net, pixel_batches, points, started_from


@register_module("StopsOnce")
class StopsOnce(MainLoopModule):
    """Asks the run to stop after training batch ``batch`` of epoch ``epoch`` (a checkpoint is written there)."""

    options_declared = {"epoch": Option(2, int), "batch": Option(1, int)}

    def post_forward(self, outputs, loss, targets, **shared_memory):
        if self.mode == "Training" and (self.epoch, self.batch_index) == (self.option("epoch"), self.option("batch")):
            self.trainer.stop.request("test")
        return outputs, loss, targets


@pytest.fixture(scope="module")
def teacher():
    """A trained earlier step with EWC, SI and a lottery ticket: what a later step receives."""
    _, output, state = fit(max_iter=2, early_stopping=False, main_loop_modules=["EWC", "SI", "LotteryTicket"],
                           module_options={"EWC": {"samples": 32},
                                           "LotteryTicket": {"rounds": 1, "round_epochs": 1, "prune_fraction": 0.3}})
    return handover_from(state, output), state


NOISE = {"std": {0.1: 0.25, 0.3: 0.25, 0.0: 0.5}, "units": "pixels", "clamp": True, "fractions": "fixed"}
CASES = {
    "L2SP": (["L2SP"], {}),
    "EWC": (["EWC"], {"EWC": {"samples": 16}}),
    "SI": (["SI"], {}),
    "RDL": (["RDL"], {"RDL": {"layers": ["1", "2"], "distance": "euclidean"}}),
    "KnowledgeDistillation": (["NoiseAugmentation", "KnowledgeDistillation"], {"NoiseAugmentation": {"std": 0.3}}),
    "Mixup": (["Mixup"], {"Mixup": {"alpha": 0.5, "probability": 0.7}}),
    "LotteryTicket": (["LotteryTicket"], {"LotteryTicket": {"rounds": 1, "round_epochs": 1, "rewind_epoch": 0}}),
    "RandomReadoutReset": (["RandomReadoutReset"], {"RandomReadoutReset": {"layers": ["2"], "every": 1}}),
    "RepresentationMatching": (["NoiseAugmentation", "RepresentationMatching"],
                               {"NoiseAugmentation": {"std": {0.0: 0.5, 0.3: 0.5}, "fractions": "fixed"},
                                "RepresentationMatching": {"layers": ["0", "1"], "second_noise_std": [0.1, 0.4],
                                                           "only_for_clean": True, "layer_weights": "learned"}}),
}
IMAGE_CASES = {  # modules that work in pixel units
    "NoiseAugmentation": (["NoiseAugmentation"], {"NoiseAugmentation": NOISE}),
    "NoiseAdversarial": (["NoiseAugmentation", "NoiseAdversarial"],
                         {"NoiseAugmentation": NOISE, "NoiseAdversarial": {"layer": "1", "levels": [0.0, 0.1, 0.3],
                                                                            "schedule": "ganin"}}),
    "CutMix": (["Mixup"], {"Mixup": {"cutmix": True}}),
}


def run(case: str, teacher, checkpoints=None, stop_in_epoch=99):
    modules, options = {**CASES, **IMAGE_CASES}[case]
    # the same modules in every run (a checkpoint holds their states); only the stopped run stops
    modules, options = modules + ["StopsOnce"], dict(options, StopsOnce={"epoch": stop_in_epoch})
    handover, state = teacher
    image = case in IMAGE_CASES
    model = image_net() if image else started_from(state)
    data = pixel_batches(n=64, batch_size=16) if image else points(n=64, batch_size=16)
    return fit(model, data, handover=None if image else handover, checkpoints=checkpoints, max_iter=3,
               deterministic=True, early_stopping=False, optimizer="SGD",
               optimizer_options={"lr": 0.05, "momentum": 0.9}, main_loop_modules=modules, module_options=options)


@pytest.mark.parametrize("case", [*CASES, *IMAGE_CASES])
def test_a_run_stopped_mid_epoch_and_resumed_ends_bit_identical(case, teacher):
    score, output, state = run(case, teacher)
    store = MemoryCheckpointStore()
    with pytest.raises(TrainingInterrupted, match="in epoch 2 after batch 2"):
        run(case, teacher, store, stop_in_epoch=2)
    assert store.latest()["modules"] is not None
    resumed_score, resumed_output, resumed_state = run(case, teacher, store)
    assert resumed_score == score
    assert resumed_output["tracker"] == output["tracker"]
    for name in state:
        assert torch.equal(state[name], resumed_state[name]), name
    produced = output.get("transfer_data", {}).get("parameters", {})
    resumed = resumed_output.get("transfer_data", {}).get("parameters", {})
    assert _same(produced, resumed)  # what it hands over too (EWC's Fisher, SI's importance, the ticket)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    from bias_helpers import fit, net, points
    from nntransfer.trainer import DirectoryCheckpointStore, MainLoopModule, register_module

    kill = os.environ.get("KILL") == "1"

    @register_module("KillsAfterPruning")
    class KillsAfterPruning(MainLoopModule):
        def pre_forward(self, model, inputs, task_key, shared_memory):
            if kill and self.mode == "Training" and self.epoch == 4 and self.batch_index == 2:
                self.trainer.wait_for_checkpoint()
                os.kill(os.getpid(), signal.SIGKILL)
            return model, inputs

    store = DirectoryCheckpointStore(sys.argv[1]) if sys.argv[1] != "-" else None
    score, output, state = fit(net(hidden=16), points(n=96, batch_size=16), checkpoints=store, max_iter=6,
                               early_stopping=False, deterministic=True, save_every_steps=1,
                               main_loop_modules=["LotteryTicket", "KillsAfterPruning"],
                               module_options={{"LotteryTicket": {{"rounds": 2, "round_epochs": 2,
                                                                   "rewind_epoch": 1, "prune_fraction": 0.4}}}})
    torch.save({{"score": score, "state": state, "tracker": output["tracker"],
                "masks": {{k: torch.as_tensor(v) for k, v in
                          output["transfer_data"]["parameters"]["LotteryTicket"]["mask"].items()}}}}, sys.argv[2])
""")


@pytest.mark.slow
def test_lottery_ticket_masks_survive_a_kill_and_resume_exactly(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=os.path.dirname(__file__)))

    def launch(store, result, kill):
        return subprocess.run([sys.executable, str(script), str(store), str(result)],
                              env={**os.environ, "KILL": kill}, capture_output=True, text=True, timeout=300)

    reference = launch("-", tmp_path / "reference.pt", "0")
    assert reference.returncode == 0, reference.stderr
    killed = launch(tmp_path / "ckpt", tmp_path / "never.pt", "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = launch(tmp_path / "ckpt", tmp_path / "resumed.pt", "0")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "reference.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a["score"] == b["score"] and a["tracker"] == b["tracker"]
    assert a["masks"].keys() == b["masks"].keys() and all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    sparsity = a["tracker"]["log"]["Training"]["all"]["sparsity"]
    assert sparsity[-1] > 0.5  # two rounds of 40 %: the kill came after the first pruning (start of epoch 3)
