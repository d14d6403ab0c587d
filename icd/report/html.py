"""A small self-contained HTML report: headings, text, tables and matplotlib figures (embedded PNG).

Example:
    report = Report("icd run", subtitle="runs/bert_production")
    report.add_table("Fidelity", [{"variant": "dense", "cos_mean": 1.0}])
    fig, ax = new_figure(); ax.plot([1, 2, 3]); report.add_figure("Cost", fig)
    report.write("runs/bert_production/report.html")
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from icd.io.atomic import write_text_atomic

_TEMPLATE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0 1.5rem} th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} img{max-width:100%} pre{background:#f7f7f7;padding:.6rem;overflow:auto}
.note{color:#555}
</style></head><body>
<h1>{{ title }}</h1>{% if subtitle %}<p class="sub">{{ subtitle }}</p>{% endif %}
<p class="note">generated {{ generated }}</p>
{% for s in sections %}<section><h2>{{ s.heading }}</h2>{{ s.body }}</section>
{% endfor %}</body></html>
""",
    autoescape=False,
)


@dataclass
class _Section:
    heading: str
    body: str


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "not measured"
    return html.escape(str(value))


def new_figure(width: float = 8.0, height: float = 3.6):
    """A matplotlib (Agg) figure and axes, for :meth:`Report.add_figure`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[_Section] = field(default_factory=list)

    def add_text(self, heading: str, text: str) -> None:
        self.sections.append(_Section(heading, f"<p>{html.escape(text)}</p>"))

    def add_table(self, heading: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        cols = columns or list(dict.fromkeys(k for row in rows for k in row))
        head = "".join(f"<th class='l'>{html.escape(c)}</th>" if i == 0 else f"<th>{html.escape(c)}</th>" for i, c in enumerate(cols))
        body = "".join(
            "<tr>" + "".join(
                f"<td class='l'>{_fmt(r.get(c))}</td>" if i == 0 else f"<td>{_fmt(r.get(c))}</td>" for i, c in enumerate(cols)
            ) + "</tr>"
            for r in rows
        )
        self.sections.append(_Section(heading, f"<table><tr>{head}</tr>{body}</table>"))

    def add_figure(self, heading: str, fig: Any) -> None:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        self.add_png(heading, buf.getvalue())

    def add_png(self, heading: str, png: bytes) -> None:
        """Embed an already rendered PNG (e.g. the one also written next to the report)."""
        data = base64.b64encode(png).decode("ascii")
        self.sections.append(_Section(heading, f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{data}'>"))

    def add_json(self, heading: str, obj: Any) -> None:
        text = json.dumps(obj, indent=2, default=str)
        self.sections.append(_Section(heading, f"<pre>{html.escape(text)}</pre>"))

    def render(self) -> str:
        generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return _TEMPLATE.render(title=html.escape(self.title), subtitle=html.escape(self.subtitle),
                                generated=generated, sections=self.sections)

    def write(self, path: str | Path) -> Path:
        write_text_atomic(path, self.render())
        return Path(path)
