"""Looking at results: data frames, comparisons, plots and an HTML report.

* :mod:`.frames` — ``results_frame`` (one row per trained entry and step) and ``history_frame`` (per-epoch
  history, long format) of a recipe, experiments or a query of ``TrainedModel``/``TransferredTrainedModel``;
  ``compare``/``comparison`` summaries.
* :mod:`.stats` — the one definition of spread: mean, sample std (ddof=1), count.
* :mod:`.plots` — learning curves, transfer comparison, sweep, chain and robustness plots (matplotlib Figures,
  never the global backend); ``variant_colors``: one colour per variant family, the same in every figure.
* :mod:`.report` — ``write_report``: figures and a self-contained ``index.html``.
"""
import importlib

# where each public name lives; loaded on first use, so that a command needing one helper (``status`` formats a
# table) does not import the frames, plots and report machinery
_HOMES = {
    **dict.fromkeys(["compare", "comparison", "default_metric", "entries", "history_frame", "last_steps",
                     "resolve_metric", "results_frame", "summary"], "frames"),
    **dict.fromkeys(["chain_plot", "learning_curves", "plot", "robustness_plot", "sweep_fields", "sweep_plot",
                     "transfer_comparison", "variant_colors", "variant_family"], "plots"),
    "write_report": "report",
    **dict.fromkeys(["Spread", "format_spread", "spread"], "stats"),
    "format_table": "text",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
