"""The last cell of every notebook: what its numbers mean, in sentences computed from the results.

Each function returns a :class:`Conclusion`: a string that JupyterLab renders as Markdown (and papermill
stores as ``text/markdown``), so a notebook ends with ``conclusions.benchmark(done)`` and never types a
number. Statements follow the honesty rules of the tables: a difference is given with its spread and the
number of seeds; one seed says so; a profile that is not the paper's says what was run; runs that only
exercise the code path (:func:`nslab.views.scope.exercise`) say so first, and what they measured is
reported, never read as the paper's finding holding or failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..models import macs
from ..scaling.metrics import get_metric
from . import scope, shape
from .tables import label

__all__ = ["Conclusion", "benchmark", "budget", "convcut", "descent", "difference", "equal_compute", "power_law",
           "pretraining", "pruning", "your_network"]


class Conclusion(str):
    """A Markdown string (``_repr_markdown_``): rendered in a notebook, plain text everywhere else."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def __add__(self, other: str) -> Conclusion:  # two conclusions read as one list
        return Conclusion(f"{self}\n{other}")


def _lines(lines: Sequence[str]) -> Conclusion:
    return Conclusion("\n".join(f"- {s}" for s in lines if s))


def pruning(it) -> Conclusion:
    """Notebook 01: what pruning iteration ``it`` (:class:`nslab.search.descent.Iteration`) kept, layer by layer."""
    start = np.asarray(it.start, dtype=float)
    last = np.asarray(it.widths[-1], dtype=float)
    kept = last / start
    hi, lo = int(np.argmax(kept)), int(np.argmin(kept))
    acc = it.summary.get("pretrain_accuracy")
    return _lines([
        f"Iteration {it.index} pruned {int(start.sum()):,} channels down to {int(last.sum()):,} "
        f"({100 * last.sum() / start.sum():.1f}%) and recorded {len(it.params)} rows, from "
        f"{int(it.params[0]):,} to {int(it.params[-1]):,} parameters"
        + (f", starting from a network pre-trained to {acc:.1f}% test accuracy." if acc is not None else "."),
        f"The global Taylor ranking kept layer {hi + 1} most ({100 * kept[hi]:.0f}% of its "
        f"{int(start[hi])} filters) and layer {lo + 1} least ({100 * kept[lo]:.0f}% of {int(start[lo])}): "
        "the layers are not pruned uniformly, which is what Algorithm 2 fits.",
    ])


def power_law(panels: Sequence) -> Conclusion:
    """Notebook 02: how well each panel's law fits and which layers grow fastest.

    Args:
        panels: :class:`~nslab.views.plots.PowerLawPanel` s (a title and a
            :class:`~nslab.scaling.powerlaw.PowerLaw` each).
    """
    lines = []
    for p in panels:
        r2, beta = np.asarray(p.law.r2), np.asarray(p.law.beta)
        worst, fast, slow = int(np.argmin(r2)), int(np.argmax(beta)), int(np.argmin(beta))
        lines.append(
            f"{p.title}: the power law fits every layer with R² ≥ {r2[worst]:.3f} (layer {worst + 1}; median "
            f"{np.median(r2):.3f}) over {p.law.rows} rows. β runs from {beta[slow]:.3f} (layer {slow + 1}) to "
            f"{beta[fast]:.3f} (layer {fast + 1}): doubling the budget widens layer {fast + 1} ×{2 ** beta[fast]:.2f} "
            f"and layer {slow + 1} ×{2 ** beta[slow]:.2f}, where uniform scaling widens every layer alike.")
    return _lines(lines)


def budget(rows: Sequence[Mapping[str, Any]], arch: str, dataset: str, ratio: float = 0.25) -> Conclusion:
    """Notebook 03: the configurations at ``ratio`` (rows of :func:`nslab.views.explorer.ratio_table`)."""
    at = {r["method"]: r for r in rows if math.isclose(r["ratio"], ratio)}
    if "neuralscale" not in at or "uniform" not in at:
        return Conclusion(f"No configuration at r = {ratio:g} in this table.")
    ns, un = at["neuralscale"], at["uniform"]
    worst = max(abs(r["rel_error_pct"]) for r in rows if r["method"] == "neuralscale")
    m_ns, m_un = macs(arch, ns["widths"], dataset), macs(arch, un["widths"], dataset)
    ratios = np.asarray(ns["widths"], dtype=float) / np.asarray(un["widths"], dtype=float)
    wide, narrow = int(np.argmax(ratios)), int(np.argmin(ratios))
    return _lines([
        f"At r = {ratio:g} ({ns['target_params']:,} parameters) the power law gives {ns['widths']} "
        f"({ns['rel_error_pct']:+.3f}% from the budget; at most {worst:.3f}% over every ratio of the table).",
        f"Against uniform {un['widths']} it widens layer {wide + 1} ×{ratios[wide]:.2f} and narrows layer "
        f"{narrow + 1} ×{ratios[narrow]:.2f}, at {m_ns / m_un:.2f}× uniform's multiply-accumulates per image "
        f"({m_ns / 1e6:.1f}M vs {m_un / 1e6:.1f}M): equal parameters are not equal compute.",
    ])


def descent(run, agree: Sequence[Mapping[str, Any]] = ()) -> Conclusion:
    """Notebook 04: how far descent moved and how the shape agrees with the authors' search.

    Args:
        run: the :class:`nslab.search.descent.SearchRun`.
        agree: rows of :func:`nslab.views.shape.agreement` (may be empty: the authors published no such search).
    """
    its = run.iterations
    lines = [f"{len(its)} descent iteration(s) of {run.arch} on {run.dataset}; each generated configuration "
             f"at {its[0].generated.target:,} parameters: "
             + "; ".join(f"iteration {it.index} {list(it.generated.widths)}" for it in its) + "."]
    if len(its) > 1:
        moves = ", ".join(f"{100 * it.change:.1f}% in iteration {it.index}" for it in its[1:])
        lines.append(f"The generated configuration moved by {moves} (mean relative change per layer from the "
                     "network the iteration pruned): descent converges as this falls.")
        tail = [100 * it.change for it in its[1:]][-5:]
        lines.append(f"Over the last {len(tail)} iteration(s) it stayed between {min(tail):.1f}% and {max(tail):.1f}% "
                     "(each iteration prunes a fresh network of another seed, so it does not fall to zero).")
    last = {r["reference_iteration"]: r for r in agree if r["iteration"] == its[-1].index}
    firsts = {r["reference_iteration"]: r for r in agree if r["iteration"] == 1}
    if len(its) > 1 and 15 in last and 15 in firsts:
        lines.append(f"Against the authors' iteration 15, Spearman ρ went from {firsts[15]['spearman']:.2f} "
                     f"(iteration 1) to {last[15]['spearman']:.2f} (iteration {its[-1].index}) and mean |log2 ratio| "
                     f"from {firsts[15]['mean_abs_log2']:.2f} to {last[15]['mean_abs_log2']:.2f}.")
    for row in agree:
        lines.append(f"Iteration {row['iteration']} vs the authors' iteration {row['reference_iteration']} at "
                     f"r = {row['ratio']:g}: Spearman ρ = {row['spearman']:.2f}, mean |log2 ratio| = "
                     f"{row['mean_abs_log2']:.2f}.")
    first = next((r for r in agree if r["iteration"] == 1 and r["reference_iteration"] == 1), None)
    if first is not None:
        lines.append(f"Goal at iteration 1 (ρ ≥ {shape.GOAL_SPEARMAN:g}, mean |log2| ≤ "
                     f"{shape.GOAL_MEAN_ABS_LOG2:g} vs the authors' iteration 1): "
                     f"{'met' if shape.meets_goal(first) else 'not met'}.")
    if not agree:
        lines.append(f"The authors published no {run.arch} search on {run.dataset}: no shape to compare with.")
    return _lines(lines)


def difference(summary: Sequence[Mapping[str, Any]], a: str, b: str, ratio: float) -> dict | None:
    """``a`` minus ``b`` in mean best test accuracy at ``ratio`` (summary rows of :func:`nslab.views.tables.summarize`).

    Returns:
        ``{"diff", "spread", "n_a", "n_b", "a", "b"}`` in percentage points; ``spread`` is the root sum of
        squares of the two seeds' standard deviations (``None`` when either side ran one seed), or
        ``None`` when either method has no row at ``ratio``.
    """
    rows = {r["method"]: r for r in summary if math.isclose(float(r["ratio"]), ratio)}
    if a not in rows or b not in rows:
        return None
    ra, rb = rows[a], rows[b]
    spread = math.hypot(ra["acc_std"], rb["acc_std"]) if min(ra["n"], rb["n"]) > 1 else None
    return {"diff": ra["acc_mean"] - rb["acc_mean"], "spread": spread, "n_a": ra["n"], "n_b": rb["n"],
            "a": ra, "b": rb}


def _diff_text(d: dict, a: str, b: str, ratio: float) -> str:
    seeds = f"{d['n_a']} seed(s)" if d["n_a"] == d["n_b"] else f"{d['n_a']} vs {d['n_b']} seeds"
    pm = f" ± {d['spread']:.2f}" if d["spread"] is not None else ""
    tail = "" if d["spread"] is not None else " (one seed on a side: no spread, a single measurement)"
    return (f"{label(a, d['a'].get('iteration'))} − {label(b)}: {d['diff']:+.2f}{pm} points over {seeds} at "
            f"r = {ratio:g} ({d['a']['acc_mean']:.2f}% vs {d['b']['acc_mean']:.2f}%){tail}")


def _exercise(where: str, exercise: str) -> str:
    """The line that opens the conclusion of runs that exercise the code path ("" for runs that test the paper)."""
    return (f"{where}: {exercise}. What these runs measured is reported below; at this scale it neither "
            "confirms nor refutes the paper's finding." if exercise else "")


def benchmark(done: Sequence[tuple[Any, list[dict], list[dict]]], recipe: str = "", p=None) -> Conclusion:
    """Notebook 05: each method against uniform scaling, per setting and ratio.

    Args:
        done: ``(setting, records, summary)`` as :func:`nslab.runs.studies.benchmark_all` returns.
        recipe: how the runs were trained (e.g. "8 epochs"), said once.
        p: the preset the runs trained under: a setting that only exercises the code path under it
            (:func:`nslab.views.scope.exercise`) says so before its numbers (``None``: not said).
    """
    lines = []
    for s, _, summary in done:
        methods = [m for m in dict.fromkeys(r["method"] for r in summary) if m != "uniform"]
        found = [f"{s.arch} {s.dataset}: " + _diff_text(d, m, "uniform", r) + "." for r in s.ratios for m in methods
                 if (d := difference(summary, m, "uniform", r)) is not None]
        if found:
            lines += [_exercise(f"{s.arch} {s.dataset}", scope.exercise(p, [s]) if p is not None else ""), *found]
    if recipe:
        lines.append(f"Trained {recipe}; the paper's numbers come from 300 epochs and 5 seeds.")
    return _lines(lines or ["No runs to compare."])


def pretraining(summary: Sequence[Mapping[str, Any]], arch: str, dataset: str, exercise: str = "") -> Conclusion:
    """Notebooks 06: which pre-training epochs P_e searched the most accurate configurations (per ratio).

    ``exercise``: :func:`nslab.views.scope.exercise` of the study's setting, said first ("": the runs test the
    paper's finding).
    """
    lines = []
    for r in sorted({float(x["ratio"]) for x in summary}):
        rows = [x for x in summary if math.isclose(float(x["ratio"]), r) and x.get("pretrain_epochs") is not None]
        if not rows:
            continue
        best = max(rows, key=lambda x: x["acc_mean"])
        worst = min(rows, key=lambda x: x["acc_mean"])
        uni = next((x for x in summary if math.isclose(float(x["ratio"]), r) and x["method"] == "uniform"), None)
        lines.append(f"{arch} {dataset}, r = {r:g}: P_e = {best['pretrain_epochs']} is best at "
                     f"{best['acc_mean']:.2f}%, P_e = {worst['pretrain_epochs']} worst at {worst['acc_mean']:.2f}% "
                     f"(spread {best['acc_mean'] - worst['acc_mean']:.2f} points over {len(rows)} values"
                     + (f"; uniform {uni['acc_mean']:.2f}%" if uni else "") + ").")
    return _lines([_exercise(f"{arch} {dataset}", exercise)] + (lines or ["No runs to compare."]))


def convcut(summary: Sequence[Mapping[str, Any]], arch: str, dataset: str, exercise: str = "") -> Conclusion:
    """Notebook 07: does a conv shortcut everywhere (ConvCut) explain NeuralScale's gain over uniform?

    ``exercise``: as in :func:`pretraining`.
    """
    lines = []
    for r in sorted({float(x["ratio"]) for x in summary}):
        for m in ("uniform_convcut", "neuralscale_it1", "neuralscale_last", "morphnet"):
            d = difference(summary, m, "uniform", r)
            if d is not None:
                lines.append(f"{arch} {dataset}: " + _diff_text(d, m, "uniform", r) + ".")
    return _lines([_exercise(f"{arch} {dataset}", exercise)] + (lines or ["No runs to compare."]))


def equal_compute(summary: Sequence[Mapping[str, Any]]) -> Conclusion:
    """Notebook 08: does NeuralScale still beat uniform scaling when MACs, not parameters, are held equal?

    Args:
        summary: :func:`nslab.runs.studies.macs_study`'s summary (rows with ``budget``).
    """
    lines = []
    for r in sorted({float(x["ratio"]) for x in summary}):
        at = [x for x in summary if math.isclose(float(x["ratio"]), r)]
        uni = next((x for x in at if x["method"] == "uniform"), None)
        if uni is None:
            continue
        for budget in ("macs", "params"):
            rows = [x for x in at if x["budget"] == budget and x["method"] != "uniform"]
            for x in rows:
                d = difference([x, uni], x["method"], "uniform", r)
                lines.append(f"At uniform's {get_metric(budget).unit} (r = {r:g}): "
                             + _diff_text(d, x["method"], "uniform", r)
                             + f", with {x['params'] / uni['params']:.2f}× its parameters and "
                             f"{x['macs'] / uni['macs']:.2f}× its MACs.")
        ns = next((x for x in at if x["budget"] == "macs" and x["method"] == "neuralscale_last"), None)
        if ns is not None:
            d = difference([ns, uni], "neuralscale_last", "uniform", r)
            spread = d["spread"] or 0.0
            verdict = ("still wins" if d["diff"] - spread > 0 else "loses" if d["diff"] + spread < 0
                       else "neither wins nor loses beyond the spread over seeds")
            lines.append(f"Answer at r = {r:g}: with compute held equal, NeuralScale {verdict} "
                         f"({d['diff']:+.2f} points" + (f" ± {d['spread']:.2f}" if d["spread"] is not None else
                                                         ", one seed") + ").")
    return _lines(lines or ["No runs to compare."])


def your_network(arch: str, counts: Sequence[Mapping[str, Any]], run, summary: Sequence[Mapping[str, Any]]
                 ) -> Conclusion:
    """Notebook 09: a traced network's width vector, its counts checked, its search's fit, then
    :func:`equal_compute` of its study.

    Args:
        arch: the architecture (a factory string).
        counts: :func:`nslab.views.network.count_rows`.
        run: its :class:`~nslab.search.descent.SearchRun`.
        summary: :func:`nslab.runs.studies.macs_study`'s summary of it.
    """
    it = run.iterations[-1]
    r2 = np.asarray(it.law.r2)
    exact = sum(bool(r["exact"]) for r in counts)
    head = _lines([
        f"{arch}: {len(it.start)} width groups; the compiled parameter and MAC counts equal the built module's "
        f"(sum of numel, FlopCounterMode / 2) at {exact} of {len(counts)} width vectors.",
        f"Iteration {it.index} of the search recorded {len(it.params)} rows; the power law fits them with median "
        f"R² {np.median(r2):.3f} (lowest {r2.min():.3f}, group {int(np.argmin(r2)) + 1}).",
    ])
    return head + equal_compute(summary)
