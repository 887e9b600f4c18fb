"""Algorithm 2: the per-layer power law ``w_l = alpha_l * tau^beta_l``, fitted to a pruning trajectory.

``tau`` is a parameter count: each trajectory row's exact :func:`~nslab.models.param_count`. Also here:
reading and writing fits, and the authors' published fits. The budget solver (Algorithm 3), which
uses these laws, is :mod:`nslab.scaling.solver` (``widths_for_budget``, ``scale_widths``, ``Scaled``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import io
from ..data import DatasetSpec
from ..models import get_arch, param_count

MIN_ROWS = 6  # the released code's threshold below which it silently fell back to uniform scaling


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


def fit_power_law(
    trajectory: np.ndarray | Sequence[Sequence[int]] | str | os.PathLike,
    arch: str,
    dataset: str | DatasetSpec = "cifar10",
    convcut: bool = False,
    onset: bool | None = None,
) -> PowerLaw:
    """Fit ``ln w_l = ln alpha_l + beta_l ln tau`` per layer by least squares (Eq. 5-8).

    Args:
        trajectory: (rows, L) integer widths in pruning order (row sums strictly decreasing), or the
            path of a trajectory CSV (nslab's, with header, or the authors' header-less one).
        arch, dataset, convcut: the network the trajectory belongs to; tau of each row is its exact
            parameter count.
        onset: fit each layer from its onset only: the rows from the last one still at the first row's width
            (where it starts to shrink; at least the last :data:`MIN_ROWS` rows), so that a layer the search left
            whole for a while is not fitted on a plateau. ``None``: the architecture's
            :attr:`~nslab.models.Architecture.fit_from_onset` (traced networks; the paper's rule otherwise:
            every row for every layer).

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
    if not (get_arch(arch).fit_from_onset if onset is None else onset):
        return fit_log_linear(tau, w)
    laws = []
    for col in w.T:  # each layer from its onset: its last row at the first row's width
        first = min(int(np.flatnonzero(col == col[0])[-1]), len(col) - MIN_ROWS)
        laws.append(fit_log_linear(tau[first:], col[first:, None]))
    return PowerLaw(tuple(x.alpha[0] for x in laws), tuple(x.beta[0] for x in laws), tuple(x.r2[0] for x in laws),
                    len(tau))


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
    # A layer that never changed is fitted exactly by beta = 0 (least squares leaves -1e-17 or -0.0, which the
    # solver refuses, and a mean that rounds off the constant): beta = 0, alpha its width, R^2 = 1 rather than 0/0.
    const = y.max(axis=0) == y.min(axis=0)
    coef[:, const] = np.stack([np.zeros(y.shape[1]), y[0]])[:, const]
    ss_res = ((y - a @ coef) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(const, 1.0, 1 - ss_res / np.where(const, 1.0, ss_tot))
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
