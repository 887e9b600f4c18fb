"""Watch a search in JupyterLab: architecture descent drawn live while it runs, replayed when it is cached.

A :class:`DescentView` is one ``go.FigureWidget`` with two panels whose axes stay fixed for the whole
search, so iterations (and the rows of one iteration) compare by eye:

- left, Algorithm 1-2: the current iteration's trajectory (filters per layer against total parameters,
  markers) and the power law fitted to the rows so far (lines), log-log;
- right, Algorithm 3: the configuration that fit generates at the search budget (the next iteration's
  start), earlier iterations in grey.

A play control steps through *frames*: the rows of one iteration (notebook 01) or the iterations of a
search (notebook 04). While a search runs, :meth:`DescentView.on_row` redraws the current frame (at most
every ``min_interval`` s: a prune step can record rows faster than a browser redraws); when it is finished
or read from the cache, :meth:`DescentView.replay` plays it back frame by frame.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from ..models import param_count
from ..scaling.powerlaw import MIN_ROWS, fit_power_law
from ..scaling.solver import widths_for_budget
from . import plots

__all__ = ["DescentView"]


class DescentView:
    """The live / replay view of one search (see the module docstring).

    Args:
        arch, dataset, convcut: the searched network.
        start: (L,) widths iteration 1 prunes; its parameter count is the search budget.
        title: figure title (kept short: it must fit a notebook's width).
        min_interval: seconds between two live redraws.
    """

    def __init__(self, arch: str, dataset: str, start: Sequence[int], convcut: bool = False,
                 title: str = "Architecture descent", min_interval: float = 0.25):
        import ipywidgets as w
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        self.arch, self.dataset, self.convcut = arch, dataset, convcut
        self.start = [int(x) for x in start]
        self.budget = param_count(arch, self.start, dataset, convcut)
        self.min_interval = min_interval
        self.title = title
        self._last_draw = -math.inf
        # (iteration, widths (rows, L), params (rows,), generated or None, start): draw()'s arguments
        self._frames: list[tuple[int, np.ndarray, np.ndarray, list[int] | None, list[int]]] = []
        self._history: dict[int, list[int]] = {}  # iteration -> generated widths, for the grey lines
        self._live: tuple[int, list[int]] | None = None  # the running iteration's last generated widths
        n = len(self.start)

        fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1,
                            subplot_titles=("trajectory and fitted power law",
                                            f"generated widths at {self.budget / 1e6:.3g}M params"))
        for layer in range(n):
            color = plots.PALETTE[layer % len(plots.PALETTE)]
            fig.add_trace(go.Scatter(x=[], y=[], mode="markers", marker=dict(color=color, size=4),
                                     name=f"layer {layer + 1}", legendgroup=str(layer)), 1, 1)
        for layer in range(n):
            color = plots.PALETTE[layer % len(plots.PALETTE)]
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines", line=dict(color=color, width=1.5),
                                     showlegend=False, legendgroup=str(layer), hoverinfo="skip"), 1, 1)
        layers = list(range(1, n + 1))
        fig.add_trace(go.Scatter(x=layers, y=[], mode="lines", line=dict(color="#BBBBBB", width=1),
                                 name="earlier iterations", connectgaps=False), 1, 2)
        fig.add_trace(go.Scatter(x=layers, y=[], mode="lines+markers", line=dict(color="#EF553B", width=3),
                                 name="this iteration"), 1, 2)
        fig.add_trace(go.Scatter(x=layers, y=self.start, mode="lines", line=dict(color="#636EFA", dash="dot"),
                                 name="network pruned"), 1, 2)
        # Fixed axes: from the narrowest network a search reaches (5% of the channels) to the start's count;
        # widths from 1 to twice the widest start layer (the law may widen a layer).
        floor = [max(1, int(0.04 * x)) for x in self.start]
        lo, hi = param_count(arch, floor, dataset, convcut), self.budget
        top = 2 * max(self.start)
        fig.update_xaxes(type="log", range=[math.log10(lo) - 0.05, math.log10(hi) + 0.1],
                         title_text="total parameters (log)", row=1, col=1)
        fig.update_yaxes(type="log", range=[0, math.log10(top)], title_text="filters (log)", row=1, col=1)
        fig.update_xaxes(title_text="layer", dtick=1, range=[0.5, n + 0.5], row=1, col=2)
        fig.update_yaxes(title_text="filters", range=[0, top * 1.05], row=1, col=2)
        fig.update_layout(title=dict(text=title, x=0.01), height=460, template="plotly_white",
                          margin=dict(l=60, r=20, t=70, b=50), font=dict(size=12),
                          legend=dict(orientation="h", y=-0.18, font=dict(size=10)))
        self.fig = go.FigureWidget(fig)
        self.play = w.Play(min=0, max=0, interval=400, description="replay")
        self.frame = w.IntSlider(min=0, max=0, description="frame", layout=w.Layout(width="420px"))
        w.jslink((self.play, "value"), (self.frame, "value"))
        self.label = w.HTML()
        self.frame.observe(lambda ch: self._draw_frame(ch["new"]), "value")
        self.widget = w.VBox([w.HBox([self.play, self.frame, self.label]), self.fig])

    def _ipython_display_(self) -> None:  # a notebook cell ending in the view shows the widget
        from IPython.display import display

        display(self.widget)

    # --- drawing -------------------------------------------------------------------------------------

    def draw(self, iteration: int, widths: np.ndarray, params: np.ndarray, generated: Sequence[int] | None = None,
             start: Sequence[int] | None = None) -> list[int] | None:
        """Show ``iteration``'s rows so far, their fit and the widths it generates at the search budget.

        Args:
            iteration: 1-based descent iteration.
            widths: (rows, L) filters per layer of the recorded rows.
            params: (rows,) total parameters of each row.
            generated: the generated widths when known (a finished iteration); else they are computed
                from the fit of the rows so far (none below 6 rows).
            start: the widths this iteration pruned (default: iteration 1's, or the widths the previous
                iteration generated).

        Returns:
            The generated widths drawn (``None``: too few rows to fit yet).
        """
        w = np.asarray(widths, dtype=float).reshape(len(params), -1)
        n = w.shape[1]
        law = None
        if len(params) >= MIN_ROWS:
            try:
                law = fit_power_law(w, self.arch, self.dataset, self.convcut)
            except ValueError:  # a trajectory a law cannot fit yet (e.g. a constant layer): draw rows only
                law = None
        if generated is None and law is not None:
            try:
                generated = widths_for_budget(law, self.arch, self.dataset, self.budget, convcut=self.convcut).widths
            except ValueError:
                generated = None
        xs = np.geomspace(max(float(np.min(params)) * 0.8, 1.0), float(np.max(params)) * 1.1, 24) if law else []
        earlier_x: list = []
        earlier_y: list = []
        for k, g in sorted(self._history.items()):
            if k < iteration:
                earlier_x += list(range(1, n + 1)) + [None]
                earlier_y += list(g) + [None]
        with self.fig.batch_update():
            for layer in range(n):
                self.fig.data[layer].x, self.fig.data[layer].y = list(params), w[:, layer].tolist()
                fit = self.fig.data[n + layer]
                if law is not None:
                    fit.x, fit.y = list(xs), (law.alpha[layer] * np.power(xs, law.beta[layer])).tolist()
                else:
                    fit.x, fit.y = [], []
            self.fig.data[2 * n].x, self.fig.data[2 * n].y = earlier_x, earlier_y
            self.fig.data[2 * n + 1].y = list(generated) if generated is not None else []
            self.fig.data[2 * n + 2].y = list(start or self._history.get(iteration - 1, self.start))
            r2 = f", median R² {np.median(law.r2):.3f}" if law is not None else ""
            self.fig.layout.title.text = (f"{self.title}: iteration {iteration}, {len(params)} rows{r2}")
        return None if generated is None else list(generated)

    def on_row(self, iteration: int, widths: np.ndarray, params: np.ndarray) -> None:
        """Live callback for :func:`nslab.runs.studies.search` (``on_row=view.on_row``): redraw, throttled."""
        if self._live and iteration > self._live[0]:  # the previous iteration finished: keep it, in grey
            self._history[self._live[0]] = self._live[1]
        now = time.perf_counter()
        if now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self.label.value = "<b>running</b>"
        gen = self.draw(iteration, widths, params)
        if gen is not None:
            self._live = (iteration, gen)

    # --- replay ----------------------------------------------------------------------------------------

    def replay(self, run, by: str = "iterations", frames: int = 30, autoplay: bool = True) -> None:
        """Load a finished :class:`nslab.search.descent.SearchRun` and play it back.

        Args:
            run: the search.
            by: ``"iterations"``: one frame per iteration, complete; ``"rows"``: the rows of iteration 1
                arriving, ``frames`` frames.
            frames: frames of a ``"rows"`` replay.
            autoplay: start playing at once.

        Raises:
            ValueError: ``by`` is not one of the two.
        """
        if by not in ("iterations", "rows"):
            raise ValueError(f"by must be 'iterations' or 'rows', got {by!r}")
        its = run.iterations
        self._history = {it.index: list(it.generated.widths) for it in its}
        if by == "iterations":
            self._frames = [(it.index, it.widths, it.params, list(it.generated.widths), list(it.start)) for it in its]
        else:
            first = its[0]
            ends = sorted({int(x) for x in np.linspace(1, len(first.params), min(frames, len(first.params)))})
            self._frames = [(1, first.widths[:e], first.params[:e], None, list(first.start)) for e in ends[:-1]]
            self._frames.append((1, first.widths, first.params, list(first.generated.widths), list(first.start)))
        last = len(self._frames) - 1
        self.play.max = self.frame.max = last
        self.label.value = f"{len(self._frames)} frames ({by})"
        if autoplay and last > 0:
            self.play.value = 0
            self._draw_frame(0)
            self.play.playing = True
        else:
            self.frame.value = last
            self._draw_frame(last)

    def _draw_frame(self, i: int) -> None:
        if not self._frames:
            return
        self.draw(*self._frames[min(i, len(self._frames) - 1)])
