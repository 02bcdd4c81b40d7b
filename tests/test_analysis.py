"""Results as tables, data frames and plots."""
from nntransfer import Description, Experiment, run
from nntransfer.analysis import compare, format_table, plot, results_frame
from toy_pipeline import ToyData, ToyModel, ToyTrainer


def test_results_frame_compare_and_plot(clean_db, tmp_path):
    experiments = {Description(name, seed): Experiment(ToyData(), ToyModel(), ToyTrainer(lr=lr, max_iter=1), seed)
                   for name, lr in (("fast", 0.5), ("slow", 0.001)) for seed in (1, 2)}
    rows = run(experiments, quiet=True)
    text = format_table(rows)
    assert text.splitlines()[0].split()[:5] == ["name", "seed", "step", "state", "score"]
    assert "test/toy/accuracy" in text
    frame = results_frame(experiments)
    assert len(frame) == 4 and set(frame["state"]) == {"done"}
    assert frame["score"].tolist() == frame["test/toy/accuracy"].tolist()  # toy trainer scores test accuracy
    table = compare(frame)
    assert table["count"].tolist() == [2, 2]
    assert abs(table.loc[table.name == "fast", "mean"].item() - frame[frame.name == "fast"]["score"].mean()) < 1e-12
    path = plot(rows, tmp_path / "scores.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
