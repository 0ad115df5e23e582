"""HTML pages of the workflow's tables and figures, for the Snakemake report.

The report's viewer shows images, HTML and PDF inline; a ``text/markdown`` or ``text/csv`` result can only be
downloaded. So every table the workflow writes (Markdown, LaTeX, CSV) also gets a self-contained HTML page
beside it: the table with its title above, the report caption under it, and long provenance cells (run
paths, code versions, failure reasons) folded in ``<details>``. A figure gets a page with the image, its
caption under it and the plotted numbers folded below. The pages need no network and no JavaScript.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from bayes_transfer.io import atomic_write_text

#: columns that hold provenance rather than results: always folded
PROVENANCE_COLUMNS = ("path", "paths", "runs", "code_version", "reason", "config", "hyper")
#: a cell longer than this many characters is folded too
FOLD_OVER = 60

#: the table header's background, also what tests look for in a screenshot of the rendered report
HEADER_BACKGROUND = "#dde6f0"

STYLE = f"""
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.2em; color: #222; }}
h1 {{ font-size: 1.05em; font-weight: 600; margin: 0 0 0.6em 0; max-width: 60em; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
table.results {{ border-collapse: collapse; font-size: 0.85em; }}
table.results th, table.results td {{ border: 1px solid #c8d0da; padding: 0.25em 0.6em; text-align: left;
  vertical-align: top; }}
table.results thead th {{ background: {HEADER_BACKGROUND}; position: sticky; top: 0; }}
table.results tbody tr:nth-child(even) {{ background: #f6f8fa; }}
table.results td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
table.results th.index {{ background: #eef2f6; font-weight: 600; white-space: nowrap; }}
details summary {{ cursor: pointer; color: #445; white-space: nowrap; }}
table.results tr.failed td {{ background: #f8e0e0; }}
.caption {{ max-width: 60em; font-size: 0.85em; color: #333; margin-top: 0.8em; line-height: 1.4; }}
.caption p {{ margin: 0.3em 0; }}
.meta {{ font-size: 0.75em; color: #666; margin-top: 0.6em; }}
figure {{ margin: 0; }}
figure img {{ max-width: 100%; height: auto; }}
"""


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_))


def _cell(text: str, fold: bool) -> str:
    if not fold or not text:
        return html.escape(text)
    short = text.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text[:24] + "…"
    return f"<details><summary>{html.escape(short)}</summary>{html.escape(text)}</details>"


def table_html(table: pd.DataFrame, *, index: bool = True, fold: Iterable[str] = PROVENANCE_COLUMNS,
               fold_over: int = FOLD_OVER, table_id: str = "") -> str:
    """``table`` as an HTML ``<table class="results">``: values escaped, floats to 6 significant digits,
    NaN blank; the ``fold`` columns moved to the right and their cells, like any cell longer than
    ``fold_over`` characters, folded in ``<details>`` (the summary shows a path's last component or the
    text's start). A row whose ``success`` column is False (a failed run) is shaded."""
    fold = set(fold)
    cols = [c for c in table.columns if c not in fold] + [c for c in table.columns if c in fold]
    table = table[cols]
    head = ([f'<th class="index">{html.escape(str(table.index.name or ""))}</th>'] if index else []) + \
        [f"<th>{html.escape(str(c))}</th>" for c in cols]
    body = []
    for idx, row in zip(table.index, table.itertuples(index=False, name=None)):
        cells = [f'<th class="index">{html.escape(_fmt(idx))}</th>'] if index else []
        for col, value in zip(cols, row):
            text = _fmt(value)
            klass = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{klass}>{_cell(text, col in fold or len(text) > fold_over)}</td>")
        failed = "success" in cols and str(row[cols.index("success")]) == "False"
        body.append(("<tr class=\"failed\">" if failed else "<tr>") + "".join(cells) + "</tr>")
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table{ident} class="results">\n<thead><tr>{"".join(head)}</tr></thead>\n'
            "<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def page(title: str, body: str) -> str:
    """A complete HTML document with the shared style."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def table_page(table: pd.DataFrame, *, title: str, caption: str = "", index: bool = True,
               fold: Iterable[str] = PROVENANCE_COLUMNS, table_id: str = "results-table", source: str = "") -> str:
    """The page of one table: ``title`` above it, ``caption`` (HTML, e.g. from ``render_caption``) under it,
    and a note naming the ``source`` file(s) the table is also written to."""
    parts = [f"<h1>{html.escape(title)}</h1>", table_html(table, index=index, fold=fold, table_id=table_id)]
    if caption:
        parts.append(f'<div class="caption">{caption}</div>')
    if source:
        parts.append(f'<div class="meta">Also written to {html.escape(source)}.</div>')
    return page(title, "\n".join(parts))


def figure_page(png: str | Path, *, title: str, caption: str = "", data: pd.DataFrame | None = None,
                source: str = "") -> str:
    """The page of one figure: the PNG embedded (so the page stands alone), ``caption`` under it and, folded
    below, the plotted numbers ``data`` (the CSV beside the figure, named by ``source``)."""
    encoded = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    parts = [f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(title)}">']
    if caption:
        parts.append(f'<figcaption class="caption">{caption}</figcaption>')
    parts.append("</figure>")
    if data is not None:
        what = f"The plotted numbers ({html.escape(source)})" if source else "The plotted numbers"
        parts.append(f"<details><summary>{what}</summary>\n{table_html(data, index=False)}\n</details>")
    return page(title, "\n".join(parts))


def render_caption(template: str, snakemake=None, **context) -> str:
    """A report caption (reStructuredText with Jinja2 expressions, workflow/report/*.rst) as HTML, rendered
    the way Snakemake renders it in the report's side panel: Jinja2 with ``snakemake`` (the script's
    ``snakemake`` object: wildcards, params, config) and ``context``, then docutils to HTML."""
    try:
        import jinja2
        from docutils.core import publish_parts
        from docutils.writers import html5_polyglot
    except ImportError as err:  # both come with snakemake, which runs every script that calls this
        raise ImportError(f"render_caption needs jinja2 and docutils (installed with snakemake): {err}") from err
    text = jinja2.Template(template).render(snakemake=snakemake, **context)
    return publish_parts(text, writer=html5_polyglot.Writer(),
                         settings_overrides={"halt_level": 3})["body"]  # an rst error raises


def write(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
