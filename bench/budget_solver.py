"""Median time of ``widths_for_budget`` (bracketing, the default) against the paper's gradient descent,
and of a MACs budget against a parameter budget.

For every paper architecture/dataset and every paper ratio: the median wall time of each method over
repeated calls, the ratio of the two, and the worst relative error each reaches; then the same law solved
for the MACs of the uniform network of each ratio (``metric="macs"``), its time against the parameter
solve's (measured in the same run) and its worst error. VGG11 uses the
authors' published fit (iteration 15); ResNet18 and MobileNetV2 use a plausible law (default widths at
the default size, per-layer exponents drawn in [0.3, 0.8], seed 0), since no published fit exists.

A second table covers budgets where the count is not monotone in tau: the same ResNet18/MobileNetV2 laws
with one block's input and output exponents set to 0.35 and 0.65, so those two widths cross at the default
size (where the block's projection shortcut vanishes), and 41 budgets within 3% of the default count.

    python bench/budget_solver.py [--repeat 30] [--macs-only] [--smoke]

``--smoke``: one network per table and two ratios, one call each (seconds; tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nslab.models import default_widths, macs, param_count, uniform_widths
from nslab.scaling.powerlaw import PowerLaw, published_fit
from nslab.scaling.solver import widths_for_budget

CASES = [("vgg11", "cifar10"), ("vgg11", "cifar100"), ("resnet18", "cifar100"), ("resnet18", "tinyimagenet"),
         ("mobilenetv2", "cifar100"), ("mobilenetv2", "tinyimagenet")]
# (arch, dataset, input layer, output layer) of a stride-1 block whose widths are equal by default.
CROSSING = [("resnet18", "cifar100", 14, 16), ("mobilenetv2", "cifar100", 12, 13)]


def law_for(arch: str, dataset: str, crossing: tuple[int, int] | None = None) -> PowerLaw:
    if arch == "vgg11":
        return published_fit(f"vgg11-{dataset}", 15)[0]
    rng = np.random.default_rng(0)
    d = np.array(default_widths(arch), float)
    beta = rng.uniform(0.3, 0.8, len(d))
    if crossing is not None:
        beta[list(crossing)] = 0.35, 0.65
    return PowerLaw(tuple(d / param_count(arch, None, dataset) ** beta), tuple(beta))


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def macs_row(law: PowerLaw, arch: str, dataset: str, ratios: list[float], repeat: int, round_to: int = 1) -> str:
    """Median time of the parameter and MACs solves at each ratio's uniform count, their ratio, worst errors."""
    t_p, t_m, e_p, e_m = [], [], [], []
    for r in ratios:
        u = uniform_widths(arch, r)
        p_call = (law, arch, dataset, param_count(arch, u, dataset))
        m_call = (law, arch, dataset, macs(arch, u, dataset))
        try:
            sp = widths_for_budget(*p_call, round_to=round_to)
            sm = widths_for_budget(*m_call, round_to=round_to, metric="macs")
        except ValueError:  # below the smallest network at this rounding (every layer at round_to)
            continue
        t_p.append(median_ms(lambda c=p_call: widths_for_budget(*c, round_to=round_to), repeat))
        t_m.append(median_ms(lambda c=m_call: widths_for_budget(*c, round_to=round_to, metric="macs"), repeat))
        e_p.append(abs(sp.rel_error))
        e_m.append(abs(sm.rel_error))
    p, m = statistics.median(t_p), statistics.median(t_m)
    return (f"{arch:12s} {dataset:13s} {round_to:8d} {p:9.3f} {m:8.3f} {m / p:11.2f} {100 * max(e_p):14.4f}% "
            f"{100 * max(e_m):13.4f}%")


def row(law: PowerLaw, arch: str, dataset: str, targets: list[int], repeat: int) -> str:
    """Median times over ``targets`` and worst relative errors of both methods, as one table row."""
    t_b, t_s, e_b, e_s = [], [], [], []
    for t in targets:
        call = (law, arch, dataset, t)
        widths_for_budget(*call)  # warm the per-architecture setup out of the timings
        t_b.append(median_ms(lambda c=call: widths_for_budget(*c), repeat))
        t_s.append(median_ms(lambda c=call: widths_for_budget(*c, method="sgd"), max(3, repeat // 10)))
        e_b.append(abs(widths_for_budget(law, arch, dataset, t).rel_error))
        e_s.append(abs(widths_for_budget(law, arch, dataset, t, method="sgd").rel_error))
    b, s = statistics.median(t_b), statistics.median(t_s)
    return (f"{arch:12s} {dataset:13s} {b:10.3f} {s:9.2f} {s / b:10.0f}x {100 * max(e_b):16.4f}% "
            f"{100 * max(e_s):12.3f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--macs-only", action="store_true", help="only the MACs-against-parameters table")
    ap.add_argument("--smoke", action="store_true", help="one network per table, two ratios, one call (seconds)")
    args = ap.parse_args()
    repeat = 1 if args.smoke else args.repeat
    if args.macs_only:
        return macs_table(repeat, args.smoke)
    header = (f"{'arch':12s} {'dataset':13s} {'bracket ms':>10s} {'sgd ms':>9s} {'sgd/bracket':>11s} "
              f"{'max |err| bracket':>17s} {'max |err| sgd':>13s}")
    print(header)
    for arch, dataset in CASES[:1] if args.smoke else CASES:
        targets = [param_count(arch, uniform_widths(arch, r), dataset) for r in ratios_of(dataset, args.smoke)]
        print(row(law_for(arch, dataset), arch, dataset, targets, repeat))
    print("\nwhere the count is not monotone (two widths of a block cross at the default size):")
    print(header)
    for arch, dataset, i, j in CROSSING[:1] if args.smoke else CROSSING:
        p0 = param_count(arch, None, dataset)
        targets = np.linspace(0.97 * p0, 1.03 * p0, 3 if args.smoke else 41).astype(int).tolist()
        print(row(law_for(arch, dataset, (i, j)), arch, dataset, targets, max(1 if args.smoke else 3, repeat // 3)))
    macs_table(repeat, args.smoke)


def ratios_of(dataset: str, smoke: bool = False) -> list[float]:
    """The paper's ratios of a dataset's table (two of them under ``--smoke``)."""
    if smoke:
        return [0.25, 0.5]
    return [0.25, 0.5, 0.75, 1.0] if dataset == "tinyimagenet" else [0.25 * k for k in range(1, 9)]


def macs_table(repeat: int, smoke: bool = False) -> None:
    print("\nMACs budgets (the MACs of uniform r) against parameter budgets, same laws, same run:")
    print(f"{'arch':12s} {'dataset':13s} {'round_to':>8s} {'params ms':>9s} {'macs ms':>8s} {'macs/params':>11s} "
          f"{'max |err| params':>15s} {'max |err| macs':>14s}")
    cases = [*CASES, ("resnet18", "cifar10"), ("mobilenetv2", "cifar10")]
    for round_to in (1,) if smoke else (1, 8):
        for arch, dataset in cases[-1:] if smoke else cases:
            print(macs_row(law_for(arch, dataset), arch, dataset, ratios_of(dataset, smoke), repeat, round_to))


if __name__ == "__main__":
    main()
