"""Predicted (per-layer lookup table) against measured end-to-end latency, on held-out configurations.

For VGG11, ResNet18 and MobileNetV2 (CIFAR-10 sizes by default): uniform networks at ratios whose widths
are mostly off the table's grid, randomly perturbed widths, and widths the budget solver generates for
a latency budget (``metric="latency"``: the authors' VGG11 law, a plausible law for the others). Each is
built, timed end to end with the same protocol as the table's entries, and compared with the table's
prediction; the table is filled on demand (its entries are cached, so a rerun times only networks).

Usage::

    python bench/latency_table.py [--device cpu] [--batch 1] [--threads 1] [--stat min] [--rounds 3] [--smoke]

Prints one JSON object: the settings, each architecture's calibration (measured over summed latency of
its reference network, uniform r = 0.5, which none of the configurations is), per configuration
``predicted_ms``, ``measured_ms`` and ``error`` ((predicted - measured) / measured), also for the
uncalibrated layer sum, then the median and maximum absolute errors.
``--stat min`` (the default here) summarises each timing by its minimum, the uncontended time on a
machine shared with other work; ``median`` suits a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from nslab.models import default_widths, param_count, uniform_widths
from nslab.scaling.latency_table import LatencyTable
from nslab.scaling.powerlaw import PowerLaw, published_fit
from nslab.scaling.solver import widths_for_budget

ARCHS = {"vgg11": "cifar10", "resnet18": "cifar10", "mobilenetv2": "cifar10"}


def law_for(arch: str, dataset: str) -> PowerLaw:
    """The authors' VGG11 law; for the others a plausible one (default widths at the default size)."""
    if arch == "vgg11":
        return published_fit(f"vgg11-{dataset}", 15)[0]
    beta = np.random.default_rng(0).uniform(0.3, 0.8, len(default_widths(arch)))
    d = np.array(default_widths(arch), float)
    return PowerLaw(tuple(d / param_count(arch, None, dataset) ** beta), tuple(beta))


def configs(arch: str, dataset: str, table: LatencyTable, smoke: bool = False) -> list[tuple[str, list[int]]]:
    """Held-out width vectors: off-grid uniform ratios, perturbed widths, latency-budget solutions (under
    ``smoke`` one narrow network of each kind)."""
    out = [(f"uniform r={r}", uniform_widths(arch, r)) for r in ((0.125,) if smoke else (0.375, 0.75, 1.1))]
    rng = np.random.default_rng(1)
    for k in range(1 if smoke else 2):
        base = np.array(uniform_widths(arch, 0.1 if smoke else 0.6))
        out.append((f"perturbed {k}", np.maximum(1, np.rint(base * rng.lognormal(0, 0.3, base.shape))).astype(int)
                    .tolist()))
    law = law_for(arch, dataset)
    for r in (0.125,) if smoke else (0.5, 1.0):
        budget = table.predict(arch, uniform_widths(arch, r), dataset)
        s = widths_for_budget(law, arch, dataset, budget, metric="latency", latency=table)
        out.append((f"latency solve at uniform r={r}'s {budget:.3g} ms", s.widths))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stat", default="min", choices=["min", "median"])
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per table entry and per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --repeat end-to-end calls per network")
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated subset of " + ",".join(ARCHS))
    ap.add_argument("--cache-dir", help="table cache directory (default: nslab's cache)")
    ap.add_argument("--smoke", action="store_true", help="VGG11 only, 2 timed calls, 1 round (seconds; tests)")
    args = ap.parse_args()
    if args.smoke:
        args.archs, args.repeat, args.rounds = "vgg11", 2, 1
    t0 = time.perf_counter()
    table = LatencyTable(args.device, args.dtype, args.batch, args.threads, repeat=args.repeat, stat=args.stat,
                         cache_dir=args.cache_dir)
    rows = []
    for arch in args.archs.split(","):
        dataset = ARCHS[arch]
        for name, widths in configs(arch, dataset, table, args.smoke):
            pred = table.predict(arch, widths, dataset)
            raw = table.layer_sum(arch, widths, dataset)
            meas = table.measure_network(arch, widths, dataset, rounds=args.rounds)
            rows.append({"arch": arch, "dataset": dataset, "config": name, "widths": [int(w) for w in widths],
                         "predicted_ms": round(pred, 4), "measured_ms": round(meas, 4),
                         "error": round((pred - meas) / meas, 4), "layer_sum_ms": round(raw, 4),
                         "layer_sum_error": round((raw - meas) / meas, 4)})
            print(f"{arch:12s} {name:40s} predicted {pred:9.3f} ms  measured {meas:9.3f} ms  "
                  f"{100 * (pred - meas) / meas:+6.1f}%", file=sys.stderr, flush=True)
    errors = np.abs([r["error"] for r in rows])
    raw = np.abs([r["layer_sum_error"] for r in rows])
    calibration = {a: round(table.calibration(a, ARCHS[a]), 4) for a in args.archs.split(",")}
    print(json.dumps({"settings": table.settings, "table": str(table.path), "entries": len(table.entries),
                      "entries_timed_now": table.measured, "calibration": calibration, "configs": rows,
                      "median_abs_error": round(float(np.median(errors)), 4),
                      "max_abs_error": round(float(np.max(errors)), 4),
                      "layer_sum_median_abs_error": round(float(np.median(raw)), 4),
                      "layer_sum_max_abs_error": round(float(np.max(raw)), 4),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
