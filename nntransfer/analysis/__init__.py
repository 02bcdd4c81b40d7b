"""Looking at results: summary tables, data frames, comparisons and plots."""
from .results import compare, format_table, plot, results_frame, summary

__all__ = ["compare", "format_table", "plot", "results_frame", "summary"]
