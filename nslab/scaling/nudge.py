"""The budget solver's last step: nudging single layers (or pairs) of a path point closer to the budget.

Adjacent points of a rounded power law's path (:mod:`nslab.scaling.solver`) can be a whole wide layer's
rounding step apart; moving narrower layers by one step of their own fills that gap while keeping every
width near the law's real-valued one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_PAIR_TOL = 1e-3  # pairs of layers are nudged only while the error exceeds this (relative)


def _best_move(w, moves, lo_lim, hi_lim, count, budget, best_err):
    """The candidate (widths, count) of ``moves`` (each ``((layer, step), ...)``) strictly closest to
    ``budget`` within the limits and closer than ``best_err``; ``None`` if none is."""
    best = None
    for move in moves:
        if all(lo_lim[i] <= w[i] + s <= hi_lim[i] for i, s in move):
            cand = w.copy()
            for i, s in move:
                cand[i] += s
            pc = count(cand.tolist())
            if abs(pc - budget) < best_err:
                best_err, best = abs(pc - budget), (cand, pc)
    return best


def refine(
    x: np.ndarray, w: np.ndarray, p: float, count: Callable[[list[int]], float], budget: float,
    step: np.ndarray, floor: np.ndarray, moves: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Nudge single layers by one rounding step, greedily, while that brings the count closer to budget.

    Adjacent points on the rounded curve can be a whole wide layer's channel apart (0.2-0.4% of the
    count on ResNet18/MobileNetV2, more where a shortcut switches between identity and projection);
    nudging narrow layers fills that gap. Every width stays within two rounding steps of the law's
    real-valued width ``x``, so the shape the law prescribes is kept. With coarse rounding (``step``
    8: every step a few tenths of a percent) single nudges can stall above 0.1%; while the error is
    above ``_PAIR_TOL`` two layers are then nudged at once (one step each, either direction), whose
    differences are finer, and single nudges resume from there.

    Args:
        x: (L,) the law's real-valued widths at the point; ``w``: (L,) its rounded widths, ``p`` their count.
        step, floor: (L,) each layer's rounding step and least width (a multiple of its step).
        moves: (L,) bool, the layers that may move (a constant law's never do).

    Returns:
        ``(widths, count)``, never farther from ``budget`` than ``(w, p)``.
    """
    lo_lim = np.maximum(floor, step * np.ceil(x / step - 2))
    hi_lim = step * np.floor(x / step + 2)
    layers = np.flatnonzero(moves).tolist()
    steps = {i: (int(step[i]), -int(step[i])) for i in layers}
    singles = [((i, s),) for i in layers for s in steps[i]]
    pairs = [((i, si), (j, sj)) for i in layers for j in layers if j > i for si in steps[i] for sj in steps[j]]
    for _ in range(4 * len(w)):
        err = abs(p - budget)
        best = _best_move(w, singles, lo_lim, hi_lim, count, budget, err)
        if best is None and err > _PAIR_TOL * budget:
            best = _best_move(w, pairs, lo_lim, hi_lim, count, budget, err)
        if best is None:
            break
        w, p = best
    return w, p
