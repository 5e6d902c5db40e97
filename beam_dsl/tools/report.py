"""Per-key metrics of a pipeline's TRAIN statements: a text table and an HTML page.

Both read the manifests TRAIN writes beside its models (see
:mod:`beam_dsl.transforms.training.modelstore`), so they describe the last
run that trained, on any runner. ``run`` prints the tables when it ends;
``report`` (or ``run --report FILE``) writes the page: per TRAIN, a bar
chart of each metric per key (inline SVG: the page needs no network) and
the table. Imports no Beam.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Any

from beam_dsl.dsl.compiler import Compilation
from beam_dsl.transforms.training.modelstore import ModelStore


@dataclass
class TrainedModels:
    """One TRAIN statement's models as its manifest lists them."""

    name: str
    save_to: str
    per: list[str]
    metrics: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    found: bool = False  # whether there is a manifest (a run trained)

    @property
    def promoted(self) -> int:
        return sum(1 for m in self.models if m["promoted"])


def trained_models(compilation: Compilation) -> list[TrainedModels]:
    """The models of each TRAIN the pipeline uses, from their manifests."""
    out = []
    for name, definition in sorted(compilation.defs.items()):
        if definition.kind != "Train" or name not in compilation.types:
            continue
        config = definition.config
        template = os.path.join(compilation.pipeline_dir, config.save_to)
        manifest = ModelStore(template).manifest()
        trained = TrainedModels(name, config.save_to, list(config.per))
        if manifest is not None:
            models = manifest.get("models", [])
            trained.metrics = list(manifest.get("metrics") or [])
            trained.metrics += [m for m in (models[0]["metrics"] if models else {})
                                if m not in trained.metrics]
            trained.models = sorted(models, key=lambda m: [str(k) for k in m["key"]])
            trained.skipped = manifest.get("skipped", [])
            trained.found = True
        out.append(trained)
    return out


def _key(entry: dict) -> list[str]:
    return ["" if v is None else str(v) for v in entry["key"]]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _rows(trained: TrainedModels) -> tuple[list[str], list[list[str]]]:
    header = [*(trained.per or ["key"]), "rows", "train", "holdout", *trained.metrics, "promoted"]
    rows = []
    for m in trained.models:
        key = _key(m) if trained.per else ["(all rows)"]
        counts = [str(m.get(k, "")) for k in ("rows", "train_rows", "holdout_rows")]
        metrics = [_number(m["metrics"].get(name)) for name in trained.metrics]
        rows.append([*key, *counts, *metrics, "yes" if m["promoted"] else "no"])
    return header, rows


def text_table(trained: TrainedModels) -> str:
    """The per-key metrics of one TRAIN as aligned text."""
    title = f"{trained.name}: {trained.save_to}"
    if not trained.found:
        return f"{title}: no manifest (not trained yet)"
    header, rows = _rows(trained)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    keys = len(header) - 4 - len(trained.metrics)
    lines = [
        title,
        *(
            "  " + "  ".join(c.ljust(w) if i < keys else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in [header, *rows]
        ),
    ]
    for s in trained.skipped:
        lines.append(f"  skipped {'/'.join(_key(s))}: {s['reason']}")
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------- the HTML page

_BAR, _ROW, _LABEL_W, _CHART_W = 16, 22, 160, 360
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th.key, td.key { text-align: left; }
tr.rejected td { color: #a33; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
h3 { margin: 0.2em 0; font-size: 14px; }
.note { color: #666; }
"""


def _chart(trained: TrainedModels, metric: str) -> str:
    """One metric per key as horizontal bars (red: the model was not promoted)."""
    values = [(" / ".join(_key(m)) or "(all rows)", m["metrics"].get(metric), m["promoted"])
              for m in trained.models]
    scale = max([1.0, *(abs(v) for _, v, _ in values if v is not None)])
    height = _ROW * len(values) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_LABEL_W + _CHART_W + 60}" '
        f'height="{height}" role="img" aria-label="{html.escape(metric)} per key">'
    ]
    for i, (label, value, promoted) in enumerate(values):
        y = 5 + i * _ROW
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 12}" text-anchor="end" font-size="12">'
            f"{html.escape(label)}</text>"
        )
        if value is not None:
            width = abs(value) / scale * _CHART_W
            color = "#4a7ebb" if promoted else "#c0504d"
            faded = ' opacity="0.5"' if value < 0 else ""  # a negative r2
            parts.append(
                f'<rect x="{_LABEL_W}" y="{y}" width="{width:.1f}" height="{_BAR}" '
                f'fill="{color}"{faded}/>'
            )
        parts.append(
            f'<text x="{_LABEL_W + (abs(value or 0) / scale * _CHART_W) + 4:.1f}" '
            f'y="{y + 12}" font-size="11">{_number(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _section(trained: TrainedModels) -> str:
    name = html.escape(trained.name)
    if not trained.found:
        return f"<h2>{name}</h2><p class='note'>No manifest beside " \
               f"{html.escape(trained.save_to)}: the pipeline has not trained yet.</p>"
    header, rows = _rows(trained)
    keys = len(header) - 4 - len(trained.metrics)
    cells = "".join(
        f"<th class='key'>{html.escape(h)}</th>" if i < keys else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        f"<tr class='{'promoted' if r[-1] == 'yes' else 'rejected'}'>"
        + "".join(
            f"<td class='key'>{html.escape(c)}</td>" if i < keys else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    charts = "".join(
        f"<div><h3>{html.escape(metric)}</h3>{_chart(trained, metric)}</div>"
        for metric in trained.metrics
    )
    skipped = "".join(
        f"<li>{html.escape('/'.join(_key(s)))}: {html.escape(str(s['reason']))}</li>"
        for s in trained.skipped
    )
    return (
        f"<h2>{name}</h2>"
        f"<p>{len(trained.models)} models, {trained.promoted} promoted, "
        f"{len(trained.models) - trained.promoted} rejected by GATE, "
        f"{len(trained.skipped)} key{'s' if len(trained.skipped) != 1 else ''} skipped; "
        f"saved to {html.escape(trained.save_to)}</p>"
        f"<div class='charts'>{charts}</div>"
        f"<table><tr>{cells}</tr>{body}</table>"
        + (f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else "")
    )


def html_page(pipeline: str, trained: list[TrainedModels]) -> str:
    """A self-contained page (inline CSS and SVG) of every TRAIN's per-key metrics."""
    title = f"beam_dsl report: {os.path.basename(pipeline)}"
    sections = "".join(_section(t) for t in trained) or "<p>The pipeline has no TRAIN.</p>"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{sections}</body></html>\n"
    )

