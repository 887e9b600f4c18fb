"""Training-run results: computed once, keyed by their settings, cached as one JSON per run.

A run is one network (method x arch x dataset x ratio x seed, its widths and its training recipe)
trained from scratch and measured (best test accuracy, parameters, latency). :class:`ResultsStore`
keeps each finished run as ``<root>/runs/<run_id>.json`` (written atomically) plus a consolidated
``<root>/results.csv``/``results.json`` over all runs; :meth:`ResultsStore.ensure` computes only the
runs that are missing, with a progress bar, so re-executing a notebook after its runs exist takes
seconds. The key hashes every setting that changes the result, widths and recipe included: a new fit
or recipe gives new runs instead of silently reusing old ones.

Also here: the paper's published numbers (``resources/paper_results.json``) and the summary/comparison
tables built from runs.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import io

METHOD_LABELS = {
    "uniform": "Uniform Scale (Baseline)",
    "li": "Li et al. (L1 pruning, fine-tuned)",
    "morphnet": "MorphNet (Taylor-FO)",
    "uniform_convcut": "Uniform Scale (ConvCut)",
    "neuralscale_it1": "NeuralScale (Iteration = 1)",
    "neuralscale_last": "NeuralScale (last iteration)",
    "neuralscale_it15": "NeuralScale (Iteration = 15)",
}
"""Display names of the method ids used in runs, tables and plots."""

# Our "last iteration" is the paper's iteration 15 under the paper profile; compare them in tables.
PAPER_METHOD = {"neuralscale_last": "neuralscale_it15"}


@dataclass(frozen=True, eq=False)
class RunSpec:
    """The settings of one training run; everything that changes its result is part of its key.

    Attributes:
        method: scaling method id (see :data:`METHOD_LABELS`).
        arch: architecture name.
        dataset: dataset name (``"synthetic"`` for smoke runs).
        ratio: the uniform ratio whose parameter count was the budget.
        seed: training seed (also seeds the initialisation).
        widths: (L,) width vector trained.
        recipe: the training recipe as a dict (``Recipe.to_dict()``), or any JSON-able settings.
        convcut: conv shortcuts in every block.
        tags: extra settings as sorted ``(name, value)`` pairs, e.g. ``(("iteration", 15),
            ("pretrain_epochs", 10))``; they become columns of the run's record.
    """

    method: str
    arch: str
    dataset: str
    ratio: float
    seed: int
    widths: tuple[int, ...]
    recipe: Mapping[str, Any] = field(default_factory=dict)
    convcut: bool = False
    tags: tuple[tuple[str, Any], ...] = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def settings(self) -> dict:
        """All settings as a JSON-able dict (the key's preimage)."""
        return {
            "method": self.method,
            "arch": self.arch,
            "dataset": self.dataset,
            "ratio": float(self.ratio),
            "seed": int(self.seed),
            "widths": [int(w) for w in self.widths],
            "recipe": dict(self.recipe),
            "convcut": bool(self.convcut),
            **{k: v for k, v in self.tags},
        }

    @property
    def key(self) -> str:
        """16 hex digits of the SHA-1 of the canonical JSON of :meth:`settings`."""
        blob = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        """A readable, unique file stem: ``<method>_<arch>_<dataset>_r<ratio>_s<seed>_<key[:8]>``."""
        return f"{self.method}_{self.arch}_{self.dataset}_r{self.ratio:g}_s{self.seed}_{self.key[:8]}"


class ResultsStore:
    """A results directory: ``runs/<run_id>.json`` per finished run, ``results.csv``/``.json`` over all.

    Args:
        root: the results directory (created on first write).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, spec: RunSpec) -> Path:
        """Where the record of ``spec`` lives."""
        return self.root / "runs" / f"{spec.run_id}.json"

    def work_dir(self, spec: RunSpec) -> Path:
        """A scratch directory for the run's checkpoints (lets an interrupted run resume)."""
        return self.root / "work" / spec.run_id

    def get(self, spec: RunSpec) -> dict | None:
        """The finished record of ``spec``, or ``None``."""
        p = self.path(spec)
        if not p.exists():
            return None
        rec = io.read_json(p)
        return rec if rec.get("key") == spec.key else None

    def put(self, spec: RunSpec, result: Mapping[str, Any]) -> dict:
        """Store ``result`` (the measured values) for ``spec``; returns the full record."""
        rec = {
            **spec.settings(),
            **{k: v for k, v in spec.tags},
            **dict(result),
            "key": spec.key,
            "run_id": spec.run_id,
        }
        io.write_json(self.path(spec), rec)
        return rec

    def ensure(
        self,
        specs: Sequence[RunSpec],
        compute: Callable[[RunSpec], Mapping[str, Any]],
        desc: str = "training runs",
        progress: bool = True,
    ) -> list[dict]:
        """Records of all ``specs``, computing (in order, with a tqdm bar) only the missing ones.

        Each record is written as soon as its run finishes, so an interruption loses at most the run in
        progress (and that one resumes from its checkpoints when ``compute`` uses :meth:`work_dir`).
        Duplicate specs are computed once. The consolidated table is rewritten at the end.

        Args:
            specs: the runs wanted.
            compute: ``spec -> {"acc": ..., "params": ..., ...}`` for one missing run.
            desc: progress-bar label.
            progress: show the bar.

        Returns:
            One record per spec, in order.
        """
        from tqdm.auto import tqdm

        unique = {s.key: s for s in specs}  # by key: tags may hold dicts, which do not hash
        done = {k: self.get(s) for k, s in unique.items()}
        missing = [s for k, s in unique.items() if done[k] is None]
        if missing:
            bar = tqdm(missing, desc=f"{desc} ({len(unique) - len(missing)} cached)", disable=not progress, unit="run")
            for s in bar:
                bar.set_postfix_str(s.run_id[:48])
                t0 = time.perf_counter()
                result = dict(compute(s))
                result.setdefault("seconds", time.perf_counter() - t0)
                done[s.key] = self.put(s, result)
            self.write_table()
        return [done[s.key] for s in specs]

    def records(self) -> list[dict]:
        """Every finished record in the directory (sorted by run id)."""
        d = self.root / "runs"
        return [io.read_json(p) for p in sorted(d.glob("*.json"))] if d.is_dir() else []

    def write_table(self) -> Path:
        """Rewrite ``results.json`` and ``results.csv`` (one row per run, widths space-separated)."""
        recs = self.records()
        io.write_json(self.root / "results.json", recs)
        cols = list(dict.fromkeys(k for r in recs for k in r if k != "recipe"))
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in recs:
            w.writerow([" ".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c, "") for c in cols])
        return io.atomic_write_text(self.root / "results.csv", buf.getvalue())


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
                "label": METHOD_LABELS.get(s["method"], s["method"]),
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
