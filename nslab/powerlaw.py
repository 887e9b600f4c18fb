"""Algorithms 2 and 3: the per-layer power law ``w_l = alpha_l * tau^beta_l`` and the budget solver.

``tau`` is a parameter count: each trajectory row's exact :func:`~nslab.models.param_count`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import io
from .datasets import DatasetSpec
from .models import get_arch, param_count, param_counter

MIN_ROWS = 6  # the released code's threshold below which it silently fell back to uniform scaling
_MAX_WIDTH = 1 << 24  # no layer wider than this is "reachable": guards the upward bracket search


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


def _solve(
    alpha: np.ndarray, beta: np.ndarray, count: Callable[[list[int]], int], budget: float,
    round_to: int, min_width: int, x0: float,
) -> Scaled:
    """Closest achievable count for ``w(x) = max(floor, round(alpha * x^beta))``, bisecting on ln x.

    ``P(w(x))`` is a non-decreasing step function of x when every beta > 0, so bisection keeps the
    bracket ``P(lo) <= budget < P(hi)`` and stops once no width vector lies between its two ends.
    """
    if round_to < 1 or min_width < 1:
        raise ValueError(f"round_to and min_width must be >= 1, got round_to={round_to}, min_width={min_width}")
    floor = -(-min_width // round_to) * round_to
    log_a = np.log(alpha)

    def widths(log_x: float) -> np.ndarray:
        w = np.exp(log_a + beta * log_x)
        return np.maximum(floor, round_to * np.rint(w / round_to)).astype(np.int64)

    _check_budget(budget, count([floor] * len(alpha)), "network of this law")
    lo = hi = math.log(x0)
    w_lo = w_hi = widths(lo)
    p_lo = p_hi = count(w_lo.tolist())
    while p_lo > budget:  # widen downwards; terminates: all widths reach the floor, whose count <= budget
        hi, w_hi, p_hi = lo, w_lo, p_lo
        lo -= 1.0
        w_lo = widths(lo)
        p_lo = count(w_lo.tolist())
    while p_hi <= budget:  # widen upwards
        if p_hi == budget:
            return Scaled(w_hi.tolist(), int(p_hi), int(budget), 0.0)
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
    w, p = (w_lo, p_lo) if budget - p_lo <= p_hi - budget else (w_hi, p_hi)
    w, p = _refine(np.exp(log_a + beta * lo), w, p, count, budget, round_to, floor)
    if w.max() > _MAX_WIDTH:
        raise ValueError(f"budget {budget:,.0f} is beyond what this law can reach "
                         f"(a layer would exceed {_MAX_WIDTH:,} channels)")
    return Scaled(w.tolist(), int(p), int(round(budget)), (p - budget) / budget)


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

    Args:
        law: the fitted power law (L layers of ``arch``).
        arch, dataset, convcut: the network to count parameters of.
        budget: target number of parameters.
        round_to: every width is a multiple of this (8 gives hardware-friendly widths).
        min_width: no layer narrower than this (rounded up to a multiple of ``round_to``).
        method: ``"bracket"`` (default: bisection in ln tau over integer widths, returns the closest
            achievable count) or ``"sgd"`` (the paper's gradient descent, for comparison).

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
    return _solve(np.asarray(law.alpha, dtype=float), beta, count, budget, round_to, min_width, x0=budget)


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
    to 50% of its channels) and only changes the overall size. Arguments as for
    :func:`widths_for_budget`.
    """
    base = np.asarray(base_widths, dtype=float)
    n_layers = len(get_arch(arch).default_widths)
    if base.shape != (n_layers,) or (base <= 0).any():
        raise ValueError(f"base_widths must be {n_layers} positive widths for {arch}, got {list(base_widths)}")
    count = param_counter(arch, dataset, convcut)
    return _solve(base, np.ones(n_layers), count, budget, round_to, min_width, x0=1.0)


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
