"""Looking at results: summary tables, data frames, comparisons and plots."""
from .results import compare, comparison, format_table, plot, results_frame, summary

__all__ = ["compare", "comparison", "format_table", "plot", "results_frame", "summary"]
