"""Figures a reader can trust, checked on the returned matplotlib Figures of made-up results (no training):
bars from 0, one colour per variant family in every figure, small multiples, each chain step labelled with its
own data, the sweep's "all", and the metric names a neural recipe compares by."""
import math

import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from nntransfer.analysis import (chain_plot, comparison, default_metric, learning_curves, resolve_metric,
                                 sweep_plot, transfer_comparison, variant_colors)
from nntransfer.analysis.frames import test_metrics as flat_test_metrics  # not collected as a test
from nntransfer.configs import ConfigError

FAMILIES = ["baseline (from scratch)", "transfer (fine-tune all)", "transfer (core frozen)"]
BUDGETS = [3, 10, None]
SEEDS = [1, 2, 3]
ACCURACY = "test/img_classification/accuracy"


def label(budget) -> str:
    return f"examples_per_class={budget or 'all'}"


def made_up_results() -> pd.DataFrame:
    """A budget sweep as results_frame shows it: one-step baselines, two-step transfer chains sharing step 0."""
    rows = []
    for budget in BUDGETS:
        for f, family in enumerate(FAMILIES):
            name = f"{family}[{label(budget)}]"
            for seed in SEEDS:
                steps = [0] if family.startswith("baseline") else [0, 1]
                for step in steps:
                    pretraining = len(steps) == 2 and step == 0
                    accuracy = 0.97 + 0.01 * seed if pretraining else 0.5 + 0.1 * f + 0.01 * seed + 0.001 * (budget or 99)
                    rows.append({
                        "name": name, "seed": seed, "step": step, "state": "done", "score": accuracy,
                        ACCURACY: accuracy, "test/img_classification/loss": 1 - accuracy,
                        "dataset_comment": "digits 0-4" if pretraining else f"digits 5-9, {budget or 'all'} per class",
                        "dataset.filter_classes": (0, 1, 2, 3, 4) if pretraining else (5, 6, 7, 8, 9),
                        "dataset.examples_per_class": None if pretraining else budget,
                        "key_hash": f"pretrain-{seed}" if pretraining else f"{name}-{seed}-{step}"})
    return pd.DataFrame(rows)


def made_up_history(evaluations_per_epoch: int = 1) -> pd.DataFrame:
    rows = []
    for budget in BUDGETS:
        for family in FAMILIES:
            for seed in SEEDS:
                for mode in ("Training", "Validation"):
                    for k in range(1, 7):
                        epoch = math.ceil(k / evaluations_per_epoch) if mode == "Validation" else k
                        for metric, value in (("loss", 1 / k), ("accuracy", 1 - 0.5 / k)):
                            rows.append({"name": f"{family}[{label(budget)}]", "seed": seed, "step": 0, "mode": mode,
                                         "task": "img_classification", "metric": metric, "epoch": epoch,
                                         "value": value + 0.01 * seed, "final": False, "optimizer_steps": 10 * k})
    return pd.DataFrame(rows)


def bars(ax):
    return [p for p in ax.patches if type(p).__name__ == "Rectangle"]


def family_of_tick(text: str) -> str:
    return text.replace("\n", " ")


# -- comparison ---------------------------------------------------------------------------------------------
def test_comparison_bars_start_at_zero_one_panel_per_grid_setting_one_colour_per_family():
    frame = made_up_results()
    colors = variant_colors(frame["name"])
    fig = transfer_comparison(frame, colors=colors)
    axes = fig.axes
    assert [ax.get_title(loc="left") for ax in axes] == [label(b) for b in BUDGETS]  # grouped by the budget
    for ax in axes:
        assert ax.get_xlim()[0] == 0  # a bar's length is its value
        shown = [family_of_tick(t.get_text()) for t in ax.get_yticklabels()]
        assert shown == list(reversed(FAMILIES))  # the family names, first on top
        assert len(bars(ax)) == len(FAMILIES)
        for bar in bars(ax):
            family = shown[round(bar.get_y() + bar.get_height() / 2)]
            assert bar.get_x() == 0 and bar.get_facecolor()[:3] == pytest.approx(to_rgb(colors[family]))
    assert len({ax.get_xlim() for ax in axes}) == 1  # one value axis for every panel
    # the same family has the same colour in every panel, and different families different ones
    assert len({to_rgb(c) for c in colors.values()}) == len(FAMILIES)


def test_comparison_without_a_grid_is_one_panel_and_negative_values_keep_zero_on_the_axis():
    rows = [{"name": name, "seed": s, "step": 0, "state": "done", "score": v, "test/t/loss": v}
            for name, values in (("a", [-0.4, -0.2]), ("b", [0.3, 0.5])) for s, v in enumerate(values)]
    fig = transfer_comparison(rows, metric="loss")  # a short name: the one test/<task>/loss
    (ax,) = fig.axes
    low, high = ax.get_xlim()
    assert low < -0.4 and high > 0.5 and len(bars(ax)) == 2
    assert sorted(b.get_x() for b in bars(ax)) == [0, 0]  # both bars grow from 0, one to the left
    assert ax.get_xlabel() == "test/t/loss"
    # an accuracy's axis stays at 0 even where a mean's std line would reach below it
    rows = [{"name": "few", "seed": s, "step": 0, "state": "done", "score": v, "test/t/accuracy": v}
            for s, v in enumerate([0.0, 0.02, 0.4])]
    (ax,) = transfer_comparison(rows).axes
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 0.4


def test_colors_must_cover_every_family():
    frame = made_up_results()
    with pytest.raises(ConfigError, match=r"colors has no colour for the variant family 'transfer \(core frozen\)'"):
        transfer_comparison(frame, colors=variant_colors(FAMILIES[:2]))


# -- the same colours in every figure ---------------------------------------------------------------------
def test_a_family_has_its_colour_in_every_figure():
    frame, history = made_up_results(), made_up_history()
    colors = {family: to_rgb(c) for family, c in variant_colors(frame["name"]).items()}
    seen: dict = {}

    def record(family, color):
        seen.setdefault(family, set()).add(tuple(round(v, 6) for v in to_rgb(color)))

    for ax in transfer_comparison(frame, colors=colors).axes:
        for bar, tick in zip(bars(ax), [t.get_text() for t in ax.get_yticklabels()][::-1]):
            record(family_of_tick(tick), bar.get_facecolor())
    sweep = sweep_plot(frame, "dataset.examples_per_class", colors=colors)
    for line in sweep.axes[0].lines:
        record(line.get_label().replace("\n", " "), line.get_color())
    curves = learning_curves(history, colors=colors)
    for handle in curves.legends[0].legend_handles[:len(FAMILIES)]:
        record(handle.get_label().replace("\n", " "), handle.get_color())
    for ax in curves.axes:
        assert {tuple(round(v, 6) for v in to_rgb(line.get_color())) for line in ax.lines} <= \
            {tuple(round(v, 6) for v in c) for c in colors.values()}
    assert set(seen) == set(FAMILIES)
    for family, found in seen.items():
        assert found == {tuple(round(v, 6) for v in colors[family])}, family


# -- learning curves ------------------------------------------------------------------------------------------
def test_learning_curves_are_small_multiples_with_seed_bands():
    fig = learning_curves(made_up_history())
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 * len(BUDGETS)  # a row per metric (loss, accuracy), a panel per budget
    assert [ax.get_title() for ax in axes[:len(BUDGETS)]] == [label(b) for b in BUDGETS]
    assert [axes[0].get_ylabel(), axes[len(BUDGETS)].get_ylabel()] == ["loss", "accuracy"]
    for ax in axes:
        assert len(ax.lines) == len(FAMILIES) * 2  # a line per family and pass (training dashed, validation solid)
        assert {line.get_linestyle() for line in ax.lines} == {"-", "--"}
        assert len(ax.collections) == len(FAMILIES) * 2  # the ± std band over the three seeds
        assert ax.get_xlabel() == "epoch"
    assert axes[1].get_shared_y_axes().joined(axes[0], axes[1])  # panels of a metric compare on one axis


def test_learning_curves_use_optimizer_steps_when_runs_evaluate_several_times_per_epoch():
    fig = learning_curves(made_up_history(evaluations_per_epoch=2), metrics=["accuracy"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "optimizer steps"
    validation = [line for line in ax.lines if line.get_linestyle() == "-"][0]
    assert list(validation.get_xdata()) == [10, 20, 30, 40, 50, 60]  # every evaluation, none merged by epoch
    with pytest.raises(ConfigError, match="x is 'epoch' or 'optimizer_steps'"):
        learning_curves(made_up_history(), x="batch")


def test_learning_curves_without_a_grid_make_a_panel_per_family_and_average_tasks():
    rows = []
    for family in ("scratch", "frozen"):
        for seed in (1, 2):
            for task, offset in (("session-a", 0.0), ("session-b", 0.2)):
                for epoch in (1, 2, 3):
                    rows.append({"name": family, "seed": seed, "step": 1, "mode": "Validation", "task": task,
                                 "metric": "correlation", "epoch": epoch, "value": 0.1 * epoch + offset,
                                 "final": False, "optimizer_steps": 5 * epoch})
    fig = learning_curves(pd.DataFrame(rows), modes=["Validation"])
    assert [ax.get_title() for ax in fig.axes] == ["scratch", "frozen"]
    assert fig.axes[0].get_ylabel() == "correlation (mean over tasks)"
    (line,) = fig.axes[0].lines
    assert list(line.get_ydata()) == pytest.approx([0.2, 0.3, 0.4])  # the mean over the two sessions


# -- chains ---------------------------------------------------------------------------------------------------
def test_chain_plot_has_a_panel_per_step_labelled_with_that_steps_data():
    frame = made_up_results()
    fig = chain_plot(frame)
    step0, step1 = fig.axes
    assert step0.get_title(loc="left") == "step 0: digits 0-4"
    assert step1.get_title(loc="left") == "step 1: digits 5-9"  # the words every step-1 dataset comment begins with
    for ax in (step0, step1):  # no line joins step 0 and step 1 (different test sets): only the zero line
        assert [list(line.get_xdata()) for line in ax.lines] == [[0, 0]]
    # the pretraining shared by every transfer chain is one bar, grey (it belongs to two families)
    (shared,) = bars(step0)
    assert shared.get_facecolor()[:3] == pytest.approx(to_rgb("0.55"))
    assert "shared by 6" in step0.get_yticklabels()[0].get_text()
    assert len(bars(step1)) == 2 * len(BUDGETS) and step1.get_xlim()[0] == step0.get_xlim()[0] == 0


def test_chain_plot_uses_each_steps_own_metric():
    rows = []
    for seed in (1, 2):
        rows.append({"name": "digits -> neurons", "seed": seed, "step": 0, "state": "done", "score": 0.9,
                     "test/img_classification/accuracy": 0.9, "test/correlation": None,
                     "dataset_comment": "digits 16x16", "key_hash": f"p{seed}"})
        rows.append({"name": "digits -> neurons", "seed": seed, "step": 1, "state": "done", "score": 0.6,
                     "test/img_classification/accuracy": None, "test/correlation": 0.6,
                     "dataset_comment": "simulated neurons", "key_hash": f"n{seed}"})
    fig = chain_plot(pd.DataFrame(rows), metric="correlation")
    assert [ax.get_xlabel() for ax in fig.axes] == ["test/img_classification/accuracy", "test/correlation"]
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["step 0: digits 16x16", "step 1: simulated neurons"]
    with pytest.raises(ConfigError, match="no metric 'corelation' in the results"):
        chain_plot(pd.DataFrame(rows), metric="corelation")


# -- sweeps ---------------------------------------------------------------------------------------------------
def test_sweep_plot_writes_all_as_the_grid_labels_do_and_colours_lines_by_family():
    frame = made_up_results()
    colors = variant_colors(frame["name"])
    ax = sweep_plot(frame, "dataset.examples_per_class", colors=colors).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "10", "all"]
    assert [line.get_label() for line in ax.lines] == FAMILIES
    for line in ax.lines:
        assert to_rgb(line.get_color()) == pytest.approx(to_rgb(colors[line.get_label()]))
    # None reads "all" for a per-class limit even when no grid label says so
    unnamed = frame.assign(name=[n.split("[")[0] for n in frame["name"]])
    ax = sweep_plot(unnamed, "dataset.examples_per_class", by="dataset_comment").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "all"


# -- metric names -----------------------------------------------------------------------------------------------
def test_a_neural_recipe_compares_the_mean_test_correlation_over_sessions():
    output = {"validation": {"a": {"correlation": 0.5}, "b": {"correlation": 0.7}},
              "test": {"a": {"loss": 0.9, "correlation": 0.6}, "b": {"loss": 0.8, "correlation": 0.8}}}
    metrics = flat_test_metrics(output)
    assert metrics["test/correlation"] == pytest.approx(0.7) and metrics["test/loss"] == pytest.approx(0.85)
    assert list(metrics)[:2] == ["test/loss", "test/correlation"]  # the means come first
    rows = [{"name": "scratch", "seed": s, "step": 0, "state": "done", "score": 0.6, **metrics} for s in (1, 2)]
    assert default_metric(rows) == "test/correlation"  # the early-stopping metric, over sessions
    (row,) = comparison(rows, "correlation")  # --metric correlation
    assert row["metric"] == "test/correlation" and row["mean"] == pytest.approx(0.7)
    # one task: no mean column, and the short name finds the task's
    single = flat_test_metrics({"validation": {"t": {}}, "test": {"t": {"accuracy": 0.9},
                                                                "t_rotated_10": {"accuracy": 0.5}}})
    assert single == {"test/t/accuracy": 0.9, "test/t_rotated_10/accuracy": 0.5}  # a rotation is no task trained on
    with pytest.raises(ConfigError, match="metric 'accuracy' is reported by several tasks"):
        resolve_metric("accuracy", ["score", *single])
    assert resolve_metric("t/accuracy", ["score", *single]) == "test/t/accuracy"
    assert resolve_metric("recall", ["score", *single]) is None
