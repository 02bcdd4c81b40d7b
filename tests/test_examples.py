"""The examples state conclusions in their docstrings; their runs must support them.

The set-up checks are quick. The runs train whole recipes (minutes on two cores) and are marked slow; they
assert the docstrings' claims on the numbers the run gives, not the numbers themselves (another CPU or a GPU
gives slightly different ones).
"""
import runpy
from pathlib import Path

import pytest

from nntransfer import run
from nntransfer.analysis import comparison, results_frame

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAMILIES = ("baseline (from scratch)", "transfer (fine-tune all)", "transfer (core frozen)")


def load(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / name))


def by_name(rows: list[dict], metric: str) -> dict:
    return {row["name"]: row for row in comparison(rows, metric)}


def gap_beyond_spread(higher: dict, lower: dict) -> bool:
    """``higher``'s mean exceeds ``lower``'s by more than the larger of their sample standard deviations."""
    return higher["mean"] - lower["mean"] > max(higher["std"], lower["std"])


# -- the digits demo --------------------------------------------------------------------------------------
def test_the_digits_demo_budgets_count_training_examples_and_select_on_a_fixed_validation_draw():
    demo = load("digits_transfer.py")
    assert len(demo["SEEDS"]) >= 3
    for description, chain in demo["transfer_experiments"].items():
        target = chain[-1].dataset
        assert target.filter_classes == [5, 6, 7, 8, 9]
        assert target.validation_examples_per_class == demo["VALIDATION_PER_CLASS"] and target.valid_size == 0
        assert f"[examples_per_class={target.examples_per_class or 'all'}]" in description.name
        trainer = chain[-1].trainer
        assert trainer.max_steps and trainer.eval_every_steps and trainer.restore_best  # one step budget for all
    assert {d.seed for d in demo["transfer_experiments"]} == set(demo["SEEDS"])


@pytest.mark.slow
def test_the_digits_demo_supports_its_conclusion(clean_db):
    demo = load("digits_transfer.py")
    rows = run(demo["transfer_experiments"], workers=2, quiet=True)  # both cores: the suite runs one thread per process
    assert all(row["state"] == "done" for row in rows)
    results = by_name(rows, "accuracy")
    for budget in demo["BUDGETS"]:
        label = f"[examples_per_class={budget or 'all'}]"
        scratch, fine_tuned, frozen = (results[family + label] for family in FAMILIES)
        assert scratch["n"] == fine_tuned["n"] == frozen["n"] == len(demo["SEEDS"])
        # "at no budget is a transfer variant better than training from scratch by more than the seeds' spread"
        assert not gap_beyond_spread(fine_tuned, scratch) and not gap_beyond_spread(frozen, scratch)
        if budget is None or budget >= 10:  # "the frozen core lowest from 10 on, by more than the spread"
            assert gap_beyond_spread(scratch, frozen) and frozen["mean"] < fine_tuned["mean"], budget


# -- the neural example -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_neural_example_supports_its_conclusion(clean_db, capsys, tmp_path):
    example = load("digits_to_neurons.py")  # writes the simulated sessions (a minute under load)
    assert len(example["SEEDS"]) >= 3
    for chain in example["transfer_experiments"].values():
        trainer = chain[-1].trainer
        assert trainer.stop_metric == "correlation" and trainer.early_stopping and trainer.restore_best
        assert chain[-1].model.gamma_convention == "nnvision"
    rows = run(example["transfer_experiments"], workers=2, quiet=True)
    assert all(row["state"] == "done" for row in rows)
    last = [r for r in rows if r["step"] == (0 if r["name"] == "scratch" else 1)]
    assert all(r["test/correlation"] > example["FLOOR"] for r in last)  # every variant and seed
    frame = results_frame(example["transfer_experiments"])
    neural = frame[frame["step"] == frame.groupby("name")["step"].transform("max")]
    assert (neural["epochs"] < example["MAX_EPOCHS"]).all()  # every run stopped early, none at the epoch limit
    results = by_name(rows, "correlation")  # the mean over the sessions
    assert {r["metric"] for r in results.values()} == {"test/correlation"}
    scratch, frozen, fine_tuned = (results[n] for n in ("scratch", "pretrained, frozen", "pretrained, fine-tuned"))
    assert gap_beyond_spread(scratch, frozen) and gap_beyond_spread(fine_tuned, frozen)
    assert 0 < fine_tuned["mean"] - scratch["mean"] < 0.02  # "the fine-tuned core ends slightly above scratch"
    # the command line compares by the same name, and its report shows correlation
    from nntransfer.cli import main

    capsys.readouterr()
    assert main(["results", str(EXAMPLES / "digits_to_neurons.py"), "--metric", "correlation",
                 "--report", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "Comparison: test/correlation of each experiment's last step" in printed
    assert "test/correlation" in (tmp_path / "report" / "index.html").read_text()


# -- the distillation example -----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_distillation_example_supports_its_conclusion(clean_db):
    example = load("digits_distillation.py")
    rows = run(example["transfer_experiments"], workers=2, quiet=True)
    assert all(row["state"] == "done" for row in rows)
    results = by_name(rows, "accuracy")
    labels_only, distilled = results["MLP: labels only"], results["MLP: distilled from LeNet"]
    assert labels_only["n"] == distilled["n"] == len(example["SEEDS"]) >= 5
    # "the difference is within the seeds' spread": no clear benefit, no clear harm
    assert not gap_beyond_spread(distilled, labels_only) and not gap_beyond_spread(labels_only, distilled)
