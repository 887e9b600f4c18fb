"""Plotly figure builders for the notebooks: each returns a ``go.Figure`` and never writes a file.

Every figure has a title, axis titles with units and a legend; parameter axes are in parameters
(log scale where the paper's are), widths in filters (channels), latency in milliseconds, accuracy in %.
Saving is :mod:`nslab.views.figures`' job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from ..scaling.powerlaw import PowerLaw

PALETTE = qualitative.Plotly + qualitative.D3  # 20 distinct colours: one per layer up to 20 layers
METHOD_STYLE = {  # colour and marker per method, the same in every figure
    "uniform": ("#636EFA", "circle"),
    "uniform_convcut": ("#19D3F3", "circle-open"),
    "li": ("#FFA15A", "diamond"),
    "morphnet": ("#00CC96", "square"),
    "neuralscale_it1": ("#AB63FA", "triangle-up"),
    "neuralscale_last": ("#EF553B", "star"),
    "neuralscale_it15": ("#EF553B", "star"),
    "neuralscale": ("#EF553B", "star"),
}
# hollow markers of reference configurations (e.g. the authors'), one style per reference series
_REFERENCE_STYLE = (("#222222", "circle-open"), ("#D62728", "diamond-open"), ("#1F77B4", "square-open"),
                    ("#FF7F0E", "triangle-up-open"))
_LAYOUT = dict(template="plotly_white", font=dict(size=13), margin=dict(l=70, r=30, t=80, b=60))


def _style(method: str, i: int) -> tuple[str, str]:
    return METHOD_STYLE.get(method, (PALETTE[i % len(PALETTE)], "circle"))


TITLE_CHARS = 80  # a title line fits a notebook's output width (and the 1000 px PNG) at 16 px


def wrap_title(text: str, chars: int = TITLE_CHARS) -> str:
    """``text`` broken into lines of at most ``chars`` characters (plotly's ``<br>``): a long title is
    clipped, not wrapped, by plotly. Lines already broken with ``<br>`` are wrapped each."""
    import textwrap

    return "<br>".join(line for part in text.split("<br>") for line in (textwrap.wrap(part, chars) or [""]))


def _head(title: str, extra_lines: int = 0, **margin) -> dict:
    """The shared layout with ``title`` wrapped and the top margin grown to hold its lines (and
    ``extra_lines`` more, e.g. subplot titles)."""
    text = wrap_title(title)
    m = {**_LAYOUT["margin"], **margin}
    m["t"] = max(m["t"], 56 + 28 * (text.count("<br>") + 1 + extra_lines))
    return {**_LAYOUT, "title": dict(text=text, x=0.01, xanchor="left"), "margin": m}



# --- Algorithm 1 ---------------------------------------------------------------------------------------


def trajectory_figure(
    widths: np.ndarray,
    params: Sequence[float],
    title: str = "Iterative pruning trajectory",
) -> go.Figure:
    """Remaining filters per layer against total parameters along a pruning run (log-log).

    Args:
        widths: (rows, L) filters per layer, one row per recorded prune step.
        params: (rows,) total parameters of each row.
        title: figure title.

    Returns:
        One line per layer (the live view of a running search is :class:`nslab.views.live.DescentView`).
    """
    w = np.asarray(widths).reshape(len(params), -1)
    fig = go.Figure()
    for layer in range(w.shape[1]):
        fig.add_trace(
            go.Scatter(
                x=list(params),
                y=w[:, layer].tolist(),
                mode="lines",
                name=f"layer {layer + 1}",
                line=dict(color=PALETTE[layer % len(PALETTE)], width=2),
            )
        )
    fig.update_layout(legend_title_text="layer", **_head(title))
    fig.update_xaxes(type="log", title_text="total parameters (count, log scale)")
    fig.update_yaxes(type="log", title_text="filters remaining (channels, log scale)")
    return fig


# --- Algorithm 2: Figure 2 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLawPanel:
    """One panel of Figure 2.

    Attributes:
        title: panel title (e.g. "this project: VGG11 CIFAR-10, iteration 1").
        widths: (rows, L) trajectory widths, filters.
        params: (rows,) total parameters of each row.
        law: the power law fitted to those rows.
    """

    title: str
    widths: np.ndarray
    params: np.ndarray
    law: PowerLaw


def power_law_figure(
    panels: Sequence[PowerLawPanel],
    title: str = "Figure 2: filters per layer vs total parameters",
) -> go.Figure:
    """Figure 2: trajectories (markers) and fitted power laws (lines) per layer, log-log, one panel per run.

    Each panel has its own legend below it listing the layers with the R^2 of their fit (log-log space).
    """
    if not panels:
        raise ValueError("power_law_figure needs at least one panel")
    n = len(panels)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[p.title for p in panels], horizontal_spacing=0.08)
    for c, panel in enumerate(panels, start=1):
        w = np.asarray(panel.widths, dtype=float)
        tau = np.asarray(panel.params, dtype=float)
        grid = np.geomspace(tau.min(), tau.max(), 60)
        fitted = panel.law.widths(grid)  # (L, 60)
        legend = "legend" if c == 1 else f"legend{c}"
        for layer in range(w.shape[1]):
            color = PALETTE[layer % len(PALETTE)]
            r2 = panel.law.r2[layer] if len(panel.law.r2) > layer else float("nan")
            step = max(1, len(tau) // 60)  # thin markers: a trajectory has hundreds of rows
            fig.add_trace(
                go.Scatter(
                    x=tau[::step],
                    y=w[::step, layer],
                    mode="markers",
                    legendgroup=f"{c}-{layer}",
                    marker=dict(color=color, size=4, opacity=0.5),
                    showlegend=False,
                    name=f"layer {layer + 1} (pruning)",
                    legend=legend,
                ),
                row=1,
                col=c,
            )
            fig.add_trace(
                go.Scatter(
                    x=grid,
                    y=fitted[layer],
                    mode="lines",
                    legendgroup=f"{c}-{layer}",
                    line=dict(color=color, width=2),
                    legend=legend,
                    name=f"L{layer + 1}: α={panel.law.alpha[layer]:.3g}, β={panel.law.beta[layer]:.3f}, R²={r2:.3f}",
                ),
                row=1,
                col=c,
            )
        fig.update_xaxes(type="log", title_text="total parameters τ (count, log)", row=1, col=c)
        fig.update_yaxes(type="log", title_text="filters per layer (channels, log)", row=1, col=c)
    legends = {}
    for c in range(1, n + 1):
        dom = fig.layout[f"xaxis{'' if c == 1 else c}"].domain
        legends["legend" if c == 1 else f"legend{c}"] = dict(
            x=dom[0],
            xanchor="left",
            y=-0.18,
            yanchor="top",
            font=dict(size=10),
            title_text="fit per layer (markers: pruning rows)",
        )
    fig.update_layout(**_head(title, t=90, b=260), **legends)
    return fig


# --- Algorithm 3 / 4: configurations ---------------------------------------------------------------------


def configurations_figure(
    panels: Mapping[str, Mapping[str, Sequence[int]]],
    title: str,
    series_title: str = "",
    gradient: bool = False,
    notes: Mapping[str, str] | None = None,
    reference: Mapping[str, Sequence[int] | Mapping[str, Sequence[int]]] | None = None,
    reference_name: str = "authors",
) -> go.Figure:
    """Filters per layer of several configurations, one panel per budget (e.g. ratio), lines per series.

    Used for Figure 3 (series = descent iterations), Figures 6/8 (series = pre-training epochs) and the
    budget explorer's configurations at the paper's ratios (series = scaling methods).

    Args:
        panels: ``{panel title: {series name: (L,) widths}}``.
        title: figure title.
        series_title: legend title.
        gradient: colour series along a sequential scale (iterations) instead of distinct colours.
        notes: optional series name -> text appended to its legend entry (e.g. achieved parameters).
        reference: optional ``{panel title: (L,) widths}`` drawn as hollow markers (no line) beside the
            panel's series, e.g. the authors' published configuration at the panel's budget; a value may
            also be ``{series name: (L,) widths}`` for several references (the authors' iterations 1 and
            15). Panels it does not name get none.
        reference_name: the legend name of a reference given as plain widths.

    Raises:
        ValueError: no panel, a reference for a panel that does not exist, or reference widths whose
            layer count differs from the panel's series.
    """
    if not panels:
        raise ValueError("configurations_figure needs at least one panel")
    reference = {t: v if isinstance(v, Mapping) else {reference_name: v} for t, v in (reference or {}).items()}
    unknown = [t for t in reference if t not in panels]
    if unknown:
        raise ValueError(f"reference panels {unknown} are not among the figure's panels {list(panels)}")
    n = len(panels)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=list(panels), vertical_spacing=0.16, horizontal_spacing=0.08
    )
    names = list(dict.fromkeys(s for series in panels.values() for s in series))
    ref_names = list(dict.fromkeys(s for series in reference.values() for s in series))
    shown: set[str] = set()  # reference series already in the legend
    colors = (
        sample_colorscale("Viridis", [i / max(1, len(names) - 1) for i in range(len(names))])
        if gradient
        else [_style(s, i)[0] for i, s in enumerate(names)]
    )
    for k, (panel, series) in enumerate(panels.items()):
        r, c = k // cols + 1, k % cols + 1
        for s, widths in series.items():
            i = names.index(s)
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(widths) + 1)),
                    y=list(widths),
                    mode="lines+markers",
                    name=s + (f" {notes[s]}" if notes and s in notes else ""),
                    legendgroup=s,
                    showlegend=k == 0,
                    line=dict(color=colors[i], width=2),
                    marker=dict(size=6),
                ),
                row=r,
                col=c,
            )
        _reference_traces(fig, panel, series, reference.get(panel, {}), ref_names, shown, r, c)
        layers = max((len(w) for w in series.values()), default=0)
        fig.update_xaxes(title_text="layer (forward order)", dtick=1 if layers <= 20 else 2, row=r, col=c)
        fig.update_yaxes(title_text="filters (channels)", rangemode="tozero", row=r, col=c)
    if reference:
        series_title = f"{series_title} (hollow markers: reference)" if series_title else "hollow markers: reference"
    # one line more for the subplot titles: a long (wrapped) title would otherwise sit on the first one
    fig.update_layout(legend_title_text=series_title, height=max(450, 330 * rows), **_head(title, 1))
    return fig


def _reference_traces(fig: go.Figure, panel: str, series: Mapping[str, Sequence[int]],
                      refs: Mapping[str, Sequence[int]], ref_names: list[str], shown: set[str], r: int, c: int) -> None:
    """Hollow markers of a panel's references (see :func:`configurations_figure`); ``shown`` names the ones
    already in the legend and is updated."""
    lengths = {len(w) for w in series.values()}
    for s, widths in refs.items():
        if lengths and lengths != {len(widths)}:
            raise ValueError(f"reference {s!r} of panel {panel!r} has {len(widths)} layers, its series "
                             f"{sorted(lengths)}")
        color, symbol = _REFERENCE_STYLE[ref_names.index(s) % len(_REFERENCE_STYLE)]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(widths) + 1)),
                y=list(widths),
                mode="markers",
                name=s,
                legendgroup=f"reference {s}",
                showlegend=s not in shown,
                marker=dict(symbol=symbol, size=11, color=color, line=dict(width=2)),
            ),
            row=r,
            col=c,
        )
        shown.add(s)


def budget_widths_figure(
    configs: Mapping[str, Sequence[int]],
    title: str,
    notes: Mapping[str, str] | None = None,
) -> go.Figure:
    """The budget explorer's view: grouped bars of filters per layer, one bar colour per scaling method.

    Args:
        configs: ``{method: (L,) widths}`` at one budget (methods as in :data:`METHOD_STYLE`).
        title: figure title (the explorer puts the budget in it).
        notes: ``{method: text}`` appended to the legend entry (achieved parameters and error).
    """
    fig = go.Figure()
    for i, (m, widths) in enumerate(configs.items()):
        fig.add_trace(
            go.Bar(
                x=[f"L{j + 1}" for j in range(len(widths))],
                y=list(widths),
                name=m + (f" — {notes[m]}" if notes and m in notes else ""),
                marker_color=_style(m, i)[0],
            )
        )
    # the legend below the axis title, anchored by its top: its entries carry the achieved counts and may
    # wrap to two lines without covering the axis
    fig.update_layout(barmode="group", legend=dict(orientation="h", yanchor="top", y=-0.18), height=500,
                      **_head(title, b=120))
    fig.update_xaxes(title_text="layer (forward order)")
    fig.update_yaxes(title_text="filters (channels)")
    return fig


def convergence_figure(
    changes: Mapping[str, Sequence[float]],
    title: str = "Architecture descent convergence",
) -> go.Figure:
    """Change of the generated configuration between consecutive descent iterations.

    Args:
        changes: ``{series name: (iterations-1,) relative L1 change in %}``; point k compares iteration k+1
            with iteration k (e.g. one series per ratio).
    """
    fig = go.Figure()
    for i, (name, ys) in enumerate(changes.items()):
        fig.add_trace(
            go.Scatter(
                x=list(range(2, len(ys) + 2)),
                y=list(ys),
                mode="lines+markers",
                name=name,
                line=dict(color=PALETTE[i % len(PALETTE)]),
            )
        )
    fig.update_layout(legend_title_text="budget", **_head(title))
    fig.update_xaxes(title_text="architecture-descent iteration", dtick=1)
    fig.update_yaxes(title_text="configuration change vs previous iteration (% of filters)", rangemode="tozero")
    return fig


# --- Benchmarks: Figures 4, 5, 7, 9, 10, 11 ------------------------------------------------------------------


def accuracy_figure(
    rows: Sequence[Mapping],
    x: str = "params",
    title: str = "",
    paper: Sequence[Mapping] = (),
    series: str = "method",
    labels: Mapping[str, str] | None = None,
) -> go.Figure:
    """Accuracy (mean ± std over seeds) against parameters or latency, one line per method.

    Args:
        rows: summary rows with ``series`` (method), ``params``, ``latency_ms`` or ``latency_x``,
            ``acc_mean``, ``acc_std`` (as :func:`nslab.views.tables.summarize` and
            :func:`nslab.views.tables.latency_ratios` return them).
        x: ``"params"`` (log axis, parameters), ``"latency_x"`` (latency relative to uniform at the same
            budget, on each side's own machine) or ``"latency"`` (this machine's milliseconds; no paper
            markers: the paper's are GTX 1080 Ti milliseconds).
        title: figure title.
        paper: the paper's rows for the same setting (``params_m``, ``latency_x``, ``acc_mean``,
            ``acc_std``), drawn as hollow markers of the same colour, for comparison.
        series: the key that names a line (``"method"``, or ``"label"``).
        labels: display name per series value.

    Raises:
        ValueError: an unknown ``x``, or paper rows with ``x="latency"``.
    """
    if x not in ("params", "latency", "latency_x"):
        raise ValueError(f"x must be 'params', 'latency' or 'latency_x', got {x!r}")
    if x == "latency" and paper:
        raise ValueError("the paper's latencies are GTX 1080 Ti milliseconds: compare them as x='latency_x' "
                         "(relative to uniform), not on this machine's millisecond axis")
    key = {"params": "params", "latency": "latency_ms", "latency_x": "latency_x"}[x]

    def paper_value(r: Mapping) -> float | None:
        return r["params_m"] * 1e6 if x == "params" else r.get(key)

    fig = go.Figure()
    names = list(dict.fromkeys(r[series] for r in rows))
    paper_names = list(dict.fromkeys(r[series] if series in r else r["method"] for r in paper))
    order = list(dict.fromkeys(names + paper_names))  # one colour per series, shared by run and paper
    for name in names:
        pts = sorted((r for r in rows if r[series] == name and r.get(key) is not None), key=lambda r: r["params"])
        color, symbol = _style(str(name), order.index(name))
        fig.add_trace(go.Scatter(
            x=[r[key] for r in pts], y=[r["acc_mean"] for r in pts], mode="lines+markers",
            name=(labels or {}).get(name, str(name)), legendgroup=str(name),
            error_y=dict(type="data", array=[r.get("acc_std") or 0.0 for r in pts], visible=True),
            line=dict(color=color), marker=dict(symbol=symbol, size=9), customdata=[[r.get("n", 1)] for r in pts],
            hovertemplate="%{x}<br>%{y:.2f} %% (n=%{customdata[0]})"))
    for i, name in enumerate(paper_names):
        pts = sorted((r for r in paper if (r[series] if series in r else r["method"]) == name
                      and paper_value(r) is not None), key=lambda r: r["params_m"])
        color, symbol = _style(str(name), len(names) + i)
        fig.add_trace(go.Scatter(
            x=[paper_value(r) for r in pts], y=[r["acc_mean"] for r in pts], mode="markers",
            name=f"paper: {(labels or {}).get(name, str(name))}", legendgroup=str(name),
            error_y=dict(type="data", array=[r["acc_std"] for r in pts], visible=True, thickness=1),
            marker=dict(symbol=symbol if symbol.endswith("-open") else symbol + "-open", size=11, color=color,
                        line=dict(width=2))))
    fig.update_layout(legend_title_text="method (filled: this run, hollow: paper)", **_head(title))
    fig.update_xaxes(**{"params": dict(type="log", title_text="parameters (count, log scale)"),
                        "latency": dict(title_text="latency on this machine (ms per batch)"),
                        "latency_x": dict(title_text="latency relative to uniform at the same budget (x)")}[x])
    fig.update_yaxes(title_text="top-1 test accuracy (%, mean ± std over seeds)")
    return fig


def equal_budget_figure(rows: Sequence[Mapping], title: str) -> go.Figure:
    """Notebook 08: accuracy against parameters (left) and against MACs per image (right), one marker per
    method and budget; a filled marker held uniform's MACs, a hollow one its parameters.

    Args:
        rows: :func:`nslab.views.tables.comparison_table` rows with ``budget`` (``"macs"`` / ``"params"``),
            ``label``, ``method``, ``params_m``, ``macs_m``, ``acc_mean``, ``acc_std``, ``n_seeds``.
        title: figure title.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("accuracy vs parameters", "accuracy vs MACs per image"))
    for i, r in enumerate(rows):
        color, symbol = _style(r["method"], i)
        symbol = symbol if r["budget"] == "macs" else symbol.replace("-open", "") + "-open"
        for col, x in ((1, r["params_m"] * 1e6), (2, r["macs_m"] * 1e6)):
            fig.add_trace(go.Scatter(
                x=[x], y=[r["acc_mean"]], mode="markers", name=r["label"], legendgroup=r["label"],
                showlegend=col == 1, error_y=dict(type="data", array=[r["acc_std"] or 0.0], visible=True),
                marker=dict(color=color, symbol=symbol, size=12, line=dict(width=2, color=color)),
                hovertemplate=f"{r['label']}<br>%{{x:.3s}}<br>%{{y:.2f}} % (n={r['n_seeds']})<extra></extra>"),
                row=1, col=col)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2), **_head(title, extra_lines=1, b=140))
    fig.update_xaxes(type="log", title_text="parameters (count, log scale)", row=1, col=1)
    fig.update_xaxes(type="log", title_text="multiply-accumulates per image (log scale)", row=1, col=2)
    fig.update_yaxes(title_text="top-1 test accuracy (%, mean ± std over seeds)", row=1, col=1)
    return fig
