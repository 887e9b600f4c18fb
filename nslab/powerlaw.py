"""Algorithms 2 and 3: the per-layer power law ``w_l = alpha_l * tau^beta_l`` and the budget solver.

``tau`` is a parameter count: each trajectory row's exact :func:`~nslab.models.param_count`.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import io
from .data import DatasetSpec
from .models import get_arch, param_count, param_counter

MIN_ROWS = 6  # the released code's threshold below which it silently fell back to uniform scaling
_MAX_WIDTH = 1 << 24  # no layer wider than this is "reachable": guards the upward bracket search
_MAX_SCAN = 1 << 16  # most width vectors the budget solver lays out in one window (memory guard)


@dataclass(frozen=True)
class PowerLaw:
    """A fitted per-layer power law ``w_l = alpha_l * tau^beta_l``.

    Attributes:
        alpha: (L,) scale per layer, in channels at tau = 1 parameter.
        beta: (L,) exponent per layer (dimensionless); > 0 for every layer of a pruning trajectory.
        r2: (L,) coefficient of determination of each layer's fit in log-log space.
        rows: number of trajectory rows the law was fitted on (0 when loaded without that record).
    """

    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    r2: tuple[float, ...] = ()
    rows: int = 0

    def widths(self, tau: float | np.ndarray) -> np.ndarray:
        """Real-valued widths at parameter count ``tau``: (L,) for a scalar, (L, T) for a (T,) array."""
        t = np.asarray(tau, dtype=float)
        return np.asarray(self.alpha)[:, None] * t[None] ** np.asarray(self.beta)[:, None] if t.ndim else (
            np.asarray(self.alpha) * float(t) ** np.asarray(self.beta)
        )

    def to_dict(self) -> dict:
        """``{"alpha","beta","r2","rows"}`` with lists of floats (the stable JSON form)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Scaled:
    """A width vector generated for a parameter budget.

    Attributes:
        widths: (L,) integer widths, forward order.
        params: exact parameter count of the network with ``widths``.
        target: the budget asked for, parameters.
        rel_error: ``(params - target) / target`` (signed, dimensionless).
    """

    widths: list[int]
    params: int
    target: int
    rel_error: float


def fit_power_law(
    trajectory: np.ndarray | Sequence[Sequence[int]] | str | os.PathLike,
    arch: str,
    dataset: str | DatasetSpec = "cifar10",
    convcut: bool = False,
) -> PowerLaw:
    """Fit ``ln w_l = ln alpha_l + beta_l ln tau`` per layer by least squares (Eq. 5-8).

    Args:
        trajectory: (rows, L) integer widths in pruning order (row sums strictly decreasing), or the
            path of a trajectory CSV (nslab's, with header, or the authors' header-less one).
        arch, dataset, convcut: the network the trajectory belongs to; tau of each row is its exact
            parameter count.

    Returns:
        The fitted :class:`PowerLaw`.

    Raises:
        ValueError: fewer than 6 rows, a column count that does not match ``arch``, non-positive
            widths, or row sums that do not strictly decrease.
    """
    if isinstance(trajectory, (str, os.PathLike)):
        trajectory = io.read_trajectory(trajectory)
    w = np.asarray(trajectory)
    n_layers = len(get_arch(arch).default_widths)
    if w.ndim != 2 or w.shape[1] != n_layers:
        raise ValueError(f"a {arch} trajectory needs {n_layers} columns (one per searchable layer); "
                         f"got an array of shape {w.shape}")
    if len(w) < MIN_ROWS:
        raise ValueError(f"a trajectory needs at least {MIN_ROWS} rows to fit a power law, got {len(w)} "
                         "(prune further, or record more often)")
    if not np.issubdtype(w.dtype, np.integer) and not np.array_equal(w, np.round(w)):
        raise ValueError("trajectory widths must be integers")
    if (w <= 0).any():
        r, c = np.argwhere(w <= 0)[0]
        raise ValueError(f"trajectory widths must be positive; row {r}, layer {c} is {w[r, c]}")
    sums = w.sum(axis=1)
    if (np.diff(sums) >= 0).any():
        r = int(np.argmax(np.diff(sums) >= 0))
        raise ValueError(f"trajectory row sums must strictly decrease (rows in pruning order); "
                         f"row {r} sums to {sums[r]}, row {r + 1} to {sums[r + 1]}")
    tau = [param_count(arch, row, dataset, convcut) for row in w.astype(np.int64).tolist()]
    return fit_log_linear(tau, w)


def fit_log_linear(tau: Sequence[float] | np.ndarray, widths: np.ndarray) -> PowerLaw:
    """Least squares of ``ln w_l = ln alpha_l + beta_l ln tau`` for every layer at once (Eq. 6-8).

    Args:
        tau: (rows,) positive size variable of each row (parameters).
        widths: (rows, L) positive widths (need not be integers).

    Returns:
        The :class:`PowerLaw` with per-layer alpha, beta and R^2 (in log-log space).
    """
    tau = np.asarray(tau, dtype=float)
    a = np.stack([np.log(tau), np.ones_like(tau)], axis=1)  # (rows, 2)
    y = np.log(np.asarray(widths, dtype=float))  # (rows, L)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)  # (2, L)
    ss_res = ((y - a @ coef) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    # A layer that never changed is fitted exactly by beta = 0: call that R^2 = 1 rather than 0/0.
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 1.0)
    return PowerLaw(tuple(np.exp(coef[1]).tolist()), tuple(coef[0].tolist()), tuple(r2.tolist()), len(tau))


def load_fit(path: str | os.PathLike, index: int | None = None) -> PowerLaw:
    """Read a fit: nslab's fit JSON (``{"alpha","beta",...}``) or the authors' ``{"fits": [...]}``.

    Args:
        path: JSON file.
        index: which fit of an authors' ``fits`` list (0-based; default the last one).
    """
    d = io.read_json(path)
    if isinstance(d, dict) and "fits" in d:
        fits = d["fits"]
        i = len(fits) - 1 if index is None else index
        if not -len(fits) <= i < len(fits):
            raise ValueError(f"{path} holds {len(fits)} fits; index {index} is out of range")
        d = fits[i]
    if not isinstance(d, dict) or "alpha" not in d or "beta" not in d:
        raise ValueError(f"{path} is not a power-law fit: expected keys 'alpha' and 'beta'")
    alpha, beta = d["alpha"], d["beta"]
    if len(alpha) != len(beta) or not all(math.isfinite(x) for x in [*alpha, *beta]):
        raise ValueError(f"{path}: alpha and beta must be equal-length lists of finite numbers")
    return PowerLaw(tuple(map(float, alpha)), tuple(map(float, beta)),
                    tuple(map(float, d.get("r2", ()))), int(d.get("rows", 0)))


def save_fit(path: str | os.PathLike, law: PowerLaw, **meta) -> Path:
    """Write ``law`` as JSON (its :meth:`PowerLaw.to_dict` plus ``meta`` such as arch and dataset)."""
    return io.write_json(path, {**meta, **law.to_dict()})


# --- Algorithm 3 ----------------------------------------------------------------------------------------

def _check_budget(budget: float, floor_params: int, what: str) -> None:
    if not (isinstance(budget, (int, float, np.integer, np.floating)) and math.isfinite(budget)) or budget <= 0:
        raise ValueError(f"budget must be a positive number of parameters, got {budget!r}")
    if budget < floor_params:
        raise ValueError(f"budget {budget:,.0f} is below the smallest {what} ({floor_params:,} parameters "
                         "with every layer at its minimum width); raise the budget or lower min_width")


@dataclass(frozen=True, eq=False)
class _Shortcuts:
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
def _shortcuts(arch: str, dataset: str | DatasetSpec, convcut: bool) -> _Shortcuts | None:
    """The switchable shortcuts of ``arch`` (``None`` where the count is monotone in the widths).

    Found from the counts alone: with all widths distinct, making ``w_i == w_j`` removes a
    projection exactly when ``(i, j)`` is a block's input/output pair. Cached: O(L^2) counts once.
    """
    if convcut or not get_arch(arch).has_shortcuts:
        return None
    count, upper = param_counter(arch, dataset), param_counter(arch, dataset, True)
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
    return _Shortcuts(count, upper, np.array(pairs), linked, np.cumsum(sizes) - sizes, sizes)


def _solve(
    alpha: np.ndarray, beta: np.ndarray, count: Callable[[list[int]], int], budget: float,
    round_to: int, min_width: int, x0: float, shortcuts: _Shortcuts | None = None,
) -> Scaled:
    """Closest count for ``w(x) = max(floor, round(alpha * x^beta))`` (every beta > 0), then nudges.

    Bisection on ln x (:func:`_bracket`) finds adjacent path points around the budget. Without
    ``shortcuts`` the count is non-decreasing in x, so the closer of the two is the closest on the
    whole path. With them it is not (a projection vanishes where two linked widths meet):
    :func:`_window` bounds where a closer point can lie and :func:`_scan` finds the closest one there.
    Single-layer nudges (:func:`_refine`) then close the last gap. The exact guarantee is stated in
    :func:`widths_for_budget`.
    """
    if round_to < 1 or min_width < 1:
        raise ValueError(f"round_to and min_width must be >= 1, got round_to={round_to}, min_width={min_width}")
    floor = -(-min_width // round_to) * round_to
    log_a = np.log(alpha)

    def widths(log_x: float) -> np.ndarray:
        w = np.exp(log_a + beta * log_x)
        return np.maximum(floor, round_to * np.rint(w / round_to)).astype(np.int64)

    _check_budget(budget, count([floor] * len(alpha)), "network of this law")
    bracket = _bracket(widths, count, budget, math.log(x0), round_to)
    lo, w_lo, p_lo, hi, w_hi, p_hi = bracket
    t, w, p = (lo, w_lo, p_lo) if budget - p_lo <= p_hi - budget else (lo, w_hi, p_hi)
    if p == budget:
        return Scaled(w.tolist(), int(p), int(round(budget)), 0.0)
    starts = [(t, w, p)]
    if shortcuts is not None and w.max() <= _MAX_WIDTH:
        # The window cannot reach past the point where the widest layer has _MAX_WIDTH channels.
        t_cap = float(((math.log(_MAX_WIDTH) - log_a) / beta).min())
        t_meet = _last_meeting(log_a.tobytes(), beta.tobytes(), shortcuts, round_to, floor)
        t_lo, t_hi = _window(widths, shortcuts, budget, abs(p - budget), lo, hi, floor, t_cap, t_meet, beta)
        closest = _scan(widths, shortcuts, budget, starts[0], bracket, (t_lo, t_hi), log_a, beta, round_to)
        # Greedy nudging can end farther from a closer start: keep the bisection's point as a second one.
        starts = [closest, *starts] if closest is not starts[0] else starts
    ends = [_refine(np.exp(log_a + beta * t), w, p, count, budget, round_to, floor) for t, w, p in starts]
    w, p = min(ends, key=lambda e: abs(e[1] - budget))
    if w.max() > _MAX_WIDTH:
        raise ValueError(f"budget {budget:,.0f} is beyond what this law can reach "
                         f"(a layer would exceed {_MAX_WIDTH:,} channels)")
    return Scaled(w.tolist(), int(p), int(round(budget)), (p - budget) / budget)


def _bracket(
    widths: Callable[[float], np.ndarray], count: Callable[[list[int]], int], budget: float, t0: float,
    round_to: int,
) -> tuple[float, np.ndarray, int, float, np.ndarray, int]:
    """Bisection on ln x: ``(lo, w_lo, p_lo, hi, w_hi, p_hi)`` with ``p_lo <= budget < p_hi`` and no
    path point between ``w_lo`` and ``w_hi`` (or both ends the same point, when it hits the budget).

    Where the count is not monotone this still ends at *a* crossing of the budget, not necessarily
    the closest one.
    """
    lo = hi = t0
    w_lo = w_hi = widths(lo)
    p_lo = p_hi = count(w_lo.tolist())
    while p_lo > budget:  # widen downwards; terminates: all widths reach the floor, whose count <= budget
        hi, w_hi, p_hi = lo, w_lo, p_lo
        lo -= 1.0
        w_lo = widths(lo)
        p_lo = count(w_lo.tolist())
    while p_hi <= budget:  # widen upwards
        if p_hi == budget:
            return hi, w_hi, p_hi, hi, w_hi, p_hi
        lo, w_lo, p_lo = hi, w_hi, p_hi
        hi += 1.0
        w_hi = widths(hi)
        p_hi = count(w_hi.tolist())
    # Bisect until adjacent: one channel apart (or float resolution, for simultaneous breakpoints).
    while np.abs(w_hi - w_lo).sum() > round_to and hi - lo > 1e-13 * max(1.0, abs(hi)):
        mid = 0.5 * (lo + hi)
        w_mid = widths(mid)
        p_mid = count(w_mid.tolist())
        if p_mid <= budget:
            lo, w_lo, p_lo = mid, w_mid, p_mid
        else:
            hi, w_hi, p_hi = mid, w_mid, p_mid
    return lo, w_lo, p_lo, hi, w_hi, p_hi


def _window(
    widths: Callable[[float], np.ndarray], sc: _Shortcuts, budget: float, err: float, lo: float, hi: float,
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
        density = float((beta * w).sum())  # width changes per unit of ln x (at round_to = 1)
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
def _last_meeting(log_a: bytes, beta: bytes, sc: _Shortcuts, round_to: int, floor: int) -> float:
    """An ln x beyond which no pair's rounded widths become equal (pairs of identical laws, always equal,
    never change; ``-inf`` if they are all such). ``log_a`` and ``beta``: float64 arrays' bytes.

    Rounded widths agree only while both sit at the floor or their real widths differ by less than
    ``round_to``. Past the crossing ``t0`` of two laws the gap is ``c0 e^(beta_f s) (1 - e^(-|dbeta| s))``
    at ``t0 + s`` (``c0``: the width at the crossing, ``beta_f``: the larger exponent), which exceeds
    ``round_to`` from the ``s`` returned here on.
    """
    log_a, beta, pairs = np.frombuffer(log_a), np.frombuffer(beta), sc.pairs
    la, lb, ba, bb = log_a[pairs[:, 0]], log_a[pairs[:, 1]], beta[pairs[:, 0]], beta[pairs[:, 1]]
    both_floor = np.minimum((math.log(floor + 0.5 * round_to) - la) / ba, (math.log(floor + 0.5 * round_to) - lb) / bb)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        db = ba - bb
        t0 = (lb - la) / db
        log_c0 = la + ba * t0
        ratio = round_to / np.exp(log_c0)
        s_wide = -np.log1p(-np.minimum(ratio, 0.5)) / np.abs(db)  # c0 > 2 round_to: the factor alone suffices
        s_narrow = np.maximum(1 / np.abs(db), (math.log(round_to / (1 - math.exp(-1))) - log_c0) / np.maximum(ba, bb))
        t_gap = t0 + np.where(ratio < 0.5, s_wide, s_narrow)
        same_beta = (math.log(round_to) - np.log(np.abs(np.exp(la) - np.exp(lb)))) / ba
    t_gap = np.where(db == 0, np.where(la == lb, -np.inf, same_beta), t_gap)
    return float(np.max(np.maximum(t_gap, np.where((db == 0) & (la == lb), -np.inf, both_floor))))


def _path_points(
    widths: Callable[[float], np.ndarray], log_a: np.ndarray, beta: np.ndarray, round_to: int,
    t_lo: float, t_hi: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every width vector on the rounded path between ``t_lo`` and ``t_hi``, in order of ln x.

    Returns:
        ``(W, edges)``: (L, M) widths, one column per point (layers whose widths change at the same
        x, to 1e-13, change in the same column), and (M + 1,) the ln x where each point's stretch
        starts, then ``t_hi``. ``None`` when that would be more than ``_MAX_SCAN`` changes.
    """
    w1, w2 = widths(t_lo), widths(t_hi)
    n = (w2 - w1) // round_to  # rounding steps each layer takes inside the window
    if n.sum() > _MAX_SCAN:
        return None
    layer = np.repeat(np.arange(len(n)), n)
    step = np.arange(len(layer)) - np.repeat(np.cumsum(n) - n, n)
    # Layer l moves from k to k + 1 rounding steps where alpha_l x^beta_l = (k + 1/2) round_to.
    t = (np.log((w1[layer] // round_to + step + 0.5) * round_to) - log_a[layer]) / beta[layer]
    order = np.argsort(t, kind="stable")
    t, layer = t[order], layer[order]
    w = np.zeros((len(n), len(t) + 1), dtype=np.int64)
    w[:, 0] = w1
    w[layer, np.arange(1, len(t) + 1)] = round_to
    np.cumsum(w, axis=1, out=w)
    keep = np.ones(len(t) + 1, dtype=bool)
    keep[1:-1] = t[1:] > t[:-1] + 1e-13 * np.maximum(1.0, np.abs(t[1:]))
    return w[:, keep], np.concatenate(([t_lo], t, [t_hi]))[np.append(keep, True)]


def _scan(
    widths: Callable[[float], np.ndarray], sc: _Shortcuts, budget: float, best: tuple, bracket: tuple,
    window: tuple[float, float], log_a: np.ndarray, beta: np.ndarray, round_to: int,
) -> tuple[float, np.ndarray, int]:
    """The closest point to ``budget`` on the path inside ``window`` (``best`` if none is closer).

    The count only drops where a shortcut-linked pair of widths becomes equal (its projection
    vanishes); between two such points it is non-decreasing, so each stretch needs its two ends and,
    if it crosses the budget, a bisection. The stretches holding the bracket's two adjacent ends
    need nothing more: they lie at or below ``p_lo`` up to it and above ``p_hi`` from it on.
    """
    points = _path_points(widths, log_a, beta, round_to, *window)
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


def _refine(
    x: np.ndarray, w: np.ndarray, p: int, count: Callable[[list[int]], int], budget: float,
    round_to: int, floor: int,
) -> tuple[np.ndarray, int]:
    """Nudge single layers by one rounding step, greedily, while that brings the count closer to budget.

    Adjacent points on the rounded curve can be a whole wide layer's channel apart (0.2-0.4% of the
    count on ResNet18/MobileNetV2, more where a shortcut switches between identity and projection);
    nudging narrow layers fills that gap. Every width stays within two rounding steps of the law's
    real-valued width ``x``, so the shape the law prescribes is kept.
    """
    lo_lim = np.maximum(floor, round_to * np.ceil(x / round_to - 2))
    hi_lim = round_to * np.floor(x / round_to + 2)
    for _ in range(2 * len(w)):
        best_err, best = abs(p - budget), None
        for i in range(len(w)):
            for step in (round_to, -round_to):
                v = w[i] + step
                if lo_lim[i] <= v <= hi_lim[i]:
                    cand = w.copy()
                    cand[i] = v
                    pc = count(cand.tolist())
                    if abs(pc - budget) < best_err:
                        best_err, best = abs(pc - budget), (cand, pc)
        if best is None:
            break
        w, p = best
    return w, p


def _sgd(
    law: PowerLaw, count: Callable[[list[int]], int], budget: float, round_to: int, min_width: int,
    lr: float, steps: int | None, tol: float | None, max_steps: int = 100_000,
) -> Scaled:
    """The paper's solver (Eq. 9-11) as released: tau_0 = budget, then
    ``tau <- tau - lr * (P - T) * sum_l alpha_l beta_l tau^(beta_l - 1)``, for ``steps`` steps or until
    ``|P - T| / T <= tol``."""
    a, b = np.asarray(law.alpha), np.asarray(law.beta)
    floor = -(-min_width // round_to) * round_to

    def widths(tau: float) -> list[int]:
        return np.maximum(floor, round_to * np.rint(a * tau**b / round_to)).astype(np.int64).tolist()

    _check_budget(budget, count([floor] * len(a)), "network of this law")
    tau = float(budget)
    for _ in range(steps if steps is not None else max_steps):
        p = count(widths(tau))
        if tol is not None and abs(p - budget) / budget <= tol:
            break
        tau = max(tau - lr * (p - budget) * float((a * b * tau ** (b - 1)).sum()), 1.0)
    w = widths(tau)
    p = count(w)
    return Scaled(w, int(p), int(round(budget)), (p - budget) / budget)


# The released code's step sizes and stopping rules per architecture.
_SGD_SETTINGS = {"vgg11": (50.0, 2000, None), "resnet18": (1.0, None, 0.009), "mobilenetv2": (1.0, None, 0.0005)}


def widths_for_budget(
    law: PowerLaw,
    arch: str,
    dataset: str | DatasetSpec,
    budget: float,
    round_to: int = 1,
    min_width: int = 1,
    method: str = "bracket",
    convcut: bool = False,
) -> Scaled:
    """Algorithm 3: the widths the power law gives for a parameter budget.

    ``method="bracket"`` searches the law's *path*, the vectors ``max(floor, round_to * rint(alpha *
    tau^beta / round_to))`` for tau > 0 (``floor``: ``min_width`` rounded up to ``round_to``). VGG11's
    count is non-decreasing in tau (so is any count with ``convcut``), so bisection in ln tau ends at
    the two path points around the budget, the closer being the closest on the path. ResNet18's and
    MobileNetV2's drop wherever the input and output widths of a stride-1 block meet (its projection
    shortcut exists only while they differ), so bisection may end at a crossing of the budget that is
    not the closest; for them the path is also scanned over a window around it, split where a
    shortcut vanishes into stretches on which the count is non-decreasing. Outside the window no
    point comes closer than the bisection's: below it even the count with every projection present
    is farther below the budget, above it even the count without the switchable ones (linked layers
    at their narrowest) is farther above, or no linked widths meet again and the count itself is.

    Guarantee: the path point kept is the closest to the budget of all (up to float resolution:
    layers whose widths change within 1e-13 in ln tau change together; widths up to 2^24 channels; a
    window of more than 65,536 vectors, far beyond the paper's networks, is not scanned). Single
    layers are then nudged by one rounding step, greedily, while the count gets strictly closer,
    within two rounding steps of the law's real-valued width (at the kept point; at the bisection's
    lower end for its points), also from the bisection's point when the scan kept another. The
    result is never farther from the budget than the closest path point, its best single nudge within
    those limits (and ``floor``), or nudging from the bisection's point alone.

    Args:
        law: the fitted power law (L layers of ``arch``).
        arch, dataset, convcut: the network to count parameters of.
        budget: target number of parameters.
        round_to: every width is a multiple of this (8 gives hardware-friendly widths).
        min_width: no layer narrower than this (rounded up to a multiple of ``round_to``).
        method: ``"bracket"`` (default, above) or ``"sgd"`` (the paper's gradient descent, for
            comparison).

    Returns:
        :class:`Scaled` with the widths, their exact count and the relative error.

    Raises:
        ValueError: a budget below the smallest network (every layer at ``min_width``) or beyond what
            the law reaches, a law that does not match ``arch``, a non-positive beta, or an unknown method.
    """
    n_layers = len(get_arch(arch).default_widths)
    if len(law.alpha) != n_layers:
        raise ValueError(f"the law has {len(law.alpha)} layers but {arch} has {n_layers}")
    count = param_counter(arch, dataset, convcut)
    if method == "sgd":
        lr, steps, tol = _SGD_SETTINGS[arch]
        return _sgd(law, count, budget, round_to, min_width, lr, steps, tol)
    if method != "bracket":
        raise ValueError(f"unknown method {method!r}; accepted: 'bracket', 'sgd'")
    beta = np.asarray(law.beta, dtype=float)
    if (beta <= 0).any() or not np.isfinite(beta).all():
        raise ValueError(f"the budget solver needs every beta > 0 (widths growing with size); got beta = "
                         f"{[round(b, 4) for b in law.beta]}")
    return _solve(np.asarray(law.alpha, dtype=float), beta, count, budget, round_to, min_width, x0=budget,
                  shortcuts=_shortcuts(arch, dataset, convcut))


def scale_widths(
    base_widths: Sequence[int],
    arch: str,
    dataset: str | DatasetSpec,
    budget: float,
    round_to: int = 1,
    min_width: int = 1,
    convcut: bool = False,
) -> Scaled:
    """One global factor ``s`` on ``base_widths`` (``round(w * s)``) solved to meet ``budget``.

    The MorphNet-style baseline: it keeps the proportions of ``base_widths`` (e.g. a network pruned
    to 50% of its channels) and only changes the overall size. Arguments, and the guarantee on the
    result (the path being ``round(base * s)`` over s > 0), as for :func:`widths_for_budget`.
    """
    base = np.asarray(base_widths, dtype=float)
    n_layers = len(get_arch(arch).default_widths)
    if base.shape != (n_layers,) or (base <= 0).any():
        raise ValueError(f"base_widths must be {n_layers} positive widths for {arch}, got {list(base_widths)}")
    count = param_counter(arch, dataset, convcut)
    return _solve(base, np.ones(n_layers), count, budget, round_to, min_width, x0=1.0,
                  shortcuts=_shortcuts(arch, dataset, convcut))


# --- the authors' published fits, shipped with the package --------------------------------------------

def published_fits() -> dict[str, dict]:
    """The authors' VGG11 architecture-descent fits (MIT), by name: ``vgg11-cifar10``, ``vgg11-cifar100``.

    Each entry has ``arch``, ``dataset`` and ``fits`` (15 dicts of alpha/beta, iteration 1..15).
    """
    from importlib.resources import files

    return json.loads(files("nslab.resources").joinpath("published_fits.json").read_text())["runs"]


def published_fit(name: str, iteration: int = 15) -> tuple[PowerLaw, str, str]:
    """One of the authors' fits: ``(law, arch, dataset)`` for run ``name`` at ``iteration`` (1-based)."""
    runs = published_fits()
    if name not in runs:
        raise ValueError(f"unknown published fit {name!r}; accepted: {', '.join(runs)}")
    run = runs[name]
    if not 1 <= iteration <= len(run["fits"]):
        raise ValueError(f"iteration must be in 1..{len(run['fits'])}, got {iteration}")
    f = run["fits"][iteration - 1]
    return PowerLaw(tuple(f["alpha"]), tuple(f["beta"])), run["arch"], run["dataset"]
