"""Results people look at: frames, the one definition of spread, plots, the HTML report in Chromium."""
import math
import socket
import statistics

import matplotlib
import pandas as pd
import pytest
import torch

import nntransfer
from nntransfer import Description, Experiment, TransferExperiment, run
from nntransfer.analysis import (chain_plot, compare, comparison, format_spread, format_table, history_frame,
                                 learning_curves, plot, results_frame, spread, sweep_plot, transfer_comparison,
                                 write_report)
from nntransfer.core.compat import make_hash
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig
from nntransfer.orchestration.recipes import normalize
from nntransfer.orchestration.plan import plan

PRETRAIN_DATA = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], examples_per_class=30,
                                   batch_size=32)
LENET = ModelConfig(type="lenet")
TRAIN = TrainerConfig(max_iter=2, verbose=False, optimizer_options={"lr": 0.003})
BUDGETS = (5, 10)
SEEDS = (1, 2)


def target_data(n):
    return ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], examples_per_class=n,
                              batch_size=16)


# a finished 2-seed run: two-step transfer chains and one-step baselines, swept over examples_per_class
EXPERIMENTS = {}
for _n in BUDGETS:
    for _seed in SEEDS:
        EXPERIMENTS[Description(f"transfer[examples_per_class={_n}]", _seed)] = TransferExperiment(
            [Experiment(PRETRAIN_DATA, LENET, TRAIN, _seed), Experiment(target_data(_n), LENET, TRAIN, _seed)])
        EXPERIMENTS[Description(f"baseline[examples_per_class={_n}]", _seed)] = TransferExperiment(
            [Experiment(target_data(_n), LENET, TRAIN, _seed)])
NAMES = list(dict.fromkeys(d.name for d in EXPERIMENTS))


@pytest.fixture(scope="module")
def trained_once(module_db):
    run(EXPERIMENTS, quiet=True)  # 16 jobs: trained once for the module's read-only tests
    return module_db


@pytest.fixture
def finished(trained_once):
    """The finished run, for tests that only read it."""
    distinct = {make_hash(dict(t.key)) for t in _targets()}  # a pretraining step is shared by two chains
    if len(trained_once.TransferredTrainedModel()) != len(distinct):  # a clean_db test emptied the tables
        run(EXPERIMENTS, quiet=True)
    return trained_once


def _targets():
    return plan(normalize(EXPERIMENTS))


def test_results_frame_rows_columns_and_values_match_the_tables(finished):
    frame = results_frame(EXPERIMENTS)
    targets = _targets()
    assert len(frame) == len(targets) == 2 * (2 * 2 + 2 * 1)  # seeds x (chains x 2 steps + baselines x 1 step)
    assert set(frame["state"]) == {"done"}
    assert list(frame.columns[:5]) == ["name", "seed", "step", "state", "score"]
    for column in ("test/img_classification/accuracy", "test/img_classification/loss", "epochs", "best_epoch",
                   "wall_time", "git_commit", "git_dirty", "host", "device", "torch_version", "key_hash"):
        assert column in frame.columns
    # config fields that differ between rows are columns; those that are the same everywhere are not
    assert "dataset.examples_per_class" in frame.columns and "dataset.filter_classes" in frame.columns
    assert "trainer.max_iter" not in frame.columns and "model.type" not in frame.columns
    table = finished.TransferredTrainedModel
    for target, (_, row) in zip(targets, frame.iterrows()):
        stored = (table & target.key).fetch1()
        assert (row["name"], row["seed"], row["step"]) == (target.description.name, target.description.seed,
                                                           target.step)
        assert row["score"] == stored["score"]
        assert row["test/img_classification/accuracy"] == stored["output"]["test"]["img_classification"]["accuracy"]
        assert row["epochs"] == stored["output"]["epochs"] and row["best_epoch"] == stored["output"]["best_epoch"]
        assert row["key_hash"] == make_hash(dict(target.key))
        expected_budget = 30 if row["name"].startswith("transfer") and row["step"] == 0 else \
            int(row["name"].split("=")[1].rstrip("]"))
        assert row["dataset.examples_per_class"] == expected_budget
        # provenance of every result
        prov = (table.Provenance & target.key).fetch1()
        assert row["nntransfer_version"] == prov["nntransfer_version"] == nntransfer.__version__
        assert row["torch_version"] == torch.__version__ and row["host"] == socket.gethostname()
        assert row["device"] == "cpu" or row["device"].startswith("cuda:")
        assert row["wall_time"] == prov["wall_time"] > 0


def test_results_frame_of_a_datajoint_restriction(finished):
    table = finished.TransferredTrainedModel
    seed_one = [t.key for t in _targets() if t.description.seed == 1]
    frame = results_frame(table & seed_one)
    distinct = {make_hash(dict(k)) for k in seed_one}
    assert len(frame) == len(distinct) == 5  # the pretraining step is shared by both chains
    by_recipe = results_frame(EXPERIMENTS).drop_duplicates("key_hash").set_index("key_hash")
    for _, row in frame.iterrows():
        assert row["seed"] == 1 and row["state"] == "done"
        assert row["score"] == by_recipe.loc[row["key_hash"], "score"]
        assert row["step"] == by_recipe.loc[row["key_hash"], "step"]
    assert "dataset.examples_per_class" in frame.columns  # configs come from the config tables
    assert len(results_frame(table)) == 10
    with pytest.raises(TypeError, match="TrainedModel"):
        results_frame(finished.Dataset())


def test_history_frame_is_the_tracker_history_in_long_format(finished):
    history = history_frame(EXPERIMENTS)
    assert list(history.columns) == ["name", "seed", "step", "mode", "task", "metric", "epoch", "value", "final",
                                     "optimizer_steps"]
    target = next(t for t in _targets() if t.step == 1)
    tracker = (finished.TransferredTrainedModel & target.key).fetch1("output")["tracker"]
    mine = history[(history["name"] == target.description.name) & (history["seed"] == target.description.seed)
                   & (history["step"] == 1)]
    passes = mine[~mine["final"]]
    assert len(passes) == sum(len(v) for tasks in tracker["log"].values() for m in tasks.values() for v in m.values())
    accuracy = passes[(passes["mode"] == "Validation") & (passes["metric"] == "accuracy")]
    assert accuracy["value"].tolist() == tracker["log"]["Validation"]["img_classification"]["accuracy"]
    assert accuracy["epoch"].tolist() == tracker["epochs"]["Validation"]
    assert accuracy["optimizer_steps"].tolist() == tracker["steps"]["Validation"]
    assert set(passes["mode"]) == {"Training", "Validation"}
    final = mine[mine["final"]]  # the final validation (restored best) and the test, at the last epoch
    assert set(final["mode"]) == {"Validation", "Test"}
    assert set(final["epoch"]) == {max(tracker["epochs"]["Training"])}
    test_accuracy = final[(final["mode"] == "Test") & (final["metric"] == "accuracy")]["value"].item()
    assert test_accuracy == tracker["final"]["Test"]["img_classification"]["accuracy"]


def test_one_definition_of_spread_everywhere():
    values = [0.5, 0.7, 0.9]
    rows = [{"name": "a", "seed": s, "step": 0, "state": "done", "score": v, "test/t/accuracy": v}
            for s, v in enumerate(values)] + [{"name": "b", "seed": 1, "step": 0, "state": "done", "score": 0.3,
                                               "test/t/accuracy": 0.3}]
    sample_std = statistics.stdev(values)  # ddof=1
    s = spread(values)
    assert (s.mean, s.count) == (pytest.approx(0.7), 3) and s.std == pytest.approx(sample_std)
    assert format_spread(s) == f"0.7000 ± {sample_std:.4f} (n=3)"
    one = spread([0.3])
    assert one.count == 1 and math.isnan(one.std) and format_spread(one) == "0.3000 (n=1)"
    # the CLI comparison
    compared = {r["name"]: r for r in comparison(rows)}
    assert compared["a"]["std"] == pytest.approx(sample_std) and compared["a"]["n"] == 3
    assert compared["b"]["n"] == 1 and math.isnan(compared["b"]["std"])
    assert "–" in format_table([compared["b"]])
    # compare() on a frame
    table = compare(pd.DataFrame(rows)).set_index("name")
    assert table.loc["a", "std"] == pytest.approx(sample_std) and table.loc["a", "count"] == 3
    # the comparison plot's error bar spans mean ± the same std
    ax = transfer_comparison(rows).axes[0]
    (segment,) = [seg for c in ax.collections if hasattr(c, "get_segments") for seg in c.get_segments()]
    assert segment[1][0] - segment[0][0] == pytest.approx(2 * sample_std)


def _scatter_points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if type(c).__name__ == "PathCollection")


def test_plots_return_figures_save_and_leave_the_backend_alone(finished, tmp_path):
    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # any backend a program chose must stay (the old plot switched to Agg)
    try:
        frame = results_frame(EXPERIMENTS)
        history = history_frame(EXPERIMENTS)
        figures = {}

        figures["curves"] = fig = learning_curves(history)
        # small multiples: a row per metric (loss, accuracy), a panel per budget; in each a line per family and pass
        assert [ax.get_title() for ax in fig.axes] == [f"examples_per_class={n}" for n in BUDGETS] * 2
        assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "", "accuracy", ""]
        assert all(len(ax.lines) == 2 * 2 for ax in fig.axes)  # transfer and baseline, training and validation

        figures["comparison"] = fig = transfer_comparison(frame)
        assert [ax.get_title(loc="left") for ax in fig.axes] == [f"examples_per_class={n}" for n in BUDGETS]
        assert sum(len(ax.patches) for ax in fig.axes) == len(NAMES)  # one bar per experiment
        assert sum(_scatter_points(ax) for ax in fig.axes) == len(NAMES) * len(SEEDS)  # one point per seed
        assert all([t.get_text() for t in ax.get_yticklabels()] == ["baseline", "transfer"] for ax in fig.axes)
        values = frame.loc[frame["step"] == frame.groupby("name")["step"].transform("max"),
                           "test/img_classification/accuracy"]
        low, high = fig.axes[0].get_xlim()
        assert low == 0 and values.max() <= high  # bars from 0

        figures["sweep"] = fig = sweep_plot(frame, "dataset.examples_per_class")
        ax = fig.axes[0]
        assert len(ax.lines) == 2  # transfer and baseline
        assert all(list(line.get_xdata()) == list(BUDGETS) for line in ax.lines)
        assert _scatter_points(ax) == len(NAMES) * len(SEEDS)

        figures["chain"] = fig = chain_plot(frame)  # a panel per step, each named by its own data
        titles = [ax.get_title(loc="left").replace("\n", " ") for ax in fig.axes]
        assert titles == ["step 0: filter_classes=[0, 1, 2, 3, 4], examples_per_class=30",
                          "step 1: filter_classes=[5, 6, 7, 8, 9]"]  # the budget differs within step 1
        assert [len(ax.patches) for ax in fig.axes] == [1, 2]  # the shared pretraining is one bar

        for name, fig in figures.items():
            for suffix in ("png", "svg", "pdf"):
                path = tmp_path / f"{name}.{suffix}"
                fig.savefig(path)
                assert path.stat().st_size > 1000
        saved = plot(frame, tmp_path / "scores.png")
        assert saved.read_bytes()[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)


def test_report_renders_in_headless_chromium(finished, tmp_path):
    from browser import find_chromium, render

    recipe = tmp_path / "digits_sweep.py"
    recipe.write_text("from test_analysis import EXPERIMENTS as transfer_experiments\n")
    from nntransfer.cli import main

    assert main(["results", str(recipe), "--report", str(tmp_path / "report")]) == 0
    index = tmp_path / "report" / "index.html"
    page = index.read_text()
    assert "digits_sweep" in page and "transfer[examples_per_class=5]" in page
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium to render the report (apt-get install chromium)")
    shown = render(chromium, index)
    assert shown["errors"] == []
    sources = {image["src"] for image in shown["images"]}
    assert sources == {"comparison.png", "sweep_dataset_examples_per_class.png", "chain.png", "learning_curves.png"}
    # every result was made here, by one set of versions: the provenance table is one line, not one per result
    provenance = page.split("<h2>Provenance</h2>")[1]
    assert provenance.count("<tr") == 2 and "<td>10</td>" in provenance  # header + one line of 10 results
    assert all((tmp_path / "report" / src).is_file() for src in sources)
    assert all(image["complete"] and image["width"] > 0 for image in shown["images"])
    import io

    from matplotlib.image import imread

    pixels = imread(io.BytesIO(shown["screenshot"]), format="png")
    assert pixels.shape[0] > 1000 and pixels.shape[1] > 1000
    assert pixels[..., :3].std() > 0.05  # not a blank page


def test_write_report_of_a_query_and_notes_what_it_cannot_plot(finished, tmp_path):
    index = write_report(finished.TransferredTrainedModel & "transfer_step = 0", tmp_path / "r")
    page = index.read_text()
    assert "<h2>Provenance</h2>" in page and "comparison.png" in page
    assert "no finished experiment with more than one step" not in page  # no chain: no chain section at all


def test_the_default_metric_is_one_the_last_steps_report():
    """A transfer recipe whose pretraining step reports accuracy and whose last step reports correlation."""
    from nntransfer.analysis import comparison, default_metric

    rows = [{"name": "core transfer", "seed": s, "step": 0, "state": "done", "score": 0.9,
             "test/img_classification/accuracy": 0.9} for s in (1, 2)]
    rows += [{"name": "core transfer", "seed": s, "step": 1, "state": "done", "score": c,
              "test/a/correlation": c} for s, c in ((1, 0.6), (2, 0.7))]
    assert default_metric(rows) == "test/a/correlation"
    (row,) = comparison(rows)
    assert row["metric"] == "test/a/correlation" and row["n"] == 2 and row["mean"] == pytest.approx(0.65)
    import pandas as pd

    assert default_metric(pd.DataFrame(rows)) == "test/a/correlation"
    assert default_metric(["score", "test/x/loss", "test/x/accuracy"]) == "test/x/accuracy"


def test_a_metric_no_finished_last_step_reports_is_a_config_error():
    from nntransfer.analysis import comparison
    from nntransfer.configs import ConfigError

    rows = [{"name": "a", "seed": 1, "step": 0, "state": "done", "score": 0.9, "test/t/accuracy": 0.9},
            {"name": "b", "seed": 1, "step": 0, "state": "pending", "score": None}]
    assert comparison(rows, "test/t/accuracy")[0]["mean"] == 0.9
    with pytest.raises(ConfigError, match="no finished experiment reports the metric 'test/accuracy'; .*test/t/acc"):
        comparison(rows, "test/accuracy")
    assert comparison(rows[1:], "test/accuracy") == []  # nothing finished yet: nothing to compare, no error
