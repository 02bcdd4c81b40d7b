"""Plain-text tables for the command line."""
from __future__ import annotations

import math


def cell(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def format_table(rows: list[dict]) -> str:
    """Rows (dicts) as aligned columns; floats with four decimals, NaN as "–"."""
    if not rows:
        return "(no experiments)"
    columns = list(dict.fromkeys(c for row in rows for c in row))
    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(cell(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


__all__ = ["cell", "format_table"]
