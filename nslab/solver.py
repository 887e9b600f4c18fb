"""Algorithm 3: the widths a per-layer power law, or one global factor, gives for a parameter budget.

:func:`widths_for_budget` searches the law's rounded path (``max(floor, round(alpha * tau^beta))``) for
the exact parameter count closest to the budget; :func:`scale_widths` does the same for one global
factor on fixed widths (the MorphNet-style baseline). Where a network's count is not monotone in its
widths (ResNet18's and MobileNetV2's switchable projection shortcuts) a window of the path is also
scanned (:mod:`nslab.pathscan`); :func:`widths_for_budget` states the guarantee. The paper's gradient
descent is kept as ``method="sgd"`` for comparison. The laws themselves (Algorithm 2) are in
:mod:`nslab.powerlaw`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import pathscan
from .data import DatasetSpec
from .models import get_arch, param_counter

if TYPE_CHECKING:  # annotations only: powerlaw re-exports this module's public names, so no runtime import
    from .powerlaw import PowerLaw


_MAX_WIDTH = 1 << 24  # no layer wider than this is "reachable": guards the upward bracket search


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


def _check_budget(budget: float, floor_params: int, what: str) -> None:
    if not (isinstance(budget, (int, float, np.integer, np.floating)) and math.isfinite(budget)) or budget <= 0:
        raise ValueError(f"budget must be a positive number of parameters, got {budget!r}")
    if budget < floor_params:
        raise ValueError(f"budget {budget:,.0f} is below the smallest {what} ({floor_params:,} parameters "
                         "with every layer at its minimum width); raise the budget or lower min_width")


def _solve(
    alpha: np.ndarray, beta: np.ndarray, count: Callable[[list[int]], int], budget: float,
    round_to: int, min_width: int, x0: float, shortcuts: pathscan.Shortcuts | None = None,
) -> Scaled:
    """Closest count for ``w(x) = max(floor, round(alpha * x^beta))`` (every beta > 0), then nudges.

    Bisection on ln x (:func:`_bracket`) finds adjacent path points around the budget. Without
    ``shortcuts`` the count is non-decreasing in x, so the closer of the two is the closest on the
    whole path. With them it is not (a projection vanishes where two linked widths meet):
    :func:`~nslab.pathscan.window` bounds where a closer point can lie and :func:`~nslab.pathscan.scan`
    finds the closest one there.
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
        t_meet = pathscan.last_meeting(log_a.tobytes(), beta.tobytes(), shortcuts, round_to, floor)
        t_lo, t_hi = pathscan.window(widths, shortcuts, budget, abs(p - budget), lo, hi, floor, t_cap, t_meet, beta)
        closest = pathscan.scan(widths, shortcuts, budget, starts[0], bracket, (t_lo, t_hi), log_a, beta, round_to)
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
                  shortcuts=pathscan.shortcuts(arch, dataset, convcut))


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
                  shortcuts=pathscan.shortcuts(arch, dataset, convcut))
