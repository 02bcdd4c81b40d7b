"""examples/bias_transfer.py through the tables: teachers shared, Fisher information stored as transfer data, the
RDL student's teacher rebuilt from the tables, robustness results stored and reported."""
from pathlib import Path

from nntransfer import run
from nntransfer.analysis import results_frame, write_report
from nntransfer.orchestration.recipes import apply_overrides, load_recipe

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bias_transfer.py"


def test_the_bias_transfer_example_runs_through_the_tables(clean_db, tmp_path):
    experiments = {d: e for d, e in load_recipe(EXAMPLE).items() if d.seed == 1}
    experiments = apply_overrides(experiments, {"trainer.max_iter": 2})
    rows = run(experiments, quiet=True)
    assert [r["state"] for r in rows] == ["done"] * len(rows) and len(rows) == 7  # one teacher, shared
    TT = clean_db.TransferredTrainedModel
    ewc = next(e for d, e in experiments.items() if d.name.startswith("EWC"))
    data = (TT.TransferData & ewc.get_restrictions(0)).fetch1("transfer_data")
    tasks = data["parameters"]["EWC"]["tasks"]
    assert list(tasks) == ["0"] and "core.0.weight" in tasks["0"]["fisher"]
    assert "train" not in data  # no data_transfer: no logits per example, nothing for the students' loaders
    # the EWC student hands on the teacher's Fisher information and its own (a third task could use both)
    student = (TT.TransferData & ewc.get_restrictions(1)).fetch1("transfer_data")
    assert list(student["parameters"]["EWC"]["tasks"]) == ["0", "1"]
    assert len(TT.TransferData()) == 2  # the teacher and the EWC student
    frame = results_frame(experiments)
    students = frame[frame["step"] == 1]
    assert students["noise/img_classification/0.5/accuracy"].notna().all()
    page = write_report(experiments, tmp_path / "report").read_text()
    assert "<h2>Robustness</h2>" in page
