"""Algorithm 3: the widths a per-layer power law, or one global factor, gives for a budget.

A budget is counted in a metric of :mod:`nslab.scaling.metrics` (``"params"``, the paper's; ``"macs"``
per image; ``"latency"``, ms predicted by this device's per-layer table; or any registered one).
:func:`widths_for_budget` searches the law's rounded path for the count closest to the budget;
:func:`scale_widths` does the same for one global factor on fixed widths (the MorphNet-style baseline).
The paper's gradient descent is kept as ``method="sgd"``. The laws (Algorithm 2): :mod:`nslab.scaling.powerlaw`.

The search. ``method="bracket"`` searches the law's *path*, the vectors ``max(floor, m * rint(alpha *
tau^beta / m))`` for tau > 0, where each layer's rounding step ``m`` is the least common multiple of
``round_to`` and the multiple its group needs (a grouped convolution's or GroupNorm's group count in a traced
network, :func:`nslab.models.traced_arch.width_multiples`; 1 elsewhere), and ``floor`` is ``min_width``
rounded up to ``m``.
VGG11's count is non-decreasing in tau (so is any count with ``convcut``), so bisection in ln tau ends
at the two path points around the budget, the closer being the closest on the path. ResNet18's and
MobileNetV2's drop wherever the input and output widths of a stride-1 block meet (its projection
shortcut exists only while they differ), so there the path is also scanned over a window around the
bisection's point (:mod:`nslab.scaling.pathscan`, which states why no point outside it comes closer).
MACs behave the same way (every term grows with the widths except the switchable projections), and so
must any exact metric, so the same search and guarantee hold.

Guarantee (exact metrics: parameters, MACs): the path point kept is the closest to the budget of all
(up to float resolution: layers whose widths change within 1e-13 in ln tau change together; widths up
to 2^24 channels; a window of more than 65,536 vectors, far beyond the paper's networks, is not
scanned). Single layers are then nudged by one rounding step, greedily, while the count gets strictly
closer, within two rounding steps of the law's real-valued width (at the kept point; at the
bisection's lower end for its points), also from the bisection's point when the scan kept another.
The result is never farther from the budget than the closest path point, its best single nudge within
those limits (and ``floor``), or nudging from the bisection's point alone.

Guarantee (measured metrics: latency): weaker, because the count is the lookup table's prediction (a
sum of measured, interpolated per-layer latencies, :class:`nslab.scaling.latency_table.LatencyTable`),
which is neither monotone in the widths nor free of noise. Bisection in ln tau on that prediction ends
at two adjacent path points whose predictions lie on either side of the budget, and the closer is
returned: a crossing of the budget by the predicted latency, not necessarily the closest point of the
path, and no nudging (a one-channel change moves latency by less than its noise). Widths stop at the
metric's ``max_width`` (the table's). How close the *measured* latency comes is the table's accuracy,
reported by ``bench/latency_table.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..data import DatasetSpec
from ..models import get_arch, macs_counter, param_counter
from ..models.traced_arch import width_multiples
from . import pathscan
from .metrics import METRICS, PARAMS, Metric, get_metric
from .nudge import refine
from .powerlaw import PowerLaw

if TYPE_CHECKING:
    from .latency_table import LatencyTable

__all__ = ["METRICS", "Scaled", "counter", "scale_widths", "widths_for_budget"]

_MAX_WIDTH = 1 << 24  # no layer wider than this is "reachable": guards the upward bracket search


@dataclass(frozen=True)
class Scaled:
    """A width vector generated for a budget.

    Attributes:
        widths: (L,) integer widths, forward order.
        params: exact parameter count of the network with ``widths`` (whatever the metric).
        target: the budget asked for, in ``metric``'s unit (parameters, MACs, milliseconds, ...).
        rel_error: ``(achieved - target) / target`` in ``metric`` (signed, dimensionless).
        metric: the name of what ``target`` counts (:mod:`nslab.scaling.metrics`): ``"params"``,
            ``"macs"``, ``"latency"`` or another metric's.
        macs: exact multiply-accumulates of one image (``None`` where whoever built this did not count
            them; the solver always does).
        latency_ms: the lookup table's predicted latency, milliseconds (``metric="latency"`` only).
        value: the count in ``metric`` of a metric without a field of its own here (``None`` otherwise:
            it is the field the metric names, e.g. ``params``).
    """

    widths: list[int]
    params: int
    target: float
    rel_error: float
    metric: str = "params"
    macs: int | None = None
    latency_ms: float | None = None
    value: float | None = None

    @property
    def achieved(self) -> float:
        """The count of ``widths`` in ``metric`` (the number ``rel_error`` compares with ``target``)."""
        field = get_metric(self.metric).field if self.value is None else None
        return self.value if field is None else getattr(self, field)


def counter(
    arch: str, dataset: str | DatasetSpec, convcut: bool = False, metric: str | Metric = "params",
    latency: LatencyTable | None = None,
) -> Callable[[list[int]], float]:
    """A fast ``widths -> count`` of the network ``arch``/``dataset``/``convcut`` in ``metric`` (a name or a
    :class:`~nslab.scaling.metrics.Metric`); ``latency``: the table ``"latency"`` predicts with (``None``:
    :func:`nslab.scaling.latency_table.default_table`, this machine's CPU, made on first use)."""
    return get_metric(metric).counter(arch, dataset, convcut, latency=latency)


@dataclass(frozen=True)
class _Problem:
    """What the error messages name: the metric, the network, and the widths the solver may use."""

    metric: Metric = PARAMS
    what: str = "network of this law"
    floor: tuple[int, ...] = (1,)
    max_width: int = _MAX_WIDTH

    @property
    def least(self) -> str:
        return str(self.floor[0]) if len(set(self.floor)) == 1 else f"{list(self.floor)} (its group's multiple)"

    def range_error(self, budget: float, lo: float, hi: float | None, below: bool) -> ValueError:
        m = self.metric
        where = "below the smallest network of this law" if below else "beyond what this law can reach"
        top = f"its {m.name} there (not timed: too wide to measure quickly)" if hi is None else m.figure(hi)
        return ValueError(
            f"{m.name} budget {m.figure(budget)} is {where}: outside the achievable range "
            f"{m.figure(lo)} .. {top}{'' if hi is None or not m.exact else ' ' + m.unit} for {self.what} "
            f"(every layer at its minimum width {self.least} .. the widest layer at {self.max_width:,} channels); "
            + ("raise the budget or lower min_width" if below else "lower the budget"))


def _check_number(budget: float, metric: Metric) -> None:
    if not (isinstance(budget, (int, float, np.integer, np.floating)) and math.isfinite(budget)) or budget <= 0:
        raise ValueError(f"budget must be a positive number of {metric.unit} ({metric.name}), got {budget!r}")


def _check_budget(
    budget: float, floor_count: float, problem: _Problem, top: Callable[[], float | None] = lambda: None,
) -> None:
    _check_number(budget, problem.metric)
    if budget < floor_count:
        raise problem.range_error(budget, floor_count, top(), below=True)


def _grid(arch: str, round_to: int, min_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(L,) each layer's rounding step (``lcm(round_to, its group's multiple)``) and (L,) its least width
    (``min_width`` rounded up to that step), int64."""
    if round_to < 1 or min_width < 1:
        raise ValueError(f"round_to and min_width must be >= 1, got round_to={round_to}, min_width={min_width}")
    mult = np.array([math.lcm(round_to, k) for k in width_multiples(get_arch(arch))], dtype=np.int64)
    return mult, -(-min_width // mult) * mult


def _path(log_a: np.ndarray, beta: np.ndarray, mult: np.ndarray, floor: np.ndarray) -> Callable[[float], np.ndarray]:
    """The rounded path ``ln x -> max(floor, mult * rint(alpha * x^beta / mult))``, (L,) int64."""

    def widths(log_x: float) -> np.ndarray:
        w = np.exp(log_a + beta * log_x)
        return np.maximum(floor, mult * np.rint(w / mult)).astype(np.int64)

    return widths


def _solve(
    alpha: np.ndarray, beta: np.ndarray, count: Callable[[list[int]], float], budget: float,
    mult: np.ndarray, floor: np.ndarray, x0: float, shortcuts: pathscan.Shortcuts | None,
    problem: _Problem, extras: Callable[[list[int]], dict], step: float = 1.0,
) -> Scaled:
    """Closest count for ``w(x) = max(floor, mult * rint(alpha * x^beta / mult))`` (beta >= 0, one > 0), then
    nudges (``mult``, ``floor``: (L,), :func:`_grid`).

    Bisection on ln x (:func:`_bracket`) finds adjacent path points around the budget. Without
    ``shortcuts`` the count is non-decreasing in x, so the closer of the two is the closest on the
    whole path. With them it is not (a projection vanishes where two linked widths meet):
    :func:`~nslab.scaling.pathscan.window` bounds where a closer point can lie and :func:`~nslab.scaling.pathscan.scan`
    finds the closest one there.
    Single-layer nudges (:func:`nslab.scaling.nudge.refine`) then close the last gap. The exact
    guarantee is stated in the module's docstring. ``problem`` names the metric and network in
    errors and sets the widest layer allowed; ``extras(widths)`` gives the :class:`Scaled` fields besides
    ``widths``, ``target`` and ``rel_error``; ``step``: the bracket's widening step in ln x.
    """
    problem = dataclasses.replace(problem, floor=tuple(floor.tolist()))
    log_a, m = np.log(alpha), problem.metric
    widths = _path(log_a, beta, mult, floor)

    def result(w: np.ndarray, p: float) -> Scaled:
        if w.max() > problem.max_width:
            raise problem.range_error(budget, floor_count, cap_count(), below=False)
        target = int(round(budget)) if m.exact else budget
        return Scaled(w.tolist(), target=target, rel_error=(p - budget) / budget, metric=m.name, **extras(w.tolist()))

    t_cap = _t_cap(log_a, beta, problem.max_width)  # the path is searched up to here only

    def cap_count() -> float | None:  # the top of the range (not measured for latency: far too wide to time)
        return count(widths(t_cap).tolist()) if m.exact else None

    floor_count = count(floor.tolist())
    _check_budget(budget, floor_count, problem, cap_count)

    bracket = _bracket(widths, count, budget, min(math.log(x0), t_cap), mult, t_cap, step)
    if bracket is None:
        raise problem.range_error(budget, floor_count, cap_count(), below=False)
    lo, w_lo, p_lo, hi, w_hi, p_hi = bracket
    t, w, p = (lo, w_lo, p_lo) if budget - p_lo <= p_hi - budget else (lo, w_hi, p_hi)
    if p == budget or not m.exact:  # no nudging on a measured, noisy count
        return result(w, p)
    starts = [(t, w, p)]
    if shortcuts is not None:
        t_meet = pathscan.last_meeting(log_a.tobytes(), beta.tobytes(), shortcuts, mult.tobytes(), floor.tobytes())
        t_lo, t_hi = pathscan.window(widths, shortcuts, budget, abs(p - budget), lo, hi, floor, t_cap, t_meet, beta)
        closest = pathscan.scan(widths, shortcuts, budget, starts[0], bracket, (t_lo, t_hi), log_a, beta, mult)
        # Greedy nudging can end farther from a closer start: keep the bisection's point as a second one.
        starts = [closest, *starts] if closest is not starts[0] else starts
    ends = [refine(np.exp(log_a + beta * t), w, p, count, budget, mult, floor, beta > 0) for t, w, p in starts]
    w, p = min(ends, key=lambda e: abs(e[1] - budget))
    return result(w, p)


def _bracket(
    widths: Callable[[float], np.ndarray], count: Callable[[list[int]], float], budget: float, t0: float,
    mult: np.ndarray, t_cap: float = math.inf, step: float = 1.0,
) -> tuple[float, np.ndarray, float, float, np.ndarray, float] | None:
    """Bisection on ln x: ``(lo, w_lo, p_lo, hi, w_hi, p_hi)`` with ``p_lo <= budget < p_hi`` and no
    path point between ``w_lo`` and ``w_hi`` (or both ends the same point, when it hits the budget);
    ``mult``: (L,) the layers' rounding steps.

    Where the count is not monotone this still ends at *a* crossing of the budget, not necessarily
    the closest one. The upward search stops at ``t_cap`` (``t0 <= t_cap``): ``None`` if the count
    there is still below the budget.
    """
    lo = hi = t0
    w_lo = w_hi = widths(lo)
    p_lo = p_hi = count(w_lo.tolist())
    while p_lo > budget:  # widen downwards; terminates: all widths reach the floor, whose count <= budget
        hi, w_hi, p_hi = lo, w_lo, p_lo
        lo -= step
        w_lo = widths(lo)
        p_lo = count(w_lo.tolist())
    while p_hi <= budget:  # widen upwards
        if p_hi == budget:
            return hi, w_hi, p_hi, hi, w_hi, p_hi
        if hi >= t_cap:
            return None
        lo, w_lo, p_lo = hi, w_hi, p_hi
        hi = min(hi + step, t_cap)
        w_hi = widths(hi)
        p_hi = count(w_hi.tolist())
    # Bisect until adjacent: one rounding step apart (or float resolution, for simultaneous breakpoints).
    while (np.abs(w_hi - w_lo) // mult).sum() > 1 and hi - lo > 1e-13 * max(1.0, abs(hi)):
        mid = 0.5 * (lo + hi)
        w_mid = widths(mid)
        p_mid = count(w_mid.tolist())
        if p_mid <= budget:
            lo, w_lo, p_lo = mid, w_mid, p_mid
        else:
            hi, w_hi, p_hi = mid, w_mid, p_mid
    return lo, w_lo, p_lo, hi, w_hi, p_hi


def _sgd(
    law: PowerLaw, count: Callable[[list[int]], int], budget: float, mult: np.ndarray, floor: np.ndarray,
    settings: tuple[float, int | None, float | None], problem: _Problem, max_steps: int = 100_000,
) -> Scaled:
    """The paper's solver (Eq. 9-11) as released: tau_0 = budget, then
    ``tau <- tau - lr * (P - T) * sum_l alpha_l beta_l tau^(beta_l - 1)``, for ``steps`` steps or until
    ``|P - T| / T <= tol`` (``settings``: ``(lr, steps, tol)``, :attr:`nslab.models.Architecture.sgd_solver`)."""
    lr, steps, tol = settings
    a, b = np.asarray(law.alpha), np.asarray(law.beta)
    problem = dataclasses.replace(problem, floor=tuple(floor.tolist()))

    def widths(tau: float) -> list[int]:
        return np.maximum(floor, mult * np.rint(a * tau**b / mult)).astype(np.int64).tolist()

    def top() -> float:  # the count where the widest layer reaches the solver's limit (as the bracket's range)
        return count(_path(np.log(a), b, mult, floor)(_t_cap(np.log(a), b, problem.max_width)).tolist())

    _check_budget(budget, count(floor.tolist()), problem, top)
    tau = float(budget)
    for _ in range(steps if steps is not None else max_steps):
        p = count(widths(tau))
        if tol is not None and abs(p - budget) / budget <= tol:
            break
        tau = max(tau - lr * (p - budget) * float((a * b * tau ** (b - 1)).sum()), 1.0)
    w = widths(tau)
    p = count(w)
    return Scaled(w, int(p), int(round(budget)), (p - budget) / budget)


def _t_cap(log_a: np.ndarray, beta: np.ndarray, max_width: int) -> float:
    """The ln x where the path's widest growing layer (beta > 0; a constant one never does) reaches ``max_width``."""
    grow = beta > 0
    return float(((math.log(max_width) - log_a[grow]) / beta[grow]).min())


def _setup(
    arch: str, dataset: str | DatasetSpec, convcut: bool, metric: Metric, latency: LatencyTable | None,
) -> tuple[Callable[[list[int]], float], pathscan.Shortcuts | None, _Problem, Callable[[list[int]], dict]]:
    """The count, the switchable shortcuts, the error wording and the result's fields for one network.

    A measured metric (latency) is neither monotone nor structured like a count: no path scan, and the
    result reports the prediction it was solved on (in the field the metric names, else ``value``).
    """
    count = metric.counter(arch, dataset, convcut, latency=latency)  # resolves the table, if any
    params, macs = param_counter(arch, dataset, convcut), macs_counter(arch, dataset, convcut)
    name = dataset.name if isinstance(dataset, DatasetSpec) else dataset
    problem = _Problem(metric, f"{arch} {name}" + (" (convcut)" if convcut else ""),
                       max_width=_MAX_WIDTH if metric.max_width is None else metric.max_width())

    def fields(w: list[int]) -> dict:
        out = {"params": params(w), "macs": macs(w)}
        if metric.field not in out:
            out[metric.field or "value"] = count(w)
        return out

    return count, pathscan.shortcuts(arch, dataset, convcut, metric) if metric.exact else None, problem, fields


def widths_for_budget(
    law: PowerLaw,
    arch: str,
    dataset: str | DatasetSpec,
    budget: float,
    round_to: int = 1,
    min_width: int = 1,
    method: str = "bracket",
    convcut: bool = False,
    metric: str | Metric = "params",
    latency: LatencyTable | None = None,
) -> Scaled:
    """Algorithm 3: the widths the power law gives for a budget in parameters, MACs, latency or any metric.

    ``method="bracket"`` searches the law's rounded path ``max(floor, round_to * rint(alpha * tau^beta /
    round_to))`` over tau > 0 for the count closest to the budget: bisection in ln tau, a scan of a
    window of the path where the count is not monotone (ResNet18's and MobileNetV2's switchable
    projection shortcuts), then single-layer nudges; for a measured metric (latency) bisection only.
    The search and its guarantee for each kind of metric are stated in :mod:`nslab.scaling.solver`.

    Args:
        law: the fitted power law (L layers of ``arch``).
        arch, dataset, convcut: the network to count.
        budget: the target, in ``metric``'s unit: parameters, MACs (of one image), milliseconds
            (one forward pass of the table's batch), ...
        round_to: every width is a multiple of this (8 gives hardware-friendly widths), and of what its
            group needs (a traced network's grouped layers: :func:`nslab.models.traced_arch.width_multiples`).
        min_width: no layer narrower than this (rounded up to each layer's multiple).
        method: ``"bracket"`` (default, above) or ``"sgd"`` (the paper's gradient descent with the
            release's per-network settings, :attr:`nslab.models.Architecture.sgd_solver`, for comparison;
            parameters only).
        metric: ``"params"`` (default), ``"macs"``, ``"latency"``, another registered metric's name, or a
            :class:`~nslab.scaling.metrics.Metric`.
        latency: the lookup table for ``metric="latency"`` (``None``: this machine's CPU table,
            :func:`nslab.scaling.latency_table.default_table`); ignored otherwise.

    Returns:
        :class:`Scaled` with the widths, their exact parameters and MACs (and the metric's count), the
        relative error in ``metric`` and the metric's name.

    Raises:
        ValueError: a budget outside the achievable range (below the smallest network, every layer at
            ``min_width``, or beyond the law's reach, the widest layer at the metric's maximum width;
            the message names the budget, metric, unit and range), a law that does not match ``arch``,
            a negative beta (or none positive), an unknown method or metric.
    """
    n_layers = len(get_arch(arch).default_widths)
    if len(law.alpha) != n_layers:
        raise ValueError(f"the law has {len(law.alpha)} layers but {arch} has {n_layers}")
    m = get_metric(metric)
    if method == "sgd":
        if m != PARAMS:
            raise ValueError(f"method 'sgd' (the paper's) solves parameter budgets only, got metric {m.name!r}; "
                             "use method 'bracket'")
        settings = get_arch(arch).sgd_solver
        if settings is None:
            raise ValueError(f"method 'sgd' needs the release's solver settings, which {arch!r} has none of; "
                             "use method 'bracket'")
        count, _, problem, _ = _setup(arch, dataset, convcut, m, latency)
        return _sgd(law, count, budget, *_grid(arch, round_to, min_width), settings, problem)
    if method != "bracket":
        raise ValueError(f"unknown method {method!r}; accepted: 'bracket', 'sgd'")
    beta = np.asarray(law.beta, dtype=float)
    # beta = 0: a layer never pruned, held constant (the path stays monotone in tau)
    if (beta < 0).any() or not (beta > 0).any() or not np.isfinite(beta).all():
        raise ValueError(f"the budget solver needs every beta >= 0 and at least one > 0; got {beta.round(4).tolist()}")
    count, sc, problem, extras = _setup(arch, dataset, convcut, m, latency)
    _check_number(budget, m)
    x0 = m.start_tau(budget, arch, dataset, convcut, count)  # start the bracket near the budget's tau
    return _solve(np.asarray(law.alpha, dtype=float), beta, count, budget, *_grid(arch, round_to, min_width), x0=x0,
                  shortcuts=sc, problem=problem, extras=extras, step=m.step)


def scale_widths(
    base_widths: Sequence[int],
    arch: str,
    dataset: str | DatasetSpec,
    budget: float,
    round_to: int = 1,
    min_width: int = 1,
    convcut: bool = False,
    metric: str | Metric = "params",
    latency: LatencyTable | None = None,
) -> Scaled:
    """One global factor ``s`` on ``base_widths`` (``round(w * s)``) solved to meet ``budget``.

    The MorphNet-style baseline: it keeps the proportions of ``base_widths`` (e.g. a network pruned
    to 50% of its channels) and only changes the overall size. Arguments (``budget`` in ``metric``'s
    unit), and the guarantee on the result (the path being ``round(base * s)`` over s > 0), as for
    :func:`widths_for_budget`.
    """
    base = np.asarray(base_widths, dtype=float)
    n_layers = len(get_arch(arch).default_widths)
    if base.shape != (n_layers,) or (base <= 0).any():
        raise ValueError(f"base_widths must be {n_layers} positive widths for {arch}, got {list(base_widths)}")
    count, sc, problem, extras = _setup(arch, dataset, convcut, get_metric(metric), latency)
    # step: the default 1.0 whatever the metric (x0 = 1 is the base network itself)
    return _solve(base, np.ones(n_layers), count, budget, *_grid(arch, round_to, min_width), x0=1.0, shortcuts=sc,
                  problem=problem, extras=extras)
