"""How fast a CNN becomes an Architecture: tracing its coupled groups and compiling its counts, then one count.

For each torchvision network (built without weights, 32x32 input): the seconds of ``Architecture.from_module``
(build the network, probe one forward, Torch-Pruning's dependency graph, the Forms and polynomials, and the check
at a second width vector on the meta device), split into the trace alone and the check, and the microseconds of
one parameter count and one MAC count from the compiled polynomials (median of repeats), and the milliseconds of
one budget solve (``widths_for_budget``, the default bracketing solver, on a plausible law: the default widths at
the default count, exponents drawn in [0.3, 0.8]; median over budgets of uniform 0.5x and 2x). Goals (issue 19):
under 5 s per network on 2 cores (densenet121 included), under 50 us per count, a solve under 20 ms on a
120-group network (densenet121).

Usage: ``python bench/trace_speed.py [--models resnet18,densenet121] [--threads 2]`` (``--smoke``: resnet18 only,
for tests/test_bench.py; ``--all``: every torchvision classification model up to 100M parameters, an error
recorded instead of raised: the coverage survey). Prints one line per network and a JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torchvision  # imported before timing: the first import costs ~1.5 s, once per process

from nslab.device import torch_threads
from nslab.models import Architecture, param_count, register, uniform_widths
from nslab.models.traced import trace
from nslab.scaling.powerlaw import PowerLaw
from nslab.scaling.solver import widths_for_budget

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
          "convnext_tiny", "vgg11_bn"]


def count_us(arch: Architecture, repeats: int = 7, n: int = 500) -> tuple[float, float]:
    """Median microseconds of one params() and one macs() call at the default widths."""
    w, v = list(arch.default_widths), arch.variants[0]
    out = []
    for fn in (lambda: arch.params(w, 10, v, False), lambda: arch.macs(w, 10, v, False, 32)):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t) / n * 1e6)
        out.append(statistics.median(times))
    return out[0], out[1]


def solve_ms(arch: Architecture, repeats: int = 5) -> float:
    """Median milliseconds of one parameter-budget solve of ``arch`` (registered) on a plausible law."""
    d = np.array(arch.default_widths, float)
    beta = np.random.default_rng(0).uniform(0.3, 0.8, len(d))
    law = PowerLaw(tuple(d / param_count(arch.name, None, "cifar10") ** beta), tuple(beta))
    times = []
    for r in (0.5, 2.0):
        budget = param_count(arch.name, uniform_widths(arch.name, r), "cifar10")
        widths_for_budget(law, arch.name, "cifar10", budget)  # the first call compiles nothing, but warms caches
        for _ in range(repeats):
            t = time.perf_counter()
            widths_for_budget(law, arch.name, "cifar10", budget)
            times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def survey_names(max_params: float = 100e6) -> list[str]:
    """torchvision's classification models, without the ones over ``max_params`` parameters (by their weights'
    metadata; models without published weights are kept)."""
    out = []
    for name in torchvision.models.list_models(module=torchvision.models):
        weights = torchvision.models.get_model_weights(name)
        sizes = [w.meta.get("num_params", 0) for w in weights]
        if not sizes or min(sizes) <= max_params:
            out.append(name)
    return out


def measure(name: str) -> dict:
    factory = f"torchvision:{name}"
    t = time.perf_counter()
    traced = trace(factory, (3, 32, 32))
    trace_s = time.perf_counter() - t
    t = time.perf_counter()
    arch = Architecture.from_module(factory, (3, 32, 32), name=factory)
    total_s = time.perf_counter() - t
    params_us, macs_us = count_us(arch)
    register(arch, replace=True, check=False)
    return {"model": name, "groups": len(traced.groups), "trace_s": round(trace_s, 3),
            "from_module_s": round(total_s, 3), "params_us": round(params_us, 2), "macs_us": round(macs_us, 2),
            "solve_ms": round(solve_ms(arch), 2),
            "params": arch.params(list(arch.default_widths), 1000, "cifar", False),
            "macs": arch.macs(list(arch.default_widths), 1000, "cifar", False, 32)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated torchvision model names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="resnet18 only (seconds; tests)")
    ap.add_argument("--all", action="store_true", help="every torchvision classification model (minutes)")
    args = ap.parse_args()
    names = ["resnet18"] if args.smoke else survey_names() if args.all else args.models.split(",")
    rows, failed = [], {}
    with torch_threads(args.threads):
        for name in names:
            try:
                r = measure(name)
            except ValueError as e:
                if not args.all:
                    raise
                failed[name] = str(e)
                print(f"{name:20s} refused: {e}", flush=True)
                continue
            rows.append(r)
            print(f"{name:20s} {r['groups']:4d} groups  trace {r['trace_s']:6.2f} s  from_module "
                  f"{r['from_module_s']:6.2f} s  params {r['params_us']:6.1f} us  macs {r['macs_us']:6.1f} us  "
                  f"solve {r['solve_ms']:6.2f} ms",
                  flush=True)
    print(json.dumps({"threads": args.threads, "models": rows, "refused": failed,
                      "max_from_module_s": max(r["from_module_s"] for r in rows),
                      "max_count_us": max(max(r["params_us"], r["macs_us"]) for r in rows),
                      "max_solve_ms": max(r["solve_ms"] for r in rows)}))


if __name__ == "__main__":
    main()
