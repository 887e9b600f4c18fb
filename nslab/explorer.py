"""The parameter-budget explorer (Algorithm 3 interactively): widths of three scaling methods at a budget.

At any budget it generates, through the method registry (:mod:`nslab.methods`), the per-layer widths of

- ``neuralscale``: the fit's widths solved to the budget;
- ``uniform``: one global factor on the default widths;
- ``morphnet``: one global factor on the network pruned to 50% of its channels, read off the search's
  first iteration (its trajectory, or its fit where only fits were published).

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

from . import io, plots, powerlaw
from .descent import load_run
from .methods import METHODS, Budget, Context, morphnet_base
from .models import get_arch, param_count, uniform_widths
from .solver import Scaled

LOW_RATIO = 0.1  # the slider's lower end: the uniform network at 10% width (about 1% of the parameters)
_SHOWN = {"uniform": "uniform", "morphnet": "morphnet", "neuralscale": "neuralscale_last"}  # shown -> registry


@dataclass(frozen=True)
class Fit:
    """A fit to scale with: the methods' context whose *last* law is the one NeuralScale solves.

    Attributes:
        name: display name, e.g. ``"authors: vgg11-cifar10, iteration 15"``.
        context: the search's context; ``context.laws[-1]`` is this fit, ``context.laws[0]`` (or the
            trajectory) gives MorphNet's pruned network.
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

    A search is a run directory of :func:`nslab.descent.architecture_descent` (found by its
    ``settings.json``); each finished iteration k becomes ``"this project: <run>, iteration k"``.
    A degenerate fit (some beta <= 0) cannot be solved for a budget and is skipped.
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
            run = load_run(settings.parent)
            for it in run.iterations:
                if min(it.law.beta) <= 0:
                    continue
                # budgets of the default network, as for the authors' fits, whatever width the search started at
                ctx = dataclasses.replace(Context.from_run(run, scale=1.0), laws=(run.iterations[0].law, it.law))
                name = f"this project: {settings.parent.name}, iteration {it.index}"
                fits[name] = Fit(name, ctx)
    return fits


def budget_range(arch: str, dataset: str) -> tuple[int, int, int]:
    """``(low, default, high)`` parameter counts of the slider: uniform 10% width, default, 2x default."""
    default = param_count(arch, None, dataset)
    return param_count(arch, uniform_widths(arch, LOW_RATIO), dataset), default, 2 * default


def configurations(fit: Fit, dataset: str, budget: float, ratio: float | None = None) -> dict[str, Scaled]:
    """The three methods' widths at ``budget`` (parameters) for ``fit``'s architecture on ``dataset``.

    ``ratio``: the paper's uniform ratio that defines ``budget`` (uniform is then ``int(w * r)`` exactly).
    """
    ctx = dataclasses.replace(fit.context, dataset=dataset)
    b = Budget(int(round(budget)), ratio)
    out = {}
    for shown, name in _SHOWN.items():
        w = METHODS[name](ctx, b)
        p = param_count(ctx.arch, w, dataset, ctx.convcut)
        out[shown] = Scaled(w, p, b.params, (p - b.params) / b.params)
    return out


def _notes(configs: Mapping[str, Scaled]) -> dict[str, str]:
    return {m: f"{s.params:,} params ({100 * s.rel_error:+.3f}%)" for m, s in configs.items()}


def _title(fit: Fit, dataset: str, budget: float) -> str:
    default = param_count(fit.arch, None, dataset)
    return (
        f"{fit.arch} on {dataset}: budget {budget / 1e6:.3f}M parameters "
        f"({budget / default:.2f}x default) — fit: {fit.name}"
    )


def figure(fit: Fit, dataset: str, budget: float) -> object:
    """A fresh figure of :func:`configurations` at ``budget`` (grouped bars, achieved params in the legend)."""
    configs = configurations(fit, dataset, budget)
    return plots.budget_widths_figure(
        {m: s.widths for m, s in configs.items()}, _title(fit, dataset, budget), _notes(configs)
    )


def on_budget(fig: object, fit: Fit, dataset: str, budget: float) -> dict[str, Scaled]:
    """The slider's callback: recompute the three configurations at ``budget`` and redraw ``fig`` in place.

    Args:
        fig: a figure from :func:`figure` (a ``go.Figure`` or ``go.FigureWidget``) for the same number of
            layers; its three bar traces get the new widths, legend notes and title.
        fit, dataset: what to scale.
        budget: target parameters.

    Returns:
        ``{method: Scaled}`` as :func:`configurations`.
    """
    configs = configurations(fit, dataset, budget)
    notes = _notes(configs)
    with fig.batch_update():
        for trace, (m, s) in zip(fig.data, configs.items()):
            trace.x = [f"L{j + 1}" for j in range(len(s.widths))]
            trace.y = s.widths
            trace.name = f"{m} — {notes[m]}"
        fig.layout.title.text = _title(fit, dataset, budget)
    return configs


def ratio_table(fit: Fit, dataset: str, ratios: Sequence[float]) -> tuple[list[dict], dict[str, dict[str, list[int]]]]:
    """Configurations at the paper's ratios (budget: the uniform network ``int(w * r)`` of the search's start).

    Returns:
        ``(rows, panels)``: table rows (ratio, method, target, params, rel. error %, widths) and
        ``{"r = 0.25 (0.58M)": {method: widths}}`` for :func:`nslab.plots.configurations_figure`.
    """
    rows, panels = [], {}
    for r in ratios:
        target = dataclasses.replace(fit.context, dataset=dataset).budget(r).params
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


def explorer_widget(fits: Mapping[str, Fit] | None = None, dataset: str = "cifar10"):
    """The interactive explorer: fit / architecture / dataset selectors, a log-scale budget slider, the figure.

    Moving the slider calls :func:`on_budget` on a ``go.FigureWidget`` (needs ``anywidget``; without it
    the figure is redrawn into an ``Output`` instead, which is slower).
    """
    import ipywidgets as w
    import plotly.graph_objects as go

    fits = dict(fits or available_fits())
    archs = sorted({f.arch for f in fits.values()})
    arch_dd = w.Dropdown(options=archs, value="vgg11" if "vgg11" in archs else archs[0], description="arch")
    ds_dd = w.Dropdown(description="dataset")
    fit_dd = w.Dropdown(description="fit", layout=w.Layout(width="480px"))
    slider = w.FloatLogSlider(
        description="budget", base=10, continuous_update=True, readout_format=".3g", layout=w.Layout(width="720px")
    )
    status = w.HTML()
    try:
        fig = go.FigureWidget()
        out = None
    except ImportError:
        fig, out = None, w.Output()
    state: dict = {}

    def fit_now() -> Fit:
        return fits[fit_dd.value]

    def redraw(*_):
        if fit_dd.value is None or ds_dd.value is None:
            return  # mid-update of the selectors
        f, ds = fit_now(), ds_dd.value
        try:
            if fig is not None:
                if len(fig.data) != 3 or len(fig.data[0].y or ()) != len(f.law.alpha):
                    new = figure(f, ds, slider.value)
                    with fig.batch_update():
                        fig.data = []
                        fig.add_traces(new.data)
                        fig.layout = new.layout
                configs = on_budget(fig, f, ds, slider.value)
            else:
                out.clear_output(wait=True)
                with out:
                    figure(f, ds, slider.value).show()
                configs = configurations(f, ds, slider.value)
            status.value = " · ".join(
                f"<b>{m}</b> {s.params:,} ({100 * s.rel_error:+.3f}%)" for m, s in configs.items()
            )
        except ValueError as e:  # e.g. a budget below the smallest network of this law
            status.value = f"<span style='color:#c00'>{e}</span>"

    def on_arch(*_):
        variants = get_arch(arch_dd.value).variants
        fit_dd.options = [n for n, f in fits.items() if f.arch == arch_dd.value]
        fit_dd.value = fit_dd.options[0] if fit_dd.options else None
        ds_dd.options = [
            d
            for d in ("cifar10", "cifar100", "tinyimagenet")
            if ("tiny" if d == "tinyimagenet" else "cifar") in variants
        ]
        on_dataset()

    def on_dataset(*_):
        if ds_dd.value is None:
            return
        lo, default, hi = budget_range(arch_dd.value, ds_dd.value)
        state["busy"] = True
        slider.max = 100.0  # widen first: traitlets rejects min > max at every intermediate step
        slider.min, slider.max = math.log10(lo), math.log10(hi)
        slider.value = default
        state["busy"] = False
        redraw()

    arch_dd.observe(on_arch, "value")
    ds_dd.observe(on_dataset, "value")
    fit_dd.observe(redraw, "value")
    slider.observe(lambda ch: None if state.get("busy") else redraw(), "value")
    ds_dd.value = None
    on_arch()
    if dataset in ds_dd.options:
        ds_dd.value = dataset
    return w.VBox([w.HBox([arch_dd, ds_dd]), fit_dd, slider, status, fig if fig is not None else out])


def iteration_widget(panels: Mapping[str, Mapping[str, Sequence[int]]]):
    """Browse architecture-descent configurations: an iteration slider over Figure 3's data.

    Args:
        panels: ``{ratio title: {"iteration k": widths}}`` as :func:`nslab.tables.descent_panels` gives.
    """
    import ipywidgets as w
    import plotly.graph_objects as go

    ratios = list(panels)
    iters = list(next(iter(panels.values())))
    fig = plots.configurations_figure({"all budgets": {r: panels[r][iters[0]] for r in ratios}},
                                      title=f"Configuration at {iters[0]}", series_title="budget")
    try:
        fig = go.FigureWidget(fig)
    except ImportError:  # no anywidget: redraw into an Output
        pass
    out = w.Output()
    slider = w.SelectionSlider(options=iters, description="iteration", layout=w.Layout(width="600px"))

    def show(*_):
        if isinstance(fig, go.FigureWidget):
            with fig.batch_update():
                for trace, r in zip(fig.data, ratios):
                    trace.y = panels[r][slider.value]
                fig.layout.title.text = f"Configuration at {slider.value}"
        else:
            out.clear_output(wait=True)
            with out:
                plots.configurations_figure({"all budgets": {r: panels[r][slider.value] for r in ratios}},
                                            title=f"Configuration at {slider.value}", series_title="budget").show()

    slider.observe(show, "value")
    show()
    return w.VBox([slider, fig if isinstance(fig, go.FigureWidget) else out])
