"""The parameter-budget explorer (Algorithm 3 interactively): widths of three scaling methods at a budget.

At any budget it generates, through the method registry (:mod:`nslab.scaling.methods`), the per-layer widths of

- ``neuralscale``: the fit's widths solved to the budget;
- ``uniform``: one global factor on the default widths;
- ``morphnet``: one global factor on the network pruned to 50% of its channels, read off the search's
  first iteration (the network it kept at the half point, or its fit where only fits were published).

:func:`on_budget` is the slider's callback: a plain function (tested and timed in ``bench/slider.py``);
:func:`explorer_widget` wires it to ipywidgets for notebook 03.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import io
from ..models import default_widths, get_arch, param_count
from ..models.traced_arch import width_multiples
from ..scaling import powerlaw
from ..scaling.latency_table import LatencyTable
from ..scaling.methods import METHODS, Budget, Context, morphnet_base
from ..scaling.metrics import LATENCY, MACS, METRICS, PARAMS, Metric, get_metric, human
from ..scaling.path_latency import latency_model
from ..scaling.solver import Scaled, counter
from ..search.descent import SearchRun, load_run
from . import plots

LOW_RATIO = 0.1  # the slider's lower end: the uniform network at 10% width (about 1% of the parameters)
_SHOWN = {"uniform": "uniform", "morphnet": "morphnet", "neuralscale": "neuralscale_last"}  # shown -> registry


@dataclass(frozen=True)
class Fit:
    """A fit to scale with: the methods' context whose *last* law is the one NeuralScale solves.

    Attributes:
        name: display name, e.g. ``"authors: vgg11-cifar10, iteration 15"``.
        context: the search's context; ``context.laws[-1]`` is this fit, ``context.laws[0]`` (or the
            network iteration 1 kept at the half point) gives MorphNet's pruned network.
    """

    name: str
    context: Context

    @property
    def arch(self) -> str:
        """The architecture the fit belongs to."""
        return self.context.arch

    @property
    def law(self) -> powerlaw.PowerLaw:
        """The power law NeuralScale solves."""
        return self.context.laws[-1]

    @property
    def morphnet_base(self) -> list[int]:
        """(L,) widths of the 50%-channels network MorphNet scales uniformly."""
        return morphnet_base(self.context)


def published(name: str, iteration: int = 15) -> Fit:
    """The authors' fit ``name`` (``"vgg11-cifar10"``/``"vgg11-cifar100"``) at ``iteration`` as a :class:`Fit`."""
    return Fit(f"authors: {name}, iteration {iteration}", Context.published(name, (1, iteration)))


def available_fits(search_dirs: Sequence[str | os.PathLike] = (), iterations: Sequence[int] = (1, 15)
                   ) -> dict[str, Fit]:
    """Fits to choose from: the authors' published ones, then every iteration of the searches under ``search_dirs``.

    A search is a run directory of :func:`nslab.search.descent.architecture_descent` (found by its
    ``settings.json``); each finished iteration k becomes ``"this project: <run>, iteration k"``.
    A fit no budget can be solved for (:func:`run_fits`) is skipped.
    """
    fits = {}
    for name in powerlaw.published_fits():
        for it in iterations:
            f = published(name, it)
            fits[f.name] = f
    for d in search_dirs:
        for settings in sorted(Path(d).rglob("settings.json")) if Path(d).is_dir() else ():
            if "search" not in io.read_json(settings):
                continue  # a training run's settings, not a search's
            fits.update(run_fits(load_run(settings.parent), settings.parent.name))
    return fits


def run_fits(run: SearchRun, label: str | None = None) -> dict[str, Fit]:
    """Every finished iteration k of one search as ``"this project: <label>, iteration k"`` (``label``: the run's
    arch and dataset), skipping fits no budget can be solved for (a negative beta, or none positive); budgets are those
    of the default network, as for the authors' fits, whatever width the search started at."""
    fits = {}
    for it in run.iterations:
        if min(it.law.beta) < 0 or max(it.law.beta) <= 0:
            continue
        ctx = dataclasses.replace(Context.from_run(run, scale=1.0), laws=(run.iterations[0].law, it.law))
        name = f"this project: {label or f'{run.arch} {run.dataset}'}, iteration {it.index}"
        fits[name] = Fit(name, ctx)
    return fits


__all__ = ["Fit", "available_fits", "budget_range", "configurations", "explorer_widget", "figure", "human",
           "on_budget", "published", "ratio_table", "readout", "run_fits"]


def budget_range(arch: str, dataset: str, metric: str | Metric = "params", latency: LatencyTable | None = None
                 ) -> tuple[float, float, float]:
    """``(low, default, high)`` of the slider in ``metric``: uniform 10% width (at least one channel a layer, or
    one multiple of what a grouped layer needs: a small network's 8-channel layer), default, 2x default."""
    count = counter(arch, dataset, False, metric, latency)
    default = count(default_widths(arch))
    low = [max(m, int(w * LOW_RATIO) // m * m) for w, m in zip(default_widths(arch), width_multiples(get_arch(arch)))]
    return count(low), default, 2 * default


def configurations(fit: Fit, dataset: str, budget: float, ratio: float | None = None,
                   metric: str | Metric = "params", latency: LatencyTable | None = None) -> dict[str, Scaled]:
    """The three methods' widths at ``budget`` for ``fit``'s architecture on ``dataset``.

    Args:
        fit, dataset: what to scale.
        budget: the target in ``metric``'s unit: parameters, MACs per image, or milliseconds.
        ratio: the paper's uniform ratio that defines ``budget`` (uniform is then ``int(w * r)`` exactly).
        metric: ``"params"``, ``"macs"``, ``"latency"`` (predicted by ``latency``'s per-layer table) or
            another metric of :mod:`nslab.scaling.metrics` (its name or itself).
        latency: the lookup table (needed for ``metric="latency"``; when given, every configuration also
            carries its predicted ``latency_ms``, whatever the metric).

    Returns:
        ``{method: Scaled}`` with exact ``params`` and ``macs`` and the error against ``budget`` in ``metric``.
    """
    ctx = dataclasses.replace(fit.context, dataset=dataset, latency=latency)
    m = get_metric(metric)
    b = Budget(int(round(budget)) if m.exact else budget, ratio, m)
    macs_of = counter(ctx.arch, dataset, ctx.convcut, MACS)
    out = {}
    for shown, name in _SHOWN.items():
        w = METHODS[name](ctx, b)
        p = param_count(ctx.arch, w, dataset, ctx.convcut)
        ms = None if latency is None else ctx.count(w, LATENCY)
        s = Scaled(w, p, b.target, 0.0, m.name, macs_of(w), ms, None if m.field else ctx.count(w, m))
        out[shown] = dataclasses.replace(s, rel_error=(s.achieved - b.target) / b.target)
    return out


def readout(arch: str, dataset: str, budget: float, metric: str | Metric = "params",
            latency: LatencyTable | None = None) -> str:
    """The slider's readout: ``"9.22M params, 1.00x default"`` (``"313M MACs, ..."``, ``"1.24 ms, ..."``)."""
    default = counter(arch, dataset, False, metric, latency)(default_widths(arch))
    return f"{get_metric(metric).readout(budget)}, {budget / default:.2f}x default"


def _notes(configs: Mapping[str, Scaled]) -> dict[str, str]:
    """Legend text per method: all the numbers of its network, the budget's error last."""
    out = {}
    for m, s in configs.items():
        ms = f" · {LATENCY.readout(s.latency_ms)}" if s.latency_ms is not None else ""
        other = f" · {get_metric(s.metric).readout(s.value)}" if s.value is not None else ""  # a metric of its own
        err = f"{100 * s.rel_error:+.2f}%".replace("-0.00%", "+0.00%")  # not "-0.00%" for a zero error
        out[m] = f"{PARAMS.readout(s.params)} · {MACS.readout(s.macs)}{ms}{other} ({err})"
    return out


def _title(fit: Fit, dataset: str, budget: float, metric: str | Metric = "params",
           latency: LatencyTable | None = None) -> str:
    # short first line (it must fit the notebook's width), the fit's name below it in small print
    return (f"{fit.arch} {dataset} at {readout(fit.arch, dataset, budget, metric, latency)}"
            f"<br><sup>fit: {fit.name}</sup>")


def figure(fit: Fit, dataset: str, budget: float, metric: str | Metric = "params",
           latency: LatencyTable | None = None) -> object:
    """A fresh figure of :func:`configurations` at ``budget`` (grouped bars, the networks' counts in the legend)."""
    configs = configurations(fit, dataset, budget, metric=metric, latency=latency)
    return plots.budget_widths_figure(
        {m: s.widths for m, s in configs.items()}, _title(fit, dataset, budget, metric, latency), _notes(configs)
    )


def on_budget(fig: object, fit: Fit, dataset: str, budget: float, metric: str | Metric = "params",
              latency: LatencyTable | None = None) -> dict[str, Scaled]:
    """The slider's callback: recompute the three configurations at ``budget`` and redraw ``fig`` in place.

    Args:
        fig: a figure from :func:`figure` (a ``go.Figure`` or ``go.FigureWidget``) for the same number of
            layers; its three bar traces get the new widths, legend notes and title.
        fit, dataset: what to scale.
        budget: the target in ``metric``'s unit.
        metric, latency: as :func:`configurations`.

    Returns:
        ``{method: Scaled}`` as :func:`configurations`.
    """
    configs = configurations(fit, dataset, budget, metric=metric, latency=latency)
    notes = _notes(configs)
    with fig.batch_update():
        for trace, (m, s) in zip(fig.data, configs.items()):
            trace.x = [f"L{j + 1}" for j in range(len(s.widths))]
            trace.y = s.widths
            trace.name = f"{m} — {notes[m]}"
        fig.layout.title.text = _title(fit, dataset, budget, metric, latency)
    return configs


def ratio_table(fit: Fit, dataset: str, ratios: Sequence[float]) -> tuple[list[dict], dict[str, dict[str, list[int]]]]:
    """Configurations at the paper's ratios (budget: the uniform network ``int(w * r)`` of the search's start).

    Returns:
        ``(rows, panels)``: table rows (ratio, method, target, params, rel. error %, widths) and
        ``{"r = 0.25 (0.58M)": {method: widths}}`` for :func:`nslab.views.plots.configurations_figure`.
    """
    rows, panels = [], {}
    for r in ratios:
        target = dataclasses.replace(fit.context, dataset=dataset).budget(r).target
        configs = configurations(fit, dataset, target, ratio=r)
        panels[f"r = {r:g} ({target / 1e6:.2f}M parameters)"] = {m: s.widths for m, s in configs.items()}
        for m, s in configs.items():
            rows.append(
                {
                    "ratio": r,
                    "method": m,
                    "target_params": s.target,
                    "params": s.params,
                    "rel_error_pct": round(100 * s.rel_error, 4),
                    "widths": list(s.widths),
                }
            )
    return rows, panels


def explorer_widget(fits: Mapping[str, Fit] | None = None, dataset: str = "cifar10", fit: str | None = None):
    """The interactive explorer: fit / architecture / dataset selectors, a log-scale budget slider, the figure.

    Args:
        fits: ``{name: Fit}`` to choose from (default :func:`available_fits`).
        dataset: the dataset it opens on (when the fit's architecture has it).
        fit: the name of the fit it opens on (default: the first of ``fits``).

    Raises:
        ValueError: ``fit`` is not one of ``fits``.

    Moving the slider calls :func:`on_budget` on a ``go.FigureWidget`` (needs ``anywidget``; without it
    the figure is redrawn into an ``Output`` instead, which is slower). The ``budget in`` switch counts the
    budget in any registered metric (:data:`nslab.scaling.metrics.METRICS`: parameters, MACs per image,
    milliseconds, ...); latency is predicted by this machine's per-layer table
    (:func:`nslab.scaling.latency_table.default_table`: the first choice times the layers it needs, seconds,
    then they are cached on disk), or for a traced network by the latencies of a few networks of the fit's path
    (:func:`nslab.scaling.path_latency.measure_path`, seconds, once per network and fit), and from then on every
    method's predicted latency is shown too.
    """
    fits = dict(fits or available_fits())
    if fit is not None and fit not in fits:
        raise ValueError(f"fit {fit!r} is not available; choose one of {sorted(fits)}")
    return _Explorer(fits, dataset, fit).box


def _datasets(arch: str) -> list[str]:
    """The datasets ``arch`` has a variant for (CIFAR's 32 px, Tiny ImageNet's 64 px)."""
    variants = get_arch(arch).variants
    return [d for d in ("cifar10", "cifar100", "tinyimagenet")
            if ("tiny" if d == "tinyimagenet" else "cifar") in variants]


class _Explorer:
    """The widgets of :func:`explorer_widget` and their callbacks (``box``: the whole explorer)."""

    def __init__(self, fits: dict[str, Fit], dataset: str, fit: str | None):
        import ipywidgets as w
        import plotly.graph_objects as go

        # latency models, made when latency is first chosen: this machine's layer table (key None), or a traced
        # network's latencies measured along one fit's path (key: arch, dataset, fit)
        self.fits, self.tables, self.busy = fits, {}, False
        archs = sorted({f.arch for f in fits.values()})
        first = fits[fit].arch if fit is not None else next(iter(fits.values())).arch
        self.arch_dd = w.Dropdown(options=archs, value=first, description="arch")
        self.ds_dd = w.Dropdown(description="dataset")
        self.fit_dd = w.Dropdown(description="fit", layout=w.Layout(width="480px"))
        self.metric_dd = w.ToggleButtons(options=[(m.label, m.name) for m in METRICS.values()],
                                         tooltips=[m.description for m in METRICS.values()],
                                         description="budget in",
                                         style={"button_width": "110px", "description_width": "initial"})
        # the slider's own readout can only print "9.22e+6": a label beside it reads "9.22M params, 1.00x default"
        self.slider = w.FloatLogSlider(description="budget", base=10, continuous_update=True, readout=False,
                                       layout=w.Layout(width="520px"))
        self.shown, self.status = w.HTML(), w.HTML()
        try:
            self.fig, self.out = go.FigureWidget(), None
        except ImportError:
            self.fig, self.out = None, w.Output()
        self.arch_dd.observe(self.on_arch, "value")
        self.ds_dd.observe(self.on_dataset, "value")
        self.metric_dd.observe(self.on_dataset, "value")  # a new unit: a new range, back to the default network
        self.fit_dd.observe(self.redraw, "value")
        self.slider.observe(lambda ch: None if self.busy else self.redraw(), "value")
        self.ds_dd.value = None
        self.on_arch()
        if fit is not None:
            self.fit_dd.value = fit
        if dataset in self.ds_dd.options:
            self.ds_dd.value = dataset
        self.box = w.VBox([w.HBox([self.arch_dd, self.ds_dd]), self.fit_dd, self.metric_dd, w.HBox([self.slider,
                           self.shown]), self.status, self.fig if self.fig is not None else self.out])

    def _table_key(self) -> tuple | None:
        a = self.arch_dd.value
        return None if get_arch(a).ops is not None else (a, self.ds_dd.value, self.fit_dd.value)

    def metric(self) -> tuple[Metric, LatencyTable | None]:
        m = get_metric(self.metric_dd.value)
        if m is LATENCY and self._table_key() not in self.tables and self.fit_dd.value is not None:
            self.status.value = "timing this machine for the latency model (once per network and fit)..."
            self.tables[self._table_key()] = latency_model(self.fits[self.fit_dd.value].law, self.arch_dd.value,
                                                           self.ds_dd.value)
        return m, self.tables.get(self._table_key())

    def redraw(self, *_) -> None:
        if self.fit_dd.value is None or self.ds_dd.value is None:
            return  # mid-update of the selectors
        f, ds, b, fig = self.fits[self.fit_dd.value], self.ds_dd.value, self.slider.value, self.fig
        self.shown.value = f"<b>{readout(f.arch, ds, b, *self.metric())}</b>"
        try:
            if fig is not None:
                if len(fig.data) != 3 or len(fig.data[0].y or ()) != len(f.law.alpha):
                    new = figure(f, ds, b, *self.metric())
                    with fig.batch_update():
                        fig.data = []
                        fig.add_traces(new.data)
                        fig.layout = new.layout
                configs = on_budget(fig, f, ds, b, *self.metric())
            else:
                self.out.clear_output(wait=True)
                with self.out:
                    figure(f, ds, b, *self.metric()).show()
                configs = configurations(f, ds, b, None, *self.metric())
            self.status.value = " · ".join(f"<b>{m}</b> {note}" for m, note in _notes(configs).items())
        except ValueError as e:  # e.g. a budget below the smallest network of this law
            self.status.value = f"<span style='color:#c00'>{e}</span>"

    def on_arch(self, *_) -> None:
        self.fit_dd.options = [n for n, f in self.fits.items() if f.arch == self.arch_dd.value]
        self.fit_dd.value = self.fit_dd.options[0] if self.fit_dd.options else None
        self.ds_dd.options = _datasets(self.arch_dd.value)
        self.on_dataset()

    def on_dataset(self, *_) -> None:
        if self.ds_dd.value is None:
            return
        lo, default, hi = budget_range(self.arch_dd.value, self.ds_dd.value, *self.metric())
        self.busy = True
        self.slider.max = 100.0  # widen first: traitlets rejects min > max at every intermediate step
        self.slider.min, self.slider.max = math.log10(lo), math.log10(hi)
        self.slider.value = default
        self.busy = False
        self.redraw()
