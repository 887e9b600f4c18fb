"""How closely a search's configurations agree in shape with the authors' published VGG11 search.

Reads a finished search run directory (``--run DIR``), or runs (or resumes) the descent of a profile's
Figure-3 setting (VGG11 on CIFAR-10) with ``nslab.runs.studies.search`` under ``--out`` (the results folder:
the run lands in ``OUT/descent/<setting>_pe<P_e>_<key>``, where the notebooks of that profile find it too).
Then, per iteration, takes the configuration its fit generates at the paper's budget of ``--ratio`` (the
count of ``uniform_widths(arch, ratio)`` of the *default* network, whatever width the search started from)
and compares it with the configuration the authors' published fits (iterations 1 and 15) generate at the
same budget: Spearman rank correlation over layers and mean |log2| width ratio (``nslab.views.shape``).

Prints one JSON object on stdout (progress on stderr)::

    {"run_dir", "arch", "dataset", "settings" (the run's settings.json), "ratio", "target_params",
     "reference": {"name", "configurations": {"1": {"widths", "params"}, "15": {...}}},
     "iterations": [{"iteration", "widths", "params", "rows", "median_r2", "seconds", "pretrain_accuracy",
                     "vs_authors": {"1": {"spearman", "mean_abs_log2"}, "15": {...}}}, ...],
     "seconds_per_iteration",
     "goal": {"iteration": 1, "reference_iteration": 1, "spearman_min": 0.6, "mean_abs_log2_max": 0.5,
              "spearman", "mean_abs_log2", "met"}}

Usage::

    python bench/shape_agreement.py --run results/cpu/descent/vgg11_cifar10_pe1_<key>
    python bench/shape_agreement.py --profile cpu --data-root ~/data --out results/cpu [--iterations 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nslab.search.descent import SearchRun, load_run
from nslab.views import shape


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _num(x: float) -> float | None:
    """``x`` to 4 decimals; ``None`` for nan (a constant configuration has no rank order), so the JSON is valid."""
    return None if x != x else round(x, 4)


def run_search(profile: str, data_root: str | None, out: str, iterations: int | None) -> SearchRun:
    """Run or resume the profile's Figure-3 search (its ``descent`` setting) with results under ``out``."""
    from nslab import config
    from nslab.paths import Paths
    from nslab.runs import studies

    p = config.preset(profile)
    paths = Paths(Path(out) / "figures", Path(out), Path(data_root).expanduser() if data_root else None)
    _log(p.summary())
    return studies.search(p, p.descent, paths, iterations=iterations, progress=True)


def report(run: SearchRun, reference: str, reference_iterations: tuple[int, ...], ratio: float) -> dict:
    """The JSON object described in the module docstring (``run`` has at least one iteration)."""
    table = {k: shape.agreement(run, reference, k, ratio) for k in reference_iterations}
    first = table[reference_iterations[0]]
    its = []
    for i, it in enumerate(run.iterations):
        row = first[i]
        its.append({"iteration": it.index, "widths": row["widths"], "params": row["params"], "rows": len(it.widths),
                    "median_r2": float(np.median(it.law.r2)) if it.law.r2 else None,
                    "seconds": round(it.seconds, 1), "pretrain_accuracy": row["pretrain_accuracy"],
                    "vs_authors": {str(k): {"spearman": _num(t[i]["spearman"]),
                                            "mean_abs_log2": _num(t[i]["mean_abs_log2"])}
                                   for k, t in table.items()}})
    g = (table[1] if 1 in table else shape.agreement(run, reference, 1, ratio))[0]  # iteration 1 vs the authors' 1
    goal = {"iteration": 1, "reference_iteration": 1, "spearman_min": shape.GOAL_SPEARMAN,
            "mean_abs_log2_max": shape.GOAL_MEAN_ABS_LOG2, "spearman": _num(g["spearman"]),
            "mean_abs_log2": _num(g["mean_abs_log2"]), "met": shape.meets_goal(g)}
    return {"run_dir": str(run.run_dir), "arch": run.arch, "dataset": run.dataset, "settings": run.settings,
            "ratio": ratio, "target_params": first[0]["target_params"],
            "reference": {"name": reference, "configurations": {
                str(k): {"widths": t[0]["reference_widths"], "params": t[0]["reference_params"]}
                for k, t in table.items()}},
            "iterations": its,
            "seconds_per_iteration": round(float(np.mean([it.seconds for it in run.iterations])), 1),
            "goal": goal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a finished search run directory (holds settings.json and iter_XX/)")
    src.add_argument("--profile", help="run or resume this profile's Figure-3 search (smoke, cpu, paper)")
    ap.add_argument("--data-root", help="dataset root for --profile (default: $NSLAB_DATA or ~/.cache/nslab/data)")
    ap.add_argument("--out", help="results folder for --profile (the run directory goes under OUT/descent/)")
    ap.add_argument("--iterations", type=int, help="descent iterations (default: the profile's; with --run: "
                                                   "the first N finished ones)")
    ap.add_argument("--ratio", type=float, default=0.25, help="the paper's width ratio defining the budget")
    ap.add_argument("--reference", help="the authors' published search (default: <arch>-<dataset>)")
    ap.add_argument("--reference-iterations", type=int, nargs="+", default=[1, 15],
                    help="the authors' descent iterations compared with (the first is the goal's)")
    args = ap.parse_args()
    if args.profile and not args.out:
        ap.error("--profile needs --out (the results folder)")
    run = load_run(args.run, args.iterations) if args.run else run_search(args.profile, args.data_root, args.out,
                                                                          args.iterations)
    if not run.iterations:
        ap.error(f"{run.run_dir} holds no finished iteration")
    reference = args.reference or shape.published_name(run.arch, run.dataset)
    if reference is None:
        ap.error(f"the authors published no {run.arch} search on {run.dataset}; name one with --reference")
    out = report(run, reference, tuple(args.reference_iterations), args.ratio)
    for it in out["iterations"]:
        vs = ", ".join(f"it. {k}: rho {v['spearman']}, |log2| {v['mean_abs_log2']}"
                       for k, v in it["vs_authors"].items())
        _log(f"iteration {it['iteration']}: {it['widths']} ({it['seconds']:.0f} s) vs the authors' {vs}")
    g = out["goal"]
    _log(f"goal (iteration 1 vs the authors' iteration 1: Spearman >= "
         f"{g['spearman_min']} and mean |log2| <= {g['mean_abs_log2_max']}): {'met' if g['met'] else 'NOT met'}")
    print(json.dumps(out, allow_nan=False))


if __name__ == "__main__":
    main()
