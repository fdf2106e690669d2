"""The one HTML report writer every task's ``results/{dataset}/report.html`` uses (cells, signatures, labels,
spatial; :mod:`pertpipe.evaluation.run_report` picks the task's page): a page with one style, tables, figures
inlined as base64 PNG, and names from the data escaped; written atomically."""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Any

import pandas as pd

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:3px 8px;"
         "border-bottom:1px solid #ddd;text-align:right}h2{margin-top:1.6em}img{max-width:100%;height:auto}"
         "div.wide{overflow-x:auto;max-width:100%}summary{cursor:pointer;margin:0.6em 0}")


def escape(text: Any) -> str:
    return html.escape(str(text))


def task_title(section: str, dataset: str) -> str:
    """A report's title: the run's dataset and its task's report section (each task's evaluation module names its
    ``SECTION``)."""
    return f"pertpipe report: {dataset} ({section})"


def page(title: str, parts: list[str]) -> str:
    """A whole HTML document: ``title`` (escaped) as <title> and <h1>, then ``parts`` (HTML fragments)."""
    return "\n".join(["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{escape(title)}</title>",
                      f"<style>{STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>", *parts, "</body></html>"])


def table(df: pd.DataFrame) -> str:
    """A table (numbers to 4 decimals; cell text escaped by pandas)."""
    return df.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="t")


def figure(fig: Any, alt: str = "plot") -> str:
    """A matplotlib figure as an inlined PNG <img> (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def png_file(path: str | os.PathLike, alt: str) -> str:
    """A PNG file already written (e.g. a figure the rule also outputs) inlined as an <img>."""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<img alt="{escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}"/>'


def artifacts(report: str | os.PathLike, paths: list[str | os.PathLike], title: str = "Files of this run") -> str:
    """A list of links, relative to the report's folder, to the files in ``paths`` that exist (so every link
    resolves); names escaped."""
    from pathlib import Path

    base = Path(report).resolve().parent
    items = []
    for p in paths:
        p = Path(p).resolve()
        if p.is_file():
            rel = os.path.relpath(p, base)
            items.append(f'<li><a href="{escape(rel)}">{escape(rel)}</a></li>')
    return f"<h2>{escape(title)}</h2><ul>{''.join(items)}</ul>" if items else ""


def write(path: str | os.PathLike, text: str) -> None:
    """Write the page atomically (the folder is created)."""
    from pathlib import Path

    from pertpipe.io import write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(text, path)


def cell_text(value: Any, column: str = "", digits: int = 4) -> str:
    """A table cell as text: empty for None / NaN, a float to ``digits`` decimals, anything else as str."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(df: Any, fmt: Any = cell_text) -> str:
    """The one markdown table writer of the leaderboards (cells, signatures, labels): a header, its rule and one line
    per row, each cell ``fmt(value, column)``; no trailing newline."""
    cols = [str(c) for c in df.columns]
    rows = ["| " + " | ".join(fmt(v, c) for v, c in zip(r, cols)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *rows])

