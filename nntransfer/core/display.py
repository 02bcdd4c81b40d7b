"""HTML views for notebooks: ``_repr_html_`` of configs and experiments (data frames have their own). They read
what the objects tell (``cfg.field_rows()``, ``exp.steps``), so this module imports neither."""
from __future__ import annotations

import html

_STYLE = "border-collapse:collapse;font-size:0.9em"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"


def _e(value) -> str:
    return html.escape(str(value))


def config_html(cfg) -> str:
    """Every field: key or run field, value (changed ones in bold), help; the key hash in the caption."""
    rows = []
    for row in cfg.field_rows():
        shown = f"<b>{_e(repr(row['value']))}</b>" if row["changed"] else _e(repr(row["value"]))
        rows.append(f"<tr><td style='{_CELL}'>{row['kind']}</td><td style='{_CELL}'>{_e(row['name'])}</td>"
                    f"<td style='{_CELL}'>{shown}</td><td style='{_CELL}'>{_e(row['help'])}</td></tr>")
    try:
        key = cfg.get_key()
        caption = f"{type(cfg).__name__} · {_e(cfg.fn)} · hash {_e(key[f'{cfg.config_name}_hash'])}"
    except Exception:  # noqa: BLE001 - a config without fn/config_name still shows its fields
        caption = _e(type(cfg).__name__)
    return (f"<table style='{_STYLE}'><caption style='text-align:left'>{caption} (changed values in bold)</caption>"
            f"<tr><th style='{_CELL}'></th><th style='{_CELL}'>field</th><th style='{_CELL}'>value</th>"
            f"<th style='{_CELL}'>help</th></tr>{''.join(rows)}</table>")


def _summary(cfg) -> str:
    changed = ", ".join(f"{_e(r['name'])}={_e(repr(r['value']))}" for r in cfg.field_rows()
                        if r["changed"] and r["name"] != "comment")
    return f"{_e(type(cfg).__name__)}({changed})"


def experiment_html(exp) -> str:
    """One row per step: seed, dataset, model and trainer with their changed fields."""
    steps = exp.steps
    title = type(exp).__name__ + (f" ({len(steps)} steps)" if type(exp).__name__ == "TransferExperiment" else "")
    rows = "".join(
        f"<tr><td style='{_CELL}'>{i}</td><td style='{_CELL}'>{step.seed}</td>"
        + "".join(f"<td style='{_CELL}'>{_summary(cfg)}</td>" for cfg in step.configs.values()) + "</tr>"
        for i, step in enumerate(steps))
    head = "".join(f"<th style='{_CELL}'>{h}</th>" for h in ("step", "seed", "dataset", "model", "trainer"))
    return (f"<table style='{_STYLE}'><caption style='text-align:left'>{title} (fields that differ from the "
            f"defaults)</caption><tr>{head}</tr>{rows}</table>")


__all__ = ["config_html", "experiment_html"]
