"""The data behind each paper table and figure, from run records and search runs (no plotting here).

- :func:`summarize`: mean ± std over seeds; :func:`comparison_table`: reproduced rows beside the
  paper's published ones (:func:`paper_results`); :func:`paper_table`: a benchmark table.
- :func:`descent_panels`, :func:`trajectory_rows`, :func:`fit_rows`, :func:`power_law_panel`,
  :func:`authors_panels`: what notebooks 01-04 show.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .methods import METHODS, Context
from .models import param_count

# Our "last iteration" is the paper's iteration 15 under the paper profile; compare them in tables.
PAPER_METHOD = {"neuralscale_last": "neuralscale_it15"}


METHOD_LABELS = {**{name: m.label for name, m in METHODS.items()},
                 "neuralscale_it15": "NeuralScale (Iteration = 15)"}
"""Display names of the method ids of runs, tables and plots (the registry's, and the paper's iteration 15)."""


def label(method: str) -> str:
    """Display name of a method id."""
    return METHOD_LABELS.get(method, method)


# --- summaries -------------------------------------------------------------------------------------------


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))  # ddof 0, as the paper's numpy std


def summarize(records: Iterable[Mapping[str, Any]], by: Sequence[str] = ("method", "ratio")) -> list[dict]:
    """Mean ± std (ddof 0) over seeds of each group of runs.

    Args:
        records: run records (from :meth:`ResultsStore.ensure`), each with ``acc``, ``params`` and
            optionally ``latency_ms``.
        by: the keys that define a group (absent keys group as ``None``).

    Returns:
        One row per group, in first-seen order: the ``by`` keys, ``params`` (mean, count),
        ``latency_ms``, ``acc_mean``, ``acc_std`` (%), ``n`` (runs), ``seeds``, ``widths`` and ``device``
        (of the first run).
    """
    groups: dict[tuple, list[Mapping]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    rows = []
    for key, rs in groups.items():
        acc_m, acc_s = _mean_std([r["acc"] for r in rs])
        lat_m, _ = _mean_std([r.get("latency_ms") for r in rs])
        rows.append(
            {
                **dict(zip(by, key)),
                "params": round(_mean_std([r["params"] for r in rs])[0]),
                "latency_ms": lat_m,
                "acc_mean": acc_m,
                "acc_std": acc_s,
                "n": len(rs),
                "seeds": sorted(r.get("seed") for r in rs),
                "widths": rs[0].get("widths"),
                "device": rs[0].get("device"),
            }
        )
    return rows


# --- the paper's numbers -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _paper_doc() -> dict:
    from importlib.resources import files

    return json.loads(files("nslab.resources").joinpath("paper_results.json").read_text())


def paper_results(
    table: int | None = None, arch: str | None = None, dataset: str | None = None, method: str | None = None
) -> list[dict]:
    """The paper's published rows (Tables 1-6), filtered by any of table/arch/dataset/method.

    Each row: ``table, arch, dataset, method, ratio, params_m`` (millions), ``latency_ms`` (GTX 1080 Ti,
    batch 100), ``acc_mean, acc_std`` (%, 5 seeds), and ``pretrain_epochs`` in Tables 3-4.
    """
    rows = _paper_doc()["rows"]
    return [
        dict(r)
        for r in rows
        if (table is None or r["table"] == table)
        and (arch is None or r["arch"] == arch)
        and (dataset is None or r["dataset"] == dataset)
        and (method is None or r["method"] == method)
    ]


def _pm(m: float | None, s: float | None) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    return f"{m:.2f} ± {s:.2f}" if s is not None and not math.isnan(s) else f"{m:.2f}"


def comparison_table(
    summary: Sequence[Mapping[str, Any]], paper: Sequence[Mapping[str, Any]] = (), extra: Sequence[str] = ()
) -> list[dict]:
    """Reproduced rows beside the paper's: one row per (method, ratio[, extra]) of ``summary``.

    Args:
        summary: rows of :func:`summarize` (keys ``method``, ``ratio``, ``extra``... and the measures).
        paper: the paper's rows of the same setting (:func:`paper_results`); matched on method (ours
            ``neuralscale_last`` = the paper's iteration 15), ratio and the ``extra`` keys.
        extra: further keys that identify a row (e.g. ``("pretrain_epochs",)``).

    Returns:
        Rows with ``method`` (id), ``label``, ``ratio``, the extra keys, ``params_m``, ``paper_params_m``,
        ``latency_ms`` (measured on ``device``, batch of the profile), ``paper_latency_ms`` (GTX 1080 Ti,
        batch 100), ``device``, ``accuracy`` and ``paper_accuracy`` (``"mean ± std"``, %; one seed: the
        value alone), ``acc_mean``, ``acc_std``, ``n_seeds``.
    """
    out = []
    for s in summary:
        pm = PAPER_METHOD.get(s["method"], s["method"])
        match = next(
            (
                p
                for p in paper
                if p["method"] == pm
                and abs(p["ratio"] - float(s["ratio"])) < 1e-9
                and all(p.get(k) == s.get(k) for k in extra)
            ),
            None,
        )
        out.append(
            {
                "method": s["method"],
                "label": label(s["method"]),
                "ratio": s["ratio"],
                **{k: s.get(k) for k in extra},
                "params_m": round(s["params"] / 1e6, 4),
                "paper_params_m": match and match["params_m"],
                "latency_ms": None if math.isnan(s["latency_ms"]) else round(s["latency_ms"], 3),
                "paper_latency_ms": match and match["latency_ms"],
                "device": s.get("device"),
                # one seed has no spread: "x ± 0.00" would claim one
                "accuracy": _pm(s["acc_mean"], s["acc_std"] if s["n"] > 1 else None),
                "paper_accuracy": _pm(match["acc_mean"], match["acc_std"]) if match else "",
                "acc_mean": s["acc_mean"],
                "acc_std": s["acc_std"],
                "n_seeds": s["n"],
            }
        )
    return out


TABLE_COLUMNS = (
    "label",
    "ratio",
    "params_m",
    "paper_params_m",
    "latency_ms",
    "paper_latency_ms",
    "device",
    "accuracy",
    "paper_accuracy",
    "n_seeds",
)
"""Markdown column order of the comparison tables (the CSV keeps every column)."""


# --- notebooks 01-05: searches and benchmark tables ------------------------------------------------------


def paper_table(done: Sequence[tuple[Any, list[dict], list[dict]]], table: int,
                extra: Sequence[str] = ()) -> list[dict]:
    """The comparison rows (reproduced beside published) of the settings that stand in for ``table``.

    Args:
        done: ``(setting, records, summary)`` per benchmarked setting (:func:`nslab.benchmark.benchmark_all`).
        table: the paper's table number.
        extra: further keys that identify a row.
    """
    rows = []
    for s, _, summary in done:
        if s.table != table:
            continue
        paper = paper_results(table=table, arch=s.arch, dataset=s.paper_dataset)
        for r in comparison_table(summary, paper, extra):
            rows.append({"setting": f"{s.arch} {s.dataset}", "paper_setting": f"{s.arch} {s.paper_dataset}", **r})
    return rows


def label_pretraining(rows: Sequence[dict]) -> list[dict]:
    """Copies of summary or paper rows with a ``label``: "uniform" or "NeuralScale P_e = N"."""
    return [{**r, "label": "uniform" if r.get("pretrain_epochs") is None
             else f"NeuralScale P_e = {r['pretrain_epochs']}"} for r in rows]


def descent_panels(ctx: Context, run, ratios: Sequence[float]) -> tuple[dict, dict, list[dict]]:
    """Figure 3's data: configurations per iteration at each ratio, their changes, and a table.

    Args:
        ctx: the search's method context (budgets of the ratios).
        run: the :class:`nslab.descent.SearchRun`.
        ratios: the paper's ratios to show.

    Returns:
        ``(panels, changes, rows)``: ``{"r = 0.25 (0.58M)": {"iteration k": widths}}``,
        ``{"r = 0.25": [change % per iteration >= 2]}`` and one row per (ratio, iteration).
    """
    panels, changes, rows = {}, {}, []
    for r in ratios:
        target = ctx.budget(r).params
        configs = {}
        for it in run.iterations:
            s = run.widths(it.index, target)
            configs[f"iteration {it.index}"] = s.widths
            rows.append({"ratio": r, "iteration": it.index, "target_params": s.target, "params": s.params,
                         "widths": s.widths})
        panels[f"r = {r:g} ({target / 1e6:.3g}M parameters)"] = configs
        changes[f"r = {r:g}"] = run.changes(target)
    return panels, changes, rows


def trajectory_rows(it, every: int = 10) -> list[dict]:
    """Every ``every``-th recorded row of an :class:`~nslab.descent.Iteration` (and the last)."""
    idx = sorted(set(range(0, len(it.widths), every)) | {len(it.widths) - 1})
    return [{"row": i, "params": int(it.params[i]), "channels": int(it.widths[i].sum()),
             "widths": [int(x) for x in it.widths[i]]} for i in idx]


def power_law_panel(run, iteration: int = 1, title: str | None = None):
    """Figure 2's panel for one descent iteration of this project's search."""
    from .plots import PowerLawPanel

    it = run.iteration(iteration)
    return PowerLawPanel(title or f"this project: {run.arch} {run.dataset}, iteration {iteration}",
                         it.widths, it.params, it.law)


AUTHORS_FILES = (("vgg_10_eff_c10_0.csv", "vgg11", "cifar10"), ("vgg_10_eff_c100_0.csv", "vgg11", "cifar100"))
"""The authors' first-iteration VGG11 trajectories (P_e = 10) that Figure 2 shows, and their networks."""


def authors_panels(directory: str | Path | None) -> list:
    """Figure 2's panels for the authors' published trajectories found in ``directory`` (``prune_record/``).

    Args:
        directory: a folder holding the authors' header-less trajectory CSVs; ``None`` gives no panel.

    Raises:
        ValueError: the folder exists but holds none of :data:`AUTHORS_FILES`.
    """
    from .plots import PowerLawPanel
    from .powerlaw import fit_power_law

    if directory is None:
        return []
    d = Path(directory)
    panels = []
    for name, arch, dataset in AUTHORS_FILES:
        if (d / name).is_file():
            w = io.read_trajectory(d / name)
            params = np.asarray([param_count(arch, r, dataset) for r in w.tolist()], dtype=np.int64)
            panels.append(PowerLawPanel(f"authors: {arch} {dataset}, iteration 1 ({name})", w, params,
                                        fit_power_law(w, arch, dataset)))
    if not panels:
        raise ValueError(f"{d} holds none of the authors' trajectories {[f for f, _, _ in AUTHORS_FILES]}")
    return panels


def fit_rows(panels: Sequence) -> list[dict]:
    """One table row per (panel, layer): alpha, beta, R^2 and the number of trajectory rows fitted."""
    return [{"run": p.title, "layer": i + 1, "alpha": p.law.alpha[i], "beta": p.law.beta[i],
             "r2": p.law.r2[i] if p.law.r2 else None, "rows": len(p.widths)}
            for p in panels for i in range(len(p.law.alpha))]
