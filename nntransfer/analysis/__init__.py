"""Looking at results: data frames, comparisons, plots and an HTML report.

* :mod:`.frames` — ``results_frame`` (one row per trained entry and step) and ``history_frame`` (per-epoch
  history, long format) of a recipe, experiments or a query of ``TrainedModel``/``TransferredTrainedModel``;
  ``compare``/``comparison`` summaries.
* :mod:`.stats` — the one definition of spread: mean, sample std (ddof=1), count.
* :mod:`.plots` — learning curves, transfer comparison, sweep, chain and robustness plots (matplotlib Figures,
  never the global backend); ``variant_colors``: one colour per variant family, the same in every figure.
* :mod:`.report` — ``write_report``: figures and a self-contained ``index.html``.
"""
from .frames import (compare, comparison, default_metric, entries, history_frame, last_steps, resolve_metric,
                     results_frame, summary)
from .plots import (chain_plot, learning_curves, plot, robustness_plot, sweep_fields, sweep_plot, transfer_comparison,
                    variant_colors, variant_family)
from .report import write_report
from .stats import Spread, format_spread, spread
from .text import format_table

__all__ = ["Spread", "chain_plot", "compare", "comparison", "default_metric", "entries", "format_spread",
           "format_table", "history_frame", "last_steps", "learning_curves", "plot", "resolve_metric", "results_frame",
           "robustness_plot", "spread", "summary", "sweep_fields", "sweep_plot", "transfer_comparison", "variant_colors",
           "variant_family", "write_report"]
