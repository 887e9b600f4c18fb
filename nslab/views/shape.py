"""How closely a search's configurations agree in *shape* with the authors' published ones.

Two numbers per configuration, both against the authors' configuration at the same parameter budget:

- :func:`spearman`: the rank correlation of the widths over layers (which layers are wide, which narrow),
  1 for the same order, -1 for the reverse;
- :func:`mean_abs_log2`: the mean over layers of ``|log2(a_l / b_l)|`` (0: equal widths; 1: every layer
  off by a factor of two).

:func:`agreement` computes both for every iteration of a :class:`~nslab.search.descent.SearchRun` at the paper's
budget of a ratio; :func:`published_configurations` gives the authors' configurations at a set of budgets
(Figure 3's hollow markers). The goal of a CPU-scale search (:data:`GOAL_SPEARMAN`,
:data:`GOAL_MEAN_ABS_LOG2`) is checked by :func:`meets_goal`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..models import param_count, uniform_widths
from ..scaling.powerlaw import published_fit, published_fits
from ..scaling.solver import widths_for_budget

__all__ = ["GOAL_MEAN_ABS_LOG2", "GOAL_SPEARMAN", "agreement", "mean_abs_log2", "meets_goal", "published_name",
           "published_configurations", "spearman"]

GOAL_SPEARMAN = 0.6
"""A CPU-scale search agrees with the authors when its iteration 1 has at least this rank correlation..."""
GOAL_MEAN_ABS_LOG2 = 0.5
"""...and at most this mean |log2| width ratio (about 1.41x per layer) against the authors' iteration 1."""


def _vectors(a: Sequence[float], b: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"{what} needs two vectors of the same length >= 2, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{what} needs finite values")
    return x, y


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, group = np.unique(x, return_inverse=True)
    return (np.bincount(group, weights=ranks) / np.bincount(group))[group]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (ties get average ranks): the Pearson correlation of ranks.

    Returns:
        A value in [-1, 1]; ``nan`` when either vector is constant (no order to correlate).

    Raises:
        ValueError: vectors of different lengths, shorter than 2, or not finite.
    """
    x, y = _vectors(a, b, "spearman")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def mean_abs_log2(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean over layers of ``|log2(a_l / b_l)|``: 0 for equal widths, 1 when every layer is off by 2x.

    Raises:
        ValueError: vectors of different lengths, shorter than 2, not finite or not positive.
    """
    x, y = _vectors(a, b, "mean_abs_log2")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("mean_abs_log2 needs positive widths")
    return float(np.mean(np.abs(np.log2(x / y))))


def meets_goal(row: Mapping) -> bool:
    """Whether an :func:`agreement` row reaches the goal: Spearman >= 0.6 and mean |log2| <= 0.5."""
    rho, m = row["spearman"], row["mean_abs_log2"]
    return bool(rho == rho and rho >= GOAL_SPEARMAN and m <= GOAL_MEAN_ABS_LOG2)


def published_name(arch: str, dataset: str) -> str | None:
    """The name of the authors' published search of ``arch`` on ``dataset`` (``"vgg11-cifar10"``), or ``None``."""
    name = f"{arch}-{dataset}"
    return name if name in published_fits() else None


def published_configurations(arch: str, dataset: str, budgets: Mapping[str, float],
                             iterations: Sequence[int] = (1, 15), convcut: bool = False
                             ) -> dict[str, dict[str, list[int]]] | None:
    """The authors' configurations at each budget, for :func:`nslab.views.plots.configurations_figure`'s ``reference``.

    Args:
        arch, dataset, convcut: the network (its parameter count).
        budgets: ``{panel title: parameters}``.
        iterations: the authors' descent iterations (1..15) whose fits generate the widths.

    Returns:
        ``{panel title: {"authors' iteration k": widths}}``, or ``None`` when the authors published no
        search of ``arch`` on ``dataset`` (only VGG11 on CIFAR-10 and CIFAR-100).
    """
    name = published_name(arch, dataset)
    if name is None:
        return None
    laws = {k: published_fit(name, k)[0] for k in iterations}
    return {title: {f"authors' iteration {k}": widths_for_budget(law, arch, dataset, b, convcut=convcut).widths
                    for k, law in laws.items()}
            for title, b in budgets.items()}


def agreement(run, reference_name: str = "vgg11-cifar10", reference_iteration: int = 1, ratio: float = 0.25,
              start_ratio: float = 1.0) -> list[dict]:
    """Per iteration of ``run``: its configuration at the paper's budget of ``ratio`` against the authors'.

    The budget is the count of ``uniform_widths(arch, ratio * start_ratio)``. With the default
    ``start_ratio=1.0`` that is the *default* network's (VGG11 at 0.25: 579,786 parameters), whatever width
    the search started from, so a narrow CPU search is compared with the authors' full-width one at the
    budget the paper reports.

    Args:
        run: a :class:`nslab.search.descent.SearchRun` (of the reference's architecture).
        reference_name: the authors' published search (:func:`nslab.scaling.powerlaw.published_fits`).
        reference_iteration: which of its fits (1..15) generates the reference configuration.
        ratio: the paper's width ratio that defines the budget.
        start_ratio: scales the network the budget is counted from (1.0: the default network).

    Returns:
        One dict per iteration: ``iteration``, ``ratio``, ``target_params``, ``params``, ``widths`` (the
        run's configuration), ``reference`` (name), ``reference_iteration``, ``reference_params``,
        ``reference_widths``, ``spearman``, ``mean_abs_log2`` and ``pretrain_accuracy`` (%, from the
        iteration's summary; ``None`` if it has none).

    Raises:
        ValueError: an unknown reference, or a run of another architecture than the reference's.
    """
    law, ref_arch, _ = published_fit(reference_name, reference_iteration)
    if run.arch != ref_arch:
        raise ValueError(f"the reference {reference_name!r} is a {ref_arch} search; this run searched {run.arch}")
    budget = param_count(run.arch, uniform_widths(run.arch, ratio * start_ratio), run.dataset, run.convcut)
    ref = widths_for_budget(law, run.arch, run.dataset, budget, convcut=run.convcut)
    rows = []
    for it in run.iterations:
        s = run.widths(it.index, budget)
        rows.append({"iteration": it.index, "ratio": ratio, "target_params": s.target, "params": s.params,
                     "widths": list(s.widths), "reference": reference_name,
                     "reference_iteration": reference_iteration, "reference_params": ref.params,
                     "reference_widths": list(ref.widths), "spearman": spearman(s.widths, ref.widths),
                     "mean_abs_log2": mean_abs_log2(s.widths, ref.widths),
                     "pretrain_accuracy": it.summary.get("pretrain_accuracy")})
    return rows
