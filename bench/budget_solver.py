"""Median time of ``widths_for_budget`` (bracketing, the default) against the paper's gradient descent.

For every paper architecture/dataset and every paper ratio: the median wall time of each method over
repeated calls, the ratio of the two, and the worst relative error each reaches. VGG11 uses the
authors' published fit (iteration 15); ResNet18 and MobileNetV2 use a plausible law (default widths at
the default size, per-layer exponents drawn in [0.3, 0.8], seed 0), since no published fit exists.

    python bench/budget_solver.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nslab.models import default_widths, param_count, uniform_widths
from nslab.powerlaw import PowerLaw, published_fit, widths_for_budget

CASES = [("vgg11", "cifar10"), ("vgg11", "cifar100"), ("resnet18", "cifar100"), ("resnet18", "tinyimagenet"),
         ("mobilenetv2", "cifar100"), ("mobilenetv2", "tinyimagenet")]


def law_for(arch: str, dataset: str) -> PowerLaw:
    if arch == "vgg11":
        return published_fit(f"vgg11-{dataset}", 15)[0]
    rng = np.random.default_rng(0)
    d = np.array(default_widths(arch), float)
    beta = rng.uniform(0.3, 0.8, len(d))
    return PowerLaw(tuple(d / param_count(arch, None, dataset) ** beta), tuple(beta))


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    print(f"{'arch':12s} {'dataset':13s} {'bracket ms':>10s} {'sgd ms':>9s} {'sgd/bracket':>11s} "
          f"{'max |err| bracket':>17s} {'max |err| sgd':>13s}")
    for arch, dataset in CASES:
        law = law_for(arch, dataset)
        ratios = [0.25, 0.5, 0.75, 1.0] if dataset == "tinyimagenet" else [0.25 * k for k in range(1, 9)]
        targets = [param_count(arch, uniform_widths(arch, r), dataset) for r in ratios]
        t_b, t_s, e_b, e_s = [], [], [], []
        for t in targets:
            call = (law, arch, dataset, t)
            t_b.append(median_ms(lambda c=call: widths_for_budget(*c), args.repeat))
            t_s.append(median_ms(lambda c=call: widths_for_budget(*c, method="sgd"), max(3, args.repeat // 10)))
            e_b.append(abs(widths_for_budget(law, arch, dataset, t).rel_error))
            e_s.append(abs(widths_for_budget(law, arch, dataset, t, method="sgd").rel_error))
        b, s = statistics.median(t_b), statistics.median(t_s)
        print(f"{arch:12s} {dataset:13s} {b:10.3f} {s:9.2f} {s / b:10.0f}x {100 * max(e_b):16.4f}% "
              f"{100 * max(e_s):12.3f}%")


if __name__ == "__main__":
    main()
