"""Budget metrics as registered objects: what a budget counts, how it reads, and how to count a width vector.

A :class:`Metric` has a name (what ``metric=`` takes everywhere), a unit, a human readout and a count
(``counter(arch, dataset, convcut, **context) -> (widths -> value)``). Three are registered:

- ``"params"``: exact parameters (:func:`nslab.models.param_counter`, the paper's);
- ``"macs"``: exact multiply-accumulates of one image (:func:`nslab.models.macs_counter`);
- ``"latency"``: milliseconds per forward pass predicted by this machine's per-layer lookup table
  (:mod:`nslab.scaling.latency_table`; the table is made, and its layers timed, only when a latency
  count is first asked for).

Add a metric with :func:`register_metric` (or pass a :class:`Metric` itself as ``metric=``): the budget
solver (:func:`nslab.scaling.solver.widths_for_budget`), the methods, the explorer and the tables read
everything they need from the object. An *exact* metric gets the solver's full search and guarantee
(path scan, nudges) provided its count never decreases when a width grows, except where a switchable
projection shortcut vanishes (ResNet18's and MobileNetV2's stride-1 blocks) and where the count with
``convcut=True`` (every projection present) bounds it from above and does grow with every width.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from ..data import DatasetSpec
from ..models import default_widths, macs_counter, param_counter, uniform_widths

Count = Callable[[list[int]], float]
"""A ``widths -> value`` counter: (L,) integer widths in, the count in the metric's unit out."""


def human(n: float) -> str:
    """A count in human units, three significant digits: ``9231114 -> "9.23M"``, ``1000005 -> "1.00M"``,
    ``579786 -> "580k"``, ``912 -> "912"``."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div * 0.9995:  # 999,800 rounds to "1.00M", not "1.00e+03k"
            return f"{n / div:#.3g}".rstrip(".") + unit
    return f"{n:#.3g}".rstrip(".")


@dataclass(frozen=True)
class Metric:
    """A budget metric.

    Attributes:
        name: registry name (``"params"``): what ``metric=`` takes, what ``Scaled.metric`` and error
            messages name.
        unit: its unit in messages: ``"parameters"``, ``"MACs"``, ``"ms"``.
        count: ``count(arch, dataset, convcut, **context) -> (widths -> value)``; ``context`` holds what a
            measured metric needs (``latency``: the lookup table) and is ignored by the others.
        exact: a deterministic count (the solver scans the path and nudges single layers); ``False`` for a
            measured prediction (latency: bisection only, no scan, no nudging; the top of the range is
            not measured).
        short: the readout's unit (``"params"``; default :attr:`unit`).
        label: the explorer's toggle label (default :attr:`name`).
        description: the toggle's tooltip.
        field: the :class:`~nslab.scaling.solver.Scaled` attribute that holds this count (``"params"``,
            ``"macs"``, ``"latency_ms"``); ``None``: the solver stores it in ``Scaled.value``.
        step: the solver's bracket widening step in ln tau (smaller for a measured metric: every step
            away from the start measures new layers).
        start: ``start(budget, arch, dataset, convcut, count) -> tau``: where the solver's bracket
            starts; ``None``: the budget times the default network's parameters per unit of this metric.
        max_width: ``max_width() -> int``, the widest layer the solver may reach in this metric
            (``None``: the solver's own limit, 2^24 channels).
    """

    name: str
    unit: str
    count: Callable[..., Count]
    exact: bool = True
    short: str = ""
    label: str = ""
    description: str = ""
    field: str | None = None
    step: float = 1.0
    start: Callable[[float, str, str | DatasetSpec, bool, Count], float] | None = None
    max_width: Callable[[], int] | None = None

    def __post_init__(self) -> None:
        if not self.short:
            object.__setattr__(self, "short", self.unit)
        if not self.label:
            object.__setattr__(self, "label", self.name)

    def counter(self, arch: str, dataset: str | DatasetSpec, convcut: bool = False, **context) -> Count:
        """A fast ``widths -> value`` for the network ``arch`` on ``dataset`` (``convcut``: a conv
        shortcut in every block); ``context``: e.g. ``latency=`` the lookup table."""
        return self.count(arch, dataset, convcut, **context)

    def readout(self, value: float) -> str:
        """What the explorer, the command line and the tables show: ``"9.23M params"``, ``"51.1M MACs"``,
        ``"2 ms"`` (three significant digits)."""
        return f"{human(value)} {self.short}" if self.exact else f"{value:.3g} {self.short}"

    def figure(self, value: float) -> str:
        """A value as error messages write it: the full count (``"9,231,114"``) of an exact metric, the
        value with its unit (``"0.2407 ms"``) of a measured one."""
        if not self.exact:
            return f"{value:.4g} {self.unit}"
        return f"{value:,.0f}" if abs(value) < 1e12 else f"{value:.3g}"

    def start_tau(self, budget: float, arch: str, dataset: str | DatasetSpec, convcut: bool, count: Count) -> float:
        """The tau (a parameter count) where the solver's bracket starts for ``budget`` in this metric."""
        if self.start is not None:
            return self.start(budget, arch, dataset, convcut, count)
        return float(budget) * params_per_unit(self, arch, dataset, convcut)


@functools.lru_cache(maxsize=64)
def params_per_unit(metric: Metric, arch: str, dataset: str | DatasetSpec, convcut: bool) -> float:
    """The default network's parameters per unit of exact ``metric`` (1 for parameters): maps a budget to a tau."""
    d = default_widths(arch)
    return param_counter(arch, dataset, convcut)(d) / metric.counter(arch, dataset, convcut)(d)


def _exact(make: Callable[[str, str | DatasetSpec, bool], Count]) -> Callable[..., Count]:
    def count(arch: str, dataset: str | DatasetSpec, convcut: bool = False, **_context) -> Count:
        return make(arch, dataset, convcut)

    return count


def _latency_count(arch: str, dataset: str | DatasetSpec, convcut: bool = False, latency=None, **_context) -> Count:
    from .latency_table import default_table  # lazily: the table times layers with torch

    return (default_table() if latency is None else latency).predictor(arch, dataset, convcut)


def _latency_start(budget: float, arch: str, dataset: str | DatasetSpec, convcut: bool, count: Count) -> float:
    # Start near the tau whose MACs take this long at the reference network's MACs per ms (its cells
    # are timed anyway): every bracket step away from it times new table cells.
    ref = uniform_widths(arch, 0.5)
    ms_per_mac = count(ref) / macs_counter(arch, dataset, convcut)(ref)
    return float(budget) / ms_per_mac * params_per_unit(MACS, arch, dataset, convcut)


def _latency_max_width() -> int:
    from .latency_table import MAX_WIDTH  # wider layers would take seconds to time each

    return MAX_WIDTH


PARAMS = Metric("params", "parameters", _exact(param_counter), short="params", label="parameters",
                description="exact parameter count", field="params")
MACS = Metric("macs", "MACs", _exact(macs_counter), description="multiply-accumulates per image", field="macs")
LATENCY = Metric("latency", "ms", _latency_count, exact=False,
                 description="predicted by this machine's per-layer table (timed on first use)",
                 field="latency_ms", step=0.25, start=_latency_start, max_width=_latency_max_width)

METRICS: dict[str, Metric] = {m.name: m for m in (PARAMS, MACS, LATENCY)}
"""The registered metrics by name, in the order the explorer's toggle shows them."""


def register_metric(metric: Metric, replace: bool = False) -> Metric:
    """Add ``metric`` to :data:`METRICS` (``replace``: over one of the same name); returns it.

    Raises:
        ValueError: the name is taken (and not ``replace``), or ``metric`` is not a :class:`Metric`.
    """
    if not isinstance(metric, Metric):
        raise ValueError(f"register_metric takes a Metric, got {metric!r}")
    if metric.name in METRICS and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered; pass replace=True to replace it")
    METRICS[metric.name] = metric
    return metric


def get_metric(metric: str | Metric) -> Metric:
    """The metric ``metric`` names (a :class:`Metric` is returned as it is, registered or not).

    Raises:
        ValueError: an unknown name, naming the accepted ones.
    """
    if isinstance(metric, Metric):
        return metric
    try:
        return METRICS[metric]
    except (KeyError, TypeError):
        raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(map(repr, METRICS))}") from None
