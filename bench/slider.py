"""Time the budget slider's callback (``nslab.views.explorer.on_budget``): the issue asks for < 100 ms per move.

Usage: ``python bench/slider.py [--moves 200]``. Prints one JSON object: per fit, the median, 95th
percentile and maximum milliseconds of one move over log-spaced budgets across the slider's whole range.
"""

import argparse
import json
import time

import numpy as np

from nslab.views import explorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=200)
    args = ap.parse_args()
    out = {}
    for name, fit in explorer.available_fits().items():
        for dataset in ("cifar10", "cifar100"):
            lo, default, hi = explorer.budget_range(fit.arch, dataset)
            fig = explorer.figure(fit, dataset, default)
            ms = []
            for b in np.geomspace(lo, hi, args.moves):
                t0 = time.perf_counter()
                explorer.on_budget(fig, fit, dataset, float(b))
                ms.append(1e3 * (time.perf_counter() - t0))
            out[f"{name} @ {dataset}"] = {"median_ms": round(float(np.median(ms)), 2),
                                          "p95_ms": round(float(np.percentile(ms, 95)), 2),
                                          "max_ms": round(max(ms), 2), "moves": args.moves}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
