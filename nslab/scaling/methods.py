"""The scaling methods compared in the paper, one registry: ``name -> fn(context, budget) -> widths``.

Every method turns a :class:`Budget` (parameters by default; MACs, latency or any metric of
:mod:`nslab.scaling.metrics` with its ``metric``) into a
width vector for the network of a :class:`Context` (architecture, dataset, the start network of the
search, and what the search found):

- ``uniform``: the paper's baseline, ``int(w * r)`` of the start network's widths for a ratio budget,
  else one global factor on them;
- ``uniform_convcut``: the same widths with a convolutional shortcut in every block;
- ``morphnet``: MorphNet (Taylor-FO): the start network pruned to ``keep`` of its channels, then one
  global factor to the budget;
- ``li``: Li et al.: one keep ratio of every layer's largest-L1 filters solved to the budget (its
  training, train-prune-fine-tune, is :func:`nslab.scaling.baselines.li_baseline`; parameter budgets only);
- ``neuralscale_it1`` / ``neuralscale_last``: Algorithm 3 with the fit of descent iteration 1 / the last.

The explorer (notebook 03), the command line and the benchmark all call :func:`get_method`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..models import param_counter, uniform_widths
from ..search.pruner import HALF_KEEP
from .metrics import PARAMS, Metric, get_metric
from .powerlaw import PowerLaw, published_fit
from .solver import counter, scale_widths, widths_for_budget

if TYPE_CHECKING:
    from .latency_table import LatencyTable

__all__ = ["METHODS", "Budget", "Context", "Method", "get_method", "keep_ratio_for_budget", "morphnet_base"]


@dataclass(frozen=True)
class Budget:
    """A budget: a target count in one metric.

    Attributes:
        target: the target, in ``metric``'s unit: parameters (the default), MACs of one image,
            milliseconds of one forward pass, ...
        ratio: the paper's uniform ratio r that defines it (the count of ``uniform_widths(arch,
            r * scale)``, see :class:`Context`), or ``None`` for a free budget (the explorer's slider).
        metric: ``"params"``, ``"macs"``, ``"latency"``, another registered metric's name, or a
            :class:`~nslab.scaling.metrics.Metric` (checked on construction).
    """

    target: float
    ratio: float | None = None
    metric: str | Metric = "params"

    def __post_init__(self) -> None:
        get_metric(self.metric)  # an unknown name fails here, naming the accepted ones


@dataclass(frozen=True)
class Context:
    """What a method may use: the network, the start network of the search and what the search found.

    Attributes:
        arch, dataset, convcut: the network.
        start_ratio: the search pruned ``uniform_widths(arch, start_ratio)`` (1.0: the default network).
        laws: the descent fits, iteration 1..N (empty: only ``uniform`` and ``li`` can run).
        morphnet_widths: (L,) MorphNet's pruned network when it is known: the widths iteration 1 of the
            search pruned the start network to when exactly ``N - int(0.5 N)`` of its N channels were left
            (:attr:`nslab.search.pruner.PruneResult.at_half`), or a standalone MorphNet run's result;
            ``None``: read it off ``laws[0]``.
        morphnet_keep: fraction of the start network's channels MorphNet prunes to (the paper: 0.5).
        scale: the width the paper's ratio 1 stands for: the budget of ratio r is the count of
            ``uniform_widths(arch, r * scale)`` (``None``: ``start_ratio``, a narrower grid for a narrower
            search; 1.0 keeps the paper's budgets whatever network the search started from).
        latency: the lookup table latency budgets are predicted with (``None``: this machine's CPU
            table, :func:`nslab.scaling.latency_table.default_table`, made on first use).
    """

    arch: str
    dataset: str
    convcut: bool = False
    start_ratio: float = 1.0
    laws: tuple[PowerLaw, ...] = ()
    morphnet_widths: tuple[int, ...] | None = None
    morphnet_keep: float = 0.5
    scale: float | None = None
    latency: LatencyTable | None = None

    @property
    def budget_scale(self) -> float:
        """The width of the paper's ratio 1 (:attr:`scale`, default :attr:`start_ratio`)."""
        return self.start_ratio if self.scale is None else self.scale

    @property
    def start(self) -> list[int]:
        """(L,) widths of the start network."""
        return uniform_widths(self.arch, self.start_ratio)

    def count(self, widths: Sequence[int], metric: str | Metric = "params") -> float:
        """``widths``' count in ``metric``: exact parameters or MACs, :attr:`latency`'s predicted ms, ..."""
        return counter(self.arch, self.dataset, self.convcut, metric, self.latency)([int(w) for w in widths])

    def budget(self, ratio: float, metric: str | Metric = "params") -> Budget:
        """The paper's budget of ratio ``ratio`` in ``metric``: the count of ``uniform_widths(arch, ratio *
        budget_scale)`` (parameters, MACs, predicted latency in ms, ...)."""
        return Budget(self.count(uniform_widths(self.arch, ratio * self.budget_scale), metric), ratio, metric)

    @classmethod
    def from_run(cls, run, morphnet_keep: float = 0.5, scale: float | None = None) -> Context:
        """The context of a :class:`nslab.search.descent.SearchRun` (its start, its fits, iteration 1's half point)."""
        its = run.iterations
        start_ratio = float(run.settings["search"]["start_ratio"])
        return cls(run.arch, run.dataset, run.convcut, start_ratio, tuple(i.law for i in its),
                   its[0].at_half if its and morphnet_keep == HALF_KEEP else None, morphnet_keep, scale)

    @classmethod
    def published(cls, name: str, iterations: Sequence[int] = tuple(range(1, 16))) -> Context:
        """The context of the authors' published search ``name`` (e.g. ``"vgg11-cifar10"``)."""
        laws = [published_fit(name, k) for k in iterations]
        _, arch, dataset = laws[0]
        return cls(arch, dataset, laws=tuple(law for law, _, _ in laws))


@dataclass(frozen=True)
class Method:
    """A scaling method.

    Attributes:
        name: registry name.
        label: display name in tables and plots (the paper's).
        fn: ``fn(context, budget) -> widths`` ((L,) ints).
        needs_search: it reads the descent's fits.
        convcut: its networks have a conv shortcut in every block.
        trains: ``"scratch"`` (from random initialisation) or ``"li"`` (train, prune, fine-tune).
        reads_iteration: the descent iteration (1-based) whose fit or trajectory gives its widths (-1: the
            last one searched); a grid runs it as soon as that iteration is on disk.
    """

    name: str
    label: str
    fn: Callable[[Context, Budget], list[int]]
    needs_search: bool = False
    convcut: bool = False
    trains: str = "scratch"
    reads_iteration: int = -1

    def __call__(self, ctx: Context, budget: Budget) -> list[int]:
        return [int(w) for w in self.fn(ctx, budget)]


def _uniform(ctx: Context, b: Budget) -> list[int]:
    if b.ratio is not None:  # the budget is this network's count, whatever the metric
        return uniform_widths(ctx.arch, b.ratio * ctx.budget_scale)
    return scale_widths(ctx.start, ctx.arch, ctx.dataset, b.target, convcut=ctx.convcut, metric=b.metric,
                        latency=ctx.latency).widths


def morphnet_base(ctx: Context) -> list[int]:
    """MorphNet (Taylor-FO)'s pruned network: the start network with ``morphnet_keep`` of its channels left.

    The paper (and the release's hard-coded bases) take the network at the moment pruning has left exactly
    ``N - int((1 - keep) * N)`` of the start network's N channels, layers never pruned at their start width.
    Iteration 1 of descent prunes the start network with the search's schedule and seed, so it passes
    through that network and keeps it (:attr:`Context.morphnet_widths`, for the paper's keep of 0.5). Without it
    (another keep, the authors' published fits, a search of an older nslab) the point of iteration 1's law
    where that many channels remain.
    """
    keep = ctx.morphnet_keep
    if not 0 < keep <= 1:
        raise ValueError(f"morphnet_keep must be in (0, 1], got {keep}")
    if ctx.morphnet_widths is not None:
        return [int(w) for w in ctx.morphnet_widths]
    if not ctx.laws:
        raise ValueError("MorphNet needs an architecture-descent run (iteration 1's half point or fit)")
    n = sum(ctx.start)
    return list(_law_at_channels(ctx.laws[0], n - int((1 - keep) * n)))


@functools.lru_cache(maxsize=64)
def _law_at_channels(law: PowerLaw, target: int) -> tuple[int, ...]:
    """Rounded widths of ``law`` where its channels sum to ``target`` (cached: the slider asks every move)."""
    lo, hi = 1.0, 1e15
    for _ in range(200):  # bisection on ln tau: total channels grow with tau (every beta >= 0, one > 0)
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if law.widths(mid).sum() < target else (lo, mid)
    return tuple(max(1, int(round(w))) for w in law.widths(hi))


def _morphnet(ctx: Context, b: Budget) -> list[int]:
    return scale_widths(morphnet_base(ctx), ctx.arch, ctx.dataset, b.target, convcut=ctx.convcut, metric=b.metric,
                        latency=ctx.latency).widths


def keep_ratio_for_budget(arch: str, budget: float, dataset: str = "cifar10", convcut: bool = False,
                          widths: Sequence[int] | None = None) -> tuple[float, list[int], int]:
    """One keep ratio q for every layer, ``w_l' = max(1, round(q * w_l))``, solved to meet ``budget``.

    The count is non-decreasing in q, so bisection brackets the budget; the closer of the two ends wins.

    Args:
        arch, dataset, convcut: the network.
        budget: target parameter count, at most that of ``widths``.
        widths: (L,) widths being pruned (default widths when ``None``).

    Returns:
        ``(q, widths, params)``.

    Raises:
        ValueError: a budget outside [count at one channel per layer, count of ``widths``].
    """
    base = np.asarray(uniform_widths(arch, 1.0) if widths is None else widths, dtype=float)
    count = param_counter(arch, dataset, convcut)

    def at(q: float) -> list[int]:
        return np.maximum(1, np.rint(q * base)).astype(np.int64).tolist()

    lo_p, hi_p = count(at(0.0)), count(at(1.0))
    if not (isinstance(budget, int | float) and math.isfinite(budget)) or not lo_p <= budget <= hi_p:
        raise ValueError(f"budget must lie between {lo_p:,} (one channel per layer) and {hi_p:,} (nothing "
                         f"pruned) parameters, got {budget!r}")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if count(at(mid)) <= budget else (lo, mid)
    q = lo if budget - count(at(lo)) <= count(at(hi)) - budget else hi
    return q, at(q), count(at(q))


def _li(ctx: Context, b: Budget) -> list[int]:
    if get_metric(b.metric) != PARAMS:
        raise ValueError(f"Li et al. solve parameter budgets only (metric 'params'), got metric "
                         f"{get_metric(b.metric).name!r}")
    return keep_ratio_for_budget(ctx.arch, b.target, ctx.dataset, ctx.convcut, ctx.start)[1]


def _neuralscale(iteration: int) -> Callable[[Context, Budget], list[int]]:
    def fn(ctx: Context, b: Budget) -> list[int]:
        if not ctx.laws:
            raise ValueError("NeuralScale needs an architecture-descent run (its fits)")
        law = ctx.laws[iteration - 1 if iteration > 0 else iteration]
        return widths_for_budget(law, ctx.arch, ctx.dataset, b.target, convcut=ctx.convcut, metric=b.metric,
                                 latency=ctx.latency).widths

    return fn


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("uniform", "Uniform Scale (Baseline)", _uniform),
    Method("li", "Li et al. (L1 pruning, fine-tuned)", _li, trains="li"),
    Method("morphnet", "MorphNet (Taylor-FO)", _morphnet, needs_search=True, reads_iteration=1),
    Method("uniform_convcut", "Uniform Scale (ConvCut)", _uniform, convcut=True),
    Method("neuralscale_it1", "NeuralScale (Iteration = 1)", _neuralscale(1), needs_search=True, reads_iteration=1),
    Method("neuralscale_last", "NeuralScale (last iteration)", _neuralscale(-1), needs_search=True),
)}


def get_method(name: str) -> Method:
    """The method ``name``; ``ValueError`` naming the accepted ones otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; accepted: {', '.join(METHODS)}") from None
