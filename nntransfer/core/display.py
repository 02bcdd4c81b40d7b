"""HTML views for notebooks: ``_repr_html_`` of configs and experiments (data frames have their own)."""
from __future__ import annotations

import html

_STYLE = "border-collapse:collapse;font-size:0.9em"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"


def _e(value) -> str:
    return html.escape(str(value))


def _changed(cfg) -> list[tuple[str, object]]:
    from .config import _default_of

    return [(name, getattr(cfg, name)) for name, f in cfg.fields().items() if getattr(cfg, name) != _default_of(f)]


def config_html(cfg) -> str:
    """Every field: key or run field, value (changed ones in bold), help; the key hash in the caption."""
    from .config import _default_of, is_key_field

    rows = []
    for name, f in cfg.fields().items():
        value = getattr(cfg, name)
        shown = f"<b>{_e(repr(value))}</b>" if value != _default_of(f) else _e(repr(value))
        rows.append(f"<tr><td style='{_CELL}'>{'key' if is_key_field(f) else 'run'}</td>"
                    f"<td style='{_CELL}'>{_e(name)}</td><td style='{_CELL}'>{shown}</td>"
                    f"<td style='{_CELL}'>{_e(f.metadata.get('help', ''))}</td></tr>")
    try:
        key = cfg.get_key()
        caption = f"{type(cfg).__name__} · {_e(cfg.fn)} · hash {_e(key[f'{cfg.config_name}_hash'])}"
    except Exception:  # noqa: BLE001 - a config without fn/config_name still shows its fields
        caption = _e(type(cfg).__name__)
    return (f"<table style='{_STYLE}'><caption style='text-align:left'>{caption} (changed values in bold)</caption>"
            f"<tr><th style='{_CELL}'></th><th style='{_CELL}'>field</th><th style='{_CELL}'>value</th>"
            f"<th style='{_CELL}'>help</th></tr>{''.join(rows)}</table>")


def _summary(cfg) -> str:
    changed = ", ".join(f"{_e(n)}={_e(repr(v))}" for n, v in _changed(cfg) if n != "comment")
    return f"{_e(type(cfg).__name__)}({changed})"


def experiment_html(exp) -> str:
    """One row per step: seed, dataset, model and trainer with their changed fields."""
    from .experiment import Experiment

    steps = exp.steps
    title = "Experiment" if isinstance(exp, Experiment) else f"TransferExperiment ({len(steps)} steps)"
    rows = "".join(
        f"<tr><td style='{_CELL}'>{i}</td><td style='{_CELL}'>{step.seed}</td>"
        + "".join(f"<td style='{_CELL}'>{_summary(cfg)}</td>" for cfg in step.configs.values()) + "</tr>"
        for i, step in enumerate(steps))
    head = "".join(f"<th style='{_CELL}'>{h}</th>" for h in ("step", "seed", "dataset", "model", "trainer"))
    return (f"<table style='{_STYLE}'><caption style='text-align:left'>{title} (fields that differ from the "
            f"defaults)</caption><tr>{head}</tr>{rows}</table>")


__all__ = ["config_html", "experiment_html"]
