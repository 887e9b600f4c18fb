"""The one helper that saves what the notebooks produce: figures as HTML + PNG, tables as CSV + Markdown.

Names follow the paper element they reproduce (``fig02_power_law``, ``table1_benchmark``); outputs of a
notebook that have no counterpart in the paper carry the notebook's number (``nb03_budget_configs``).

PNG export goes through plotly + kaleido, and kaleido drives a Chrome/Chromium. It is found, in order:
a Chrome downloaded by ``kaleido_get_chrome`` (choreographer's local copy), the ``BROWSER_PATH``
environment variable, then ``chrome``/``google-chrome``/``chromium``/``chromium-browser`` on ``PATH``
and their usual install paths (``/usr/bin/chromium`` from Debian's ``chromium`` package). Without one,
:func:`save_figure` fails with :class:`FigureExportError` naming what is missing, after nothing has
been written; :func:`nslab.reproduce.reproduce` checks the same (:func:`png_problem`) before it computes
anything. ``NSLAB_PNG=0`` in the environment (``nslab reproduce --no-png`` sets it for the notebooks'
kernels) writes HTML figures only.
"""

from __future__ import annotations

import atexit
import csv
import io as _io
import math
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import io

NAME_RE = re.compile(r"^(fig(0[2-9]|1[01])|table[1-6]|nb0[1-9])_[a-z0-9]+(_[a-z0-9]+)*$")
PNG_WIDTH, PNG_HEIGHT, PNG_SCALE = 1000, 560, 2  # CSS pixels; scale 2 keeps text sharp in documents
_server_started = False
PNG_ENV = "NSLAB_PNG"  # "0": HTML figures only (nslab reproduce --no-png)


class FigureExportError(RuntimeError):
    """PNG export is impossible here (no Chrome/Chromium for kaleido, or kaleido missing)."""


def check_name(name: str) -> str:
    """Validate an output name: ``figNN_<slug>`` (02-11), ``tableN_<slug>`` (1-6) or ``nbNN_<slug>``."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"bad output name {name!r}: expected fig02..fig11, table1..table6 or nb01..nb09, then "
            "'_' and a lowercase slug, e.g. 'fig02_power_law' or 'table1_benchmark'"
        )
    return name


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido will use, or ``None`` (same search order as kaleido's choreographer)."""
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:  # kaleido < 1 bundled its own browser; nothing to find
        return os.environ.get("BROWSER_PATH") or shutil.which("chromium")
    return Chromium.find_browser(skip_local=False)


def png_enabled() -> bool:
    """Whether :func:`save_figure` writes PNGs: unless ``NSLAB_PNG=0`` (HTML-only figures)."""
    return os.environ.get(PNG_ENV, "1") != "0"


def png_problem() -> str | None:
    """Why PNG export cannot work on this machine (the install line included), or ``None`` when it can."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "PNG export needs the 'kaleido' package (pip install 'kaleido>=1')"
    if find_browser() is None:
        return ("PNG export needs Chrome or Chromium for kaleido and none was found. Install one "
                "(Debian/Ubuntu: 'apt-get install -y chromium'), or point BROWSER_PATH at its executable, "
                "or run 'kaleido_get_chrome'.")
    return None


def _png(fig: Any, width: int, height: int) -> bytes:
    global _server_started
    problem = png_problem()
    if problem:
        raise FigureExportError(problem)
    import kaleido

    if not _server_started and hasattr(kaleido, "start_sync_server"):
        # One persistent browser for the whole process: ~1 s per figure instead of ~4 s.
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _server_started = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "kopts ignored when using a server": we pass none that matter
        try:
            return fig.to_image(format="png", width=width, height=height, scale=PNG_SCALE)
        except Exception as e:  # kaleido's errors name no remedy; add one
            raise FigureExportError(
                f"kaleido could not render the PNG ({type(e).__name__}: {e}); browser: {find_browser()}"
            ) from e


def save_figure(
    fig: Any, name: str, out_dir: str | os.PathLike, width: int = PNG_WIDTH, height: int = PNG_HEIGHT
) -> dict[str, Path]:
    """Save a plotly figure as ``<name>.html`` (interactive) and ``<name>.png`` (static) in ``out_dir``.

    The HTML loads ``plotly.min.js`` from the same folder (written once), so the figures open offline
    and each stays small. The PNG is rendered first: if that fails nothing is written. With PNGs off
    (:func:`png_enabled`) only the HTML is written, and a PNG of the same name from an earlier run is
    removed: it would show another figure than the HTML beside it.

    Args:
        fig: a ``plotly.graph_objects.Figure`` (or ``FigureWidget``).
        name: see :func:`check_name`.
        out_dir: the figures folder.
        width, height: PNG size in CSS pixels (rendered at 2x).

    Returns:
        ``{"html": path, "png": path}`` (no ``"png"`` with PNGs off).
    """
    check_name(name)
    out = Path(out_dir)
    png = _png(fig, width, height) if png_enabled() else None
    js = out / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        io.atomic_write_text(js, get_plotlyjs())
    html = fig.to_html(include_plotlyjs="directory", full_html=True)
    saved = {"html": io.atomic_write_text(out / f"{name}.html", html)}
    if png is None:
        (out / f"{name}.png").unlink(missing_ok=True)
    else:
        saved["png"] = io.atomic_write_bytes(out / f"{name}.png", png)
    return saved


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        if abs(v) < 1e-3 or abs(v) >= 1e6:
            return f"{v:.4g}"
        # below 1, three significant digits: ratio 0.125 stays 0.125, not 0.12
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}".rstrip("0").rstrip(".")
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return str(v)


def table_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts) over ``columns`` (default: first row's keys)."""
    cols = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save_table(
    rows: Sequence[Mapping[str, Any]],
    name: str,
    out_dir: str | os.PathLike,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Save rows (dicts) as ``<name>.csv`` (every column, full precision) and ``<name>.md`` (readable).

    Args:
        rows: the table, one dict per row.
        name: see :func:`check_name`.
        out_dir: the figures folder.
        columns: the Markdown table's columns, in order (default: every column); the CSV always holds
            every key of every row, first-seen order. Missing cells are left empty.
        title: a heading for the Markdown file.

    Returns:
        ``{"csv": path, "md": path}``.
    """
    check_name(name)
    if not rows:
        raise ValueError(f"table {name} has no rows: nothing was computed for it")
    every = list(dict.fromkeys(k for r in rows for k in r))
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(every)
    for r in rows:
        w.writerow(
            [
                "" if r.get(c) is None else (" ".join(map(str, r[c])) if isinstance(r[c], (list, tuple)) else r[c])
                for c in every
            ]
        )
    md = (f"### {title}\n\n" if title else "") + table_markdown(rows, columns or every)
    out = Path(out_dir)
    return {
        "csv": io.atomic_write_text(out / f"{name}.csv", buf.getvalue()),
        "md": io.atomic_write_text(out / f"{name}.md", md),
    }
