"""A latency budget for a network without a per-layer table (a traced network): measured along the law's path.

A per-layer lookup table (:mod:`nslab.scaling.latency_table`) needs the network's layers as ops, which a traced
network does not declare. :func:`measure_path` instead times the whole network on the user's device at a few
points of the fitted law's path (the widths the law gives for ``points`` parameter budgets, log-spaced between
uniform ``low`` and ``high`` width), and predicts any width vector's latency from its exact MACs per image:
piecewise linear in ln MACs -> ln ms through the measured points (made non-decreasing, so the budget solver's
bisection is sound), extended beyond them along the end segments. What the prediction is worth is reported, not
assumed: :meth:`PathLatency.loo_errors` (each interior point predicted from the others) and
:meth:`PathLatency.check` (a solved network timed and set beside its prediction).

A :class:`PathLatency` is read by the budget solver exactly as a table is:
``widths_for_budget(law, arch, dataset, ms, metric="latency", latency=path)``; :func:`latency_model` picks the
table where the network has one and the path otherwise (``nslab generate --latency-ms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data import DatasetSpec, dataset_spec
from ..models import create_model, get_arch, macs, param_count, uniform_widths
from .latency import measure_latency
from .powerlaw import PowerLaw

__all__ = ["PathLatency", "latency_model", "measure_path"]


@dataclass(frozen=True)
class PathLatency:
    """Latencies measured along a law's path, and the prediction through them.

    Attributes:
        arch, dataset, convcut: the network they were measured on.
        widths: (points, L) the measured networks, in increasing MACs.
        macs: (points,) their exact MACs per image. ms: (points,) their mean forward time of one batch (ms).
        device, batch, threads: how they were timed (:func:`nslab.scaling.latency.measure_latency`).
    """

    arch: str
    dataset: str
    convcut: bool
    widths: tuple[tuple[int, ...], ...]
    macs: tuple[int, ...]
    ms: tuple[float, ...]
    device: str
    batch: int
    threads: int | None

    def _curve(self, skip: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        keep = [i for i in range(len(self.macs)) if i != skip]
        x = np.log(np.asarray(self.macs, float)[keep])
        y = np.maximum.accumulate(np.log(np.asarray(self.ms, float)[keep]))  # timing noise never makes it decrease
        return x, y

    def _predict(self, m: float, skip: int | None = None) -> float:
        x, y = self._curve(skip)
        t = float(np.log(m))
        if t < x[0] or t > x[-1]:  # beyond the measured points: the end segment's slope (never negative)
            i = (0, 1) if t < x[0] else (-2, -1)
            slope = max(0.0, (y[i[1]] - y[i[0]]) / (x[i[1]] - x[i[0]]))
            j = i[0] if t < x[0] else i[1]
            return float(np.exp(y[j] + slope * (t - x[j])))
        return float(np.exp(np.interp(t, x, y)))

    def predict(self, widths: Sequence[int]) -> float:
        """Predicted ms of one batch for ``widths`` (from their exact MACs)."""
        return self._predict(macs(self.arch, list(widths), self.dataset, self.convcut))

    def predictor(self, arch: str, dataset: str | DatasetSpec = "cifar10", convcut: bool = False):
        """``widths -> predicted ms`` (what the budget solver calls, as :meth:`LatencyTable.predictor`).

        Raises:
            ValueError: another network than the one measured.
        """
        name = dataset_spec(dataset).name if isinstance(dataset, str) else dataset.name
        if (arch, name, convcut) != (self.arch, self.dataset, self.convcut):
            raise ValueError(f"latency measured on {self.arch} {self.dataset} (convcut={self.convcut}), asked for "
                             f"{arch} {name} (convcut={convcut})")
        return self.predict

    def loo_errors(self) -> list[float]:
        """Relative error of predicting each interior measured point from the others (leave one out)."""
        return [abs(self._predict(self.macs[i], skip=i) / self.ms[i] - 1) for i in range(1, len(self.macs) - 1)]

    def check(self, widths: Sequence[int], warmup: int = 5, repeat: int = 20) -> dict:
        """Time the network at ``widths`` as the points were timed: ``{"predicted_ms", "measured_ms",
        "rel_error"}``."""
        measured = _time(self.arch, list(widths), self.dataset, self.convcut, self.device, self.batch, self.threads,
                         warmup, repeat)
        predicted = self.predict(widths)
        return {"predicted_ms": predicted, "measured_ms": measured, "rel_error": abs(predicted / measured - 1)}

    def report(self, widths: Sequence[int] | None = None) -> dict:
        """What a result records about the prediction: the points, the leave-one-out errors, and (with
        ``widths``) :meth:`check` of the solved network."""
        loo = self.loo_errors()
        out = {"latency_model": "path", "points": len(self.ms), "device": self.device, "batch": self.batch,
               "loo_max_rel_error": max(loo) if loo else None}
        return {**out, **(self.check(widths) if widths is not None else {})}


def _time(arch: str, widths: list[int], dataset: str, convcut: bool, device: str, batch: int, threads: int | None,
          warmup: int, repeat: int) -> float:
    spec = dataset_spec(dataset)
    model = create_model(arch, widths, spec, convcut)
    return measure_latency(model, (3, spec.image_size, spec.image_size), device, batch, warmup, repeat, threads)[0]


def measure_path(law: PowerLaw, arch: str, dataset: str, convcut: bool = False, device: str = "cpu",
                 batch: int = 1, threads: int | None = 1, points: int = 5, low: float = 0.25, high: float = 2.0,
                 warmup: int = 5, repeat: int = 20) -> PathLatency:
    """Time the law's networks at ``points`` parameter budgets log-spaced from uniform ``low`` to ``high`` width.

    Args:
        law: the fitted power law of ``arch``.
        arch, dataset, convcut: the network.
        device, batch, threads: where and how to time (:func:`nslab.scaling.latency.measure_latency`).
        points: how many networks to time (at least 3: two to interpolate, one to test the prediction).
        low, high: the range, as uniform width ratios of the default network (their parameter counts).
        warmup, repeat: untimed and timed passes per network.

    Raises:
        ValueError: fewer than 3 points, or ``low`` not below ``high``.
    """
    from .solver import widths_for_budget

    if points < 3 or not 0 < low < high:
        raise ValueError(f"measure_path needs points >= 3 and 0 < low < high, got points={points}, low={low}, "
                         f"high={high}")
    get_arch(arch)
    name = dataset_spec(dataset).name
    lo, hi = (param_count(arch, uniform_widths(arch, r), name, convcut) for r in (low, high))
    nets = [widths_for_budget(law, arch, name, b, convcut=convcut).widths for b in np.geomspace(lo, hi, points)]
    nets = sorted({tuple(w) for w in nets}, key=lambda w: macs(arch, list(w), name, convcut))
    ms = [_time(arch, list(w), name, convcut, device, batch, threads, warmup, repeat) for w in nets]
    return PathLatency(arch, name, convcut, tuple(nets), tuple(macs(arch, list(w), name, convcut) for w in nets),
                       tuple(ms), str(device), batch, threads)


def latency_model(law: PowerLaw, arch: str, dataset: str, convcut: bool = False, device: str = "cpu", batch: int = 1):
    """What predicts ``arch``'s latency: this device's per-layer table where the network declares its ops (the paper
    networks), else :func:`measure_path` along ``law``'s path (a traced network)."""
    if get_arch(arch).ops is not None:
        from .latency_table import default_table

        return default_table(device, batch=batch)
    return measure_path(law, arch, dataset, convcut, device, batch)
