"""The integer width vectors on a rounded power law's path, and where a projection shortcut switches the count.

The budget solver (:mod:`nslab.scaling.solver`) searches the path ``max(floor, round(alpha * x^beta))`` over
x > 0. Where a network's count (parameters, MACs or any exact :class:`~nslab.scaling.metrics.Metric`:
everything here works on any count that grows with every width except where a switchable projection
vanishes) is not monotone in its widths (ResNet18's and MobileNetV2's stride-1 blocks have a projection
shortcut only while their input and output widths differ) the count drops wherever two linked widths
meet, so bisection may miss the closest point. Here:
:func:`shortcuts` finds the switchable pairs of an architecture (and bounds on the count that are
monotone in the widths); :func:`last_meeting` bounds where linked rounded widths can still become equal;
:func:`window` bounds the stretch of the path, in ln x, that can hold a point closer to the budget; and
:func:`scan` lays out every width vector in it and finds the closest, splitting the path where a
shortcut vanishes into stretches on which the count is non-decreasing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data import DatasetSpec
from ..models import get_arch
from .metrics import Metric, get_metric

_MAX_SCAN = 1 << 16  # most width vectors the budget solver lays out in one window (memory guard)


@dataclass(frozen=True, eq=False)
class Shortcuts:
    """Where a network's count is not monotone in its widths: shortcuts that exist only while two widths differ.

    ResNet18 and MobileNetV2 give a stride-1 block a projection shortcut (1x1 conv, plus BN on
    MobileNetV2) only while its input width differs from its output width, so the count drops when
    the two become equal.

    Attributes:
        count: the network's exact ``widths -> count``.
        upper: the count with every projection present (``convcut``): ``count <= upper``, and
            ``upper`` never decreases when a width grows.
        pairs: (K, 2) layer indices ``(i, j)``: some block has a projection only while ``w_i != w_j``.
        linked: the layers of ``pairs``, group after group (a group: layers the pairs chain together).
        starts: (G,) where each group begins in ``linked``.
        sizes: (G,) how many layers each group has.
    """

    count: Callable[[list[int]], int]
    upper: Callable[[list[int]], int]
    pairs: np.ndarray
    linked: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    def lower(self, w: np.ndarray) -> int:
        """A count ``<= count(w)`` that never decreases when a width grows.

        Every group is set to its narrowest width: all switchable projections are then absent, and
        what remains only grows with the widths (which only shrank from ``w``).
        """
        v = w.copy()
        v[self.linked] = np.repeat(np.minimum.reduceat(w[self.linked], self.starts), self.sizes)
        return self.count(v.tolist())


@functools.lru_cache(maxsize=64)
def shortcuts(arch: str, dataset: str | DatasetSpec, convcut: bool, metric: str | Metric = "params"
              ) -> Shortcuts | None:
    """The switchable shortcuts of ``arch`` (``None`` where the count is monotone in the widths).

    Found from the counts alone: with all widths distinct, making ``w_i == w_j`` removes a
    projection exactly when ``(i, j)`` is a block's input/output pair. Cached: O(L^2) counts once.

    Args:
        arch, dataset, convcut: the network.
        metric: an exact metric (:class:`~nslab.scaling.metrics.Metric`, or its name): ``"params"``,
            ``"macs"`` (a projection adds both) or another whose count with ``convcut`` bounds it from above.

    Raises:
        ValueError: a measured metric (latency), or an unknown one.
    """
    m = get_metric(metric)
    if not m.exact:
        raise ValueError(f"the path scan needs an exact count; metric {m.name!r} is measured (a prediction), "
                         f"not counted")
    if convcut or not get_arch(arch).has_shortcuts:
        return None
    count, upper = m.counter(arch, dataset), m.counter(arch, dataset, True)
    n = len(get_arch(arch).default_widths)
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            v = list(range(2, n + 2))
            v[j] = v[i]
            if upper(v) != count(v):
                pairs.append((i, j))
    if not pairs:
        return None
    root = list(range(n))  # union-find over the pairs: a chain of blocks links all its layers

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    for i, j in pairs:
        root[find(j)] = find(i)
    members: dict[int, list[int]] = {}
    for i in sorted({i for pair in pairs for i in pair}):
        members.setdefault(find(i), []).append(i)
    sizes = np.array([len(g) for g in members.values()])
    linked = np.array([i for g in members.values() for i in g])
    return Shortcuts(count, upper, np.array(pairs), linked, np.cumsum(sizes) - sizes, sizes)


def window(
    widths: Callable[[float], np.ndarray], sc: Shortcuts, budget: float, err: float, lo: float, hi: float,
    floor: int, t_cap: float, t_meet: float, beta: np.ndarray,
) -> tuple[float, float]:
    """``[t_lo, t_hi]`` in ln x outside which no path point is within ``err`` of the budget.

    Below ``t_lo`` the count is at most ``upper(t_lo) < budget - err`` (or every layer sits at the
    floor, where the path stops changing). Above ``t_hi`` it is at least ``lower(t_hi) > budget + err``,
    or ``t_hi`` is past ``t_meet``, beyond which no linked pair of widths becomes equal (the count is
    non-decreasing there), and the count at ``t_hi`` exceeds ``budget + err``; or ``t_hi`` is ``t_cap``.
    Each test is monotone in x, so one point settles it.
    """
    t_end = min(t_meet, t_cap)

    def below(d: float) -> bool:
        w = widths(lo - d)
        return bool((w == floor).all()) or sc.upper(w.tolist()) < budget - err

    def above_lower(d: float) -> bool:
        return hi + d >= t_end or sc.lower(widths(hi + d)) > budget + err

    first, density = 0.01, 0.0
    if hi + first < t_end:
        # The lower envelope is loose (on MobileNetV2 the window can span a factor 2 in x): start where
        # it would pass budget + err if it grew like x^(2 beta_max), and tighten while that pays.
        w = widths(hi)
        first = max(first, math.log(max(1.0, (budget + err) / sc.lower(w))) / (2 * beta.max()))
        density = float((beta * w).sum())  # width changes per unit of ln x (at a rounding step of 1)
    t_hi = hi + _reach(above_lower, first, density)
    if t_end <= t_hi < t_cap:  # past t_meet the count itself is non-decreasing: step until it is too large
        t_mono = t_hi
        t_hi = t_mono + _reach(lambda d: t_mono + d >= t_cap or sc.count(widths(t_mono + d).tolist()) > budget + err)
    return lo - _reach(below), min(t_hi, t_cap)


def _reach(done: Callable[[float], bool], step: float = 0.01, density: float = 0.0) -> float:
    """A distance ``d >= step`` with ``done(d)``, for ``done`` monotone in d.

    Doubling from ``step`` brackets the least such distance; up to three bisection steps then tighten
    it while the bracket spans more than ~256 path points (``density`` per unit of d), where the counts
    they cost are cheaper than the points they spare the scan.
    """
    d = step
    while not done(d):
        d *= 2
    lo, hi = (d / 2 if d > step else 0.0), d
    for _ in range(3):
        if (hi - lo) * density <= 256:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if done(mid) else (mid, hi)
    return hi


@functools.lru_cache(maxsize=256)  # the explorer asks one law for many budgets
def last_meeting(log_a: bytes, beta: bytes, sc: Shortcuts, mult: bytes, floor: bytes) -> float:
    """An ln x beyond which no pair's rounded widths become equal (pairs of identical laws, always equal,
    never change; ``-inf`` if they are all such). ``log_a`` and ``beta``: float64 arrays' bytes; ``mult``
    and ``floor``: int64 arrays' bytes, each layer's rounding step and least width.

    Rounded widths agree only while both sit at their floors or their real widths differ by less than
    ``r``, the larger of the pair's rounding steps (each rounded width is within half its step of the real
    one). Past the crossing ``t0`` of two laws the gap is ``c0 e^(beta_f s) (1 - e^(-|dbeta| s))`` at
    ``t0 + s`` (``c0``: the width at the crossing, ``beta_f``: the larger exponent), which exceeds ``r`` from
    the ``s`` returned here on.
    """
    log_a, beta, pairs = np.frombuffer(log_a), np.frombuffer(beta), sc.pairs
    step, least = np.frombuffer(mult, dtype=np.int64), np.frombuffer(floor, dtype=np.int64)
    la, lb, ba, bb = log_a[pairs[:, 0]], log_a[pairs[:, 1]], beta[pairs[:, 0]], beta[pairs[:, 1]]
    r = np.maximum(step[pairs[:, 0]], step[pairs[:, 1]]).astype(float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_f = np.log(least + 0.5 * step)

        def leaves_floor(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> np.ndarray:  # b = 0: never or always
            return np.where(b > 0, (f - a) / np.where(b > 0, b, 1), np.where(a < f, np.inf, -np.inf))

        both_floor = np.minimum(leaves_floor(la, ba, log_f[pairs[:, 0]]), leaves_floor(lb, bb, log_f[pairs[:, 1]]))
        db = ba - bb
        t0 = (lb - la) / db
        log_c0 = la + ba * t0
        ratio = r / np.exp(log_c0)
        s_wide = -np.log1p(-np.minimum(ratio, 0.5)) / np.abs(db)  # c0 > 2 r: the factor alone suffices
        s_narrow = np.maximum(1 / np.abs(db), (np.log(r / (1 - math.exp(-1))) - log_c0) / np.maximum(ba, bb))
        t_gap = t0 + np.where(ratio < 0.5, s_wide, s_narrow)
        same_beta = (np.log(r) - np.log(np.abs(np.exp(la) - np.exp(lb)))) / ba
    # Equal exponents: identical laws never change their equality; two constant ones never move at all.
    t_gap = np.where(db == 0, np.where((la == lb) | (ba == 0), -np.inf, same_beta), t_gap)
    return float(np.max(np.maximum(t_gap, np.where((db == 0) & (la == lb), -np.inf, both_floor))))


def _path_points(
    widths: Callable[[float], np.ndarray], log_a: np.ndarray, beta: np.ndarray, mult: np.ndarray,
    t_lo: float, t_hi: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every width vector on the rounded path between ``t_lo`` and ``t_hi``, in order of ln x.

    Returns:
        ``(W, edges)``: (L, M) widths, one column per point (layers whose widths change at the same
        x, to 1e-13, change in the same column), and (M + 1,) the ln x where each point's stretch
        starts, then ``t_hi``. ``None`` when that would be more than ``_MAX_SCAN`` changes.
    """
    w1, w2 = widths(t_lo), widths(t_hi)
    n = (w2 - w1) // mult  # rounding steps each layer takes inside the window
    if n.sum() > _MAX_SCAN:
        return None
    layer = np.repeat(np.arange(len(n)), n)
    step = np.arange(len(layer)) - np.repeat(np.cumsum(n) - n, n)
    # Layer l moves from k to k + 1 rounding steps where alpha_l x^beta_l = (k + 1/2) mult_l.
    t = (np.log((w1[layer] // mult[layer] + step + 0.5) * mult[layer]) - log_a[layer]) / beta[layer]
    order = np.argsort(t, kind="stable")
    t, layer = t[order], layer[order]
    w = np.zeros((len(n), len(t) + 1), dtype=np.int64)
    w[:, 0] = w1
    w[layer, np.arange(1, len(t) + 1)] = mult[layer]
    np.cumsum(w, axis=1, out=w)
    keep = np.ones(len(t) + 1, dtype=bool)
    keep[1:-1] = t[1:] > t[:-1] + 1e-13 * np.maximum(1.0, np.abs(t[1:]))
    return w[:, keep], np.concatenate(([t_lo], t, [t_hi]))[np.append(keep, True)]


def scan(
    widths: Callable[[float], np.ndarray], sc: Shortcuts, budget: float, best: tuple, bracket: tuple,
    window: tuple[float, float], log_a: np.ndarray, beta: np.ndarray, mult: np.ndarray,
) -> tuple[float, np.ndarray, int]:
    """The closest point to ``budget`` on the path inside ``window`` (``best`` if none is closer).

    The count only drops where a shortcut-linked pair of widths becomes equal (its projection
    vanishes); between two such points it is non-decreasing, so each stretch needs its two ends and,
    if it crosses the budget, a bisection. The stretches holding the bracket's two adjacent ends
    need nothing more: they lie at or below ``p_lo`` up to it and above ``p_hi`` from it on.
    """
    points = _path_points(widths, log_a, beta, mult, *window)
    if points is None:
        return best
    w, edges = points
    eq = w[sc.pairs[:, 0]] == w[sc.pairs[:, 1]]
    drops = (np.flatnonzero((eq[:, 1:] & ~eq[:, :-1]).any(axis=0)) + 1).tolist()
    starts, ends = [0, *drops], [d - 1 for d in drops] + [w.shape[1] - 1]
    done = _columns_of(w, bracket[1], bracket[4])
    err, j_best, p_best = abs(best[2] - budget), None, None
    counts: dict[int, int] = {}

    def at(j: int) -> int:
        nonlocal err, j_best, p_best
        if j not in counts:
            counts[j] = sc.count(w[:, j].tolist())
            if abs(counts[j] - budget) < err:
                err, j_best, p_best = abs(counts[j] - budget), j, counts[j]
        return counts[j]

    for s, f in zip(starts, ends):
        if any(s <= j <= f for j in done) or at(s) >= budget or at(f) <= budget:
            continue  # settled by the bracket; least count above the budget; largest below it
        while f - s > 1:
            m = (s + f) // 2
            s, f = (m, f) if at(m) <= budget else (s, m)
    return best if j_best is None else (0.5 * float(edges[j_best] + edges[j_best + 1]), w[:, j_best], p_best)


def _columns_of(w: np.ndarray, w_lo: np.ndarray, w_hi: np.ndarray) -> tuple[int, ...]:
    """Columns of ``w`` holding ``w_lo`` and ``w_hi`` if they are consecutive there, else ``()``.

    Column sums strictly increase along the path, which locates a vector by its sum.
    """
    sums = w.sum(axis=0)
    j = int(np.searchsorted(sums, w_lo.sum()))
    if j + 1 < w.shape[1] and (w[:, j] == w_lo).all() and (w[:, j + 1] == w_hi).all():
        return j, j + 1
    return ()
