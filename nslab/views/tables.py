"""The data behind each paper table and figure, from run records and search runs (no plotting here).

- :func:`summarize`: mean ± std over seeds; :func:`comparison_table`: reproduced rows beside the
  paper's published ones (:func:`paper_results`), only where the setting is the paper's;
  :func:`paper_table`: a benchmark table; :func:`latency_ratios`: latency relative to uniform;
  :func:`caption`: what a table ran (an exercise of the code path, :mod:`.scope`) and left out;
  :func:`check_chance`: no run at chance in a table.
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

from .. import io
from ..models import macs, param_count
from ..scaling.methods import METHODS, Context
from ..scaling.metrics import get_metric
from .scope import exercise, paper_epochs, run_epochs, runs_text

# Our "last iteration" is the paper's iteration 15 under the paper profile; compare them in tables.
PAPER_METHOD = {"neuralscale_last": "neuralscale_it15"}

PARAMS_TOLERANCE = 0.05
"""A row is compared with the paper's only when its parameter count is within this fraction of the paper's."""

METHOD_LABELS = {**{name: m.label for name, m in METHODS.items()},
                 "neuralscale_it15": "NeuralScale (Iteration = 15)"}
"""Display names of the method ids of runs, tables and plots (the registry's, and the paper's iteration 15)."""


def label(method: str, iteration: int | None = None) -> str:
    """Display name of a method id; ``neuralscale_last`` with its ``iteration`` tag: "NeuralScale (Iteration = N)"."""
    if method == "neuralscale_last" and iteration is not None:
        return f"NeuralScale (Iteration = {int(iteration)})"
    return METHOD_LABELS.get(method, method)


def series_labels(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Display name per method id (plot legends), naming the last iteration of ``rows`` by its ``iteration`` tag."""
    return {**METHOD_LABELS, **{r["method"]: label(r["method"], r.get("iteration")) for r in rows}}


# --- summaries -------------------------------------------------------------------------------------------


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _mean_std(xs: Iterable[Any]) -> tuple[float, float]:
    xs = [float(x) for x in xs if _num(x)]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))  # ddof 0, as the paper's numpy std


def check_chance(records: Iterable[Mapping[str, Any]], margin: float | None) -> None:
    """Stop when a trained run's best test accuracy lies within ``margin`` points of chance (100 / K %).

    Args:
        records: run records with ``acc`` (%), ``dataset``, ``arch``, ``method``, ``ratio``, ``seed``.
        margin: percentage points above chance a run must exceed (``None``: no check).

    Raises:
        ValueError: naming every such run (setting, method, seed, accuracy) and what to change.
    """
    if margin is None:
        return
    from ..data import dataset_spec

    bad = []
    for r in records:
        k = dataset_spec(r["dataset"]).num_classes
        if not r["acc"] > 100.0 / k + margin:
            bad.append(f"  - {r.get('arch')} {r['dataset']}, method {r.get('method')} (ratio {r.get('ratio')}), "
                       f"seed {r.get('seed')}: best test accuracy {r['acc']:.2f}% (chance {100.0 / k:.2f}% with "
                       f"{k} classes)")
    if bad:
        raise ValueError(
            f"{len(bad)} trained run(s) within {margin:g} points of chance: their table rows would compare "
            "noise.\n" + "\n".join(bad) + "\nTrain longer or on more images (the preset's or the setting's "
            "epochs / train_subset), or check the recipe's learning rate; set the preset's chance_margin=None "
            "only for runs at chance by design (synthetic smoke data).")


def record_macs(r: Mapping[str, Any]) -> int | None:
    """MACs per image of a record's network: its ``macs``, else computed from its arch, widths, dataset, convcut."""
    if r.get("macs") is not None:
        return r["macs"]
    widths = r.get("trained_widths") or r.get("widths")
    if not (r.get("arch") and r.get("dataset") and widths):
        return None
    return macs(r["arch"], list(widths), r["dataset"], bool(r.get("convcut")))


_CARRIED = ("arch", "dataset", "iteration")  # per-group facts, kept when records have them


def summarize(records: Iterable[Mapping[str, Any]], by: Sequence[str] = ("method", "ratio")) -> list[dict]:
    """Mean ± std (ddof 0) over seeds of each group of runs.

    Args:
        records: run records (from :meth:`ResultsStore.ensure`), each with ``acc``, ``params`` and
            optionally ``latency_ms``, ``train_seconds``, ``macs`` (else computed from the network).
        by: the keys that define a group (absent keys group as ``None``).

    Returns:
        One row per group, in first-seen order: the ``by`` keys, ``arch``, ``dataset`` and ``iteration``
        where records have them, ``params`` (mean, count), ``macs`` (mean per image), ``latency_ms``,
        ``train_seconds`` (mean per run), ``acc_mean``, ``acc_std`` (%), ``n`` (runs), ``seeds``,
        ``widths`` and ``device`` (of the first run).
    """
    groups: dict[tuple, list[Mapping]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    rows = []
    for key, rs in groups.items():
        acc_m, acc_s = _mean_std([r["acc"] for r in rs])
        carried = {k: next(r[k] for r in rs if k in r) for k in _CARRIED if k not in by and any(k in r for r in rs)}
        rows.append({
            **dict(zip(by, key)), **carried,
            "params": round(_mean_std([r["params"] for r in rs])[0]),
            "macs": _mean_std([record_macs(r) for r in rs])[0],
            "latency_ms": _mean_std([r.get("latency_ms") for r in rs])[0],
            "train_seconds": _mean_std([r.get("train_seconds") for r in rs])[0],
            "acc_mean": acc_m, "acc_std": acc_s, "n": len(rs), "seeds": sorted(r.get("seed") for r in rs),
            "widths": rs[0].get("widths"), "device": rs[0].get("device"),
        })
    return rows


def _at(r: Mapping[str, Any]) -> tuple:
    """Where a latency is comparable: table, arch, dataset, device and ratio of a summary or paper row."""
    return r.get("table"), r.get("arch"), r.get("dataset"), r.get("device"), round(float(r["ratio"]), 9)


def latency_ratios(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Copies of summary or paper rows with ``latency_x``: latency over that of ``uniform`` at the same ratio.

    ``uniform`` of the same table, arch, dataset and device (one measuring machine) at the same ratio;
    ``None`` where there is no such row or no latency.
    """
    base = {_at(r): r.get("latency_ms") for r in rows if r.get("method") == "uniform"}
    out = []
    for r in rows:
        lat, b = r.get("latency_ms"), base.get(_at(r))
        out.append({**r, "latency_x": round(lat / b, 3) if _num(lat) and _num(b) and b > 0 else None})
    return out


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
    want = {"table": table, "arch": arch, "dataset": dataset, "method": method}
    return [dict(r) for r in _paper_doc()["rows"] if all(v is None or r[k] == v for k, v in want.items())]


def _pm(m: float | None, s: float | None) -> str:
    if not _num(m):
        return ""
    return f"{m:.2f} ± {s:.2f}" if _num(s) else f"{m:.2f}"


def _paper_setting(p: Mapping[str, Any], method: str) -> str:
    """What the paper measured in row ``p``: "resnet18 cifar100, 0.71M params, 63.66 ± 0.24%"."""
    parts = [" ".join(str(p[k]) for k in ("arch", "dataset") if p.get(k))]
    if p["method"] != method:
        parts.append(label(p["method"]))
    if p.get("pretrain_epochs") is not None:
        parts.append(f"P_e = {p['pretrain_epochs']}")
    if p.get("params_m") is not None:
        parts.append(f"{p['params_m']:g}M params")
    if _num(p.get("acc_mean")):
        parts.append(f"{_pm(p['acc_mean'], p.get('acc_std'))}%")
    return ", ".join(x for x in parts if x)


def _round(x: Any, scale: float, digits: int) -> float | None:
    return round(x / scale, digits) if _num(x) else None


def comparison_table(summary: Sequence[Mapping[str, Any]], paper: Sequence[Mapping[str, Any]] = (),
                     extra: Sequence[str] = (), arch: str | None = None, dataset: str | None = None,
                     epochs: int | None = None) -> list[dict]:
    """Reproduced rows beside the paper's, where the setting is the paper's: one row per summary row.

    A row is matched with the paper's row of its method (ours ``neuralscale_last`` = the paper's iteration
    15), ratio and ``extra`` keys. The paper's values fill ``paper_*`` only when that row's arch and
    dataset are the run's and its parameter count is within :data:`PARAMS_TOLERANCE` of the run's;
    ``paper_accuracy`` only when, besides, the runs trained as long as the paper's (``epochs`` equals
    :func:`~nslab.views.scope.paper_epochs` of the paper row's dataset): an accuracy after 300 epochs says
    nothing beside one after 4. ``paper_setting`` always says what the paper measured (its accuracy
    included), so nothing is compared silently.

    Args:
        summary: rows of :func:`summarize` (keys ``method``, ``ratio``, ``extra``... and the measures).
        paper: the paper's rows (:func:`paper_results`).
        extra: further keys that identify a row (e.g. ``("pretrain_epochs",)``).
        arch, dataset: the runs' network and dataset (default: each summary row's ``arch``/``dataset``).
        epochs: the runs' training epochs (:func:`~nslab.views.scope.run_epochs`; ``None``: not known, so
            no ``paper_accuracy``).

    Returns:
        Rows with ``method`` (id), ``label``, ``ratio``, the extra keys, ``params_m``, ``paper_params_m``,
        ``macs_m`` (millions per image), ``latency_ms`` (on ``device``, batch of the profile),
        ``paper_latency_ms`` (GTX 1080 Ti, batch 100), ``latency_x`` and ``paper_latency_x`` (over uniform
        at the same ratio, see :func:`latency_ratios`), ``device``, ``accuracy`` and ``paper_accuracy``
        (``"mean ± std"``, %; one seed: the value alone), ``train_min`` (minutes per run), ``acc_mean``,
        ``acc_std``, ``n_seeds`` and ``paper_setting``.
    """
    paper = latency_ratios(paper)
    out = []
    for s in latency_ratios(summary):
        pm = PAPER_METHOD.get(s["method"], s["method"])
        match = next((p for p in paper if p["method"] == pm and abs(p["ratio"] - float(s["ratio"])) < 1e-9
                      and all(p.get(k) == s.get(k) for k in extra)), None)
        same = (match is not None and (match["arch"], match["dataset"]) == (arch or s.get("arch"),
                                                                            dataset or s.get("dataset"))
                and abs(s["params"] / 1e6 - match["params_m"]) <= PARAMS_TOLERANCE * match["params_m"])
        p = match if same else {}
        long = bool(p) and epochs == paper_epochs(p["dataset"])  # trained as long as the paper's run
        out.append({
            "method": s["method"],
            "label": label(s["method"], s.get("iteration")),
            "ratio": s["ratio"],
            **{k: s.get(k) for k in extra},
            "params_m": round(s["params"] / 1e6, 4),
            "paper_params_m": p.get("params_m"),
            "macs_m": _round(s.get("macs"), 1e6, 3),
            "latency_ms": _round(s.get("latency_ms"), 1, 3),
            "paper_latency_ms": p.get("latency_ms"),
            "latency_x": s["latency_x"],
            "paper_latency_x": p.get("latency_x"),
            "device": s.get("device"),
            # one seed has no spread: "x ± 0.00" would claim one
            "accuracy": _pm(s["acc_mean"], s["acc_std"] if s["n"] > 1 else None),
            "paper_accuracy": _pm(p.get("acc_mean"), p.get("acc_std")) if long else "",
            "train_min": _round(s.get("train_seconds"), 60, 2),
            "acc_mean": s["acc_mean"], "acc_std": s["acc_std"], "n_seeds": s["n"],
            "paper_setting": _paper_setting(match, s["method"]) if match else "",
        })
    return out


TABLE_COLUMNS = ("label", "ratio", "params_m", "paper_params_m", "macs_m", "latency_ms", "paper_latency_ms",
                 "latency_x", "paper_latency_x", "device", "accuracy", "paper_accuracy", "train_min", "n_seeds",
                 "paper_setting")
"""Markdown column order of the comparison tables (the CSV keeps every column)."""


def caption(p, title: str, settings: Sequence[Any] = (), table: int | None = None) -> str:
    """A table's caption: ``title``, whether its runs only exercise the code path (:func:`~nslab.views.scope.
    exercise`: why), what the preset ran, where the paper's accuracies are, the methods it left out with why.

    Args:
        p: the :class:`~nslab.config.Preset`.
        title: e.g. ``"Table 1: ..."``.
        settings: the :class:`~nslab.config.Setting` s whose runs the table holds (their epochs and images).
        table: the paper's table number: name only exclusions of methods it holds (``None``: every one).

    Returns:
        e.g. "Table 3: ...: an exercise of the code path, not evidence of the paper's finding (4 epochs on 5,000
        training images, 1 seed: ...) (cpu profile: vgg11 cifar10, 4 epochs on 5,000 training images).
        Accuracies after 4 epochs, not the paper's 300; the paper's accuracies are in paper_setting only".
    """
    ran = [f"{s.arch} {s.dataset}" + (f" (paper: {s.paper_dataset})" if s.paper_dataset != s.dataset else "")
           + f", {runs_text(p, s)}" for s in settings]
    ex = exercise(p, settings)
    out = f"{title}{': ' + ex if ex else ''} ({p.name} profile{': ' + '; '.join(ran) if ran else ''})"
    # a run of another length than the paper's: its accuracies are out of reach (comparison_table leaves them out)
    lengths = {(run_epochs(p, s), paper_epochs(s.paper_dataset)) for s in settings}  # (ours, the paper's)
    other = {(e, pe) for e, pe in lengths if e != pe}
    if other:
        ours = sorted({e for e, _ in other})
        out += (f". Accuracies after {', '.join(map(str, ours))} epoch{'s' * (ours != [1])}, not the paper's "
                f"{', '.join(map(str, sorted({e for _, e in other})))}"
                + ("" if ex else ": compare the order of the methods, not the values")
                + "; the paper's accuracies are in paper_setting only")
    held = None if table is None else {r["method"] for r in paper_results(table=table)}
    return out + "".join(f". Left out: {label(m)}: {why}" for m, why in p.excluded if held is None or m in held)


def equal_budget_table(summary: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Notebook 08: :func:`comparison_table` rows of :func:`nslab.runs.studies.macs_study`'s summary, each label
    saying what the network held equal to uniform's (``budget``: ``"macs"`` or ``"params"``)."""
    rows = comparison_table(summary, extra=("budget",))
    for r in rows:
        if r["method"] != "uniform":  # uniform is its own budget in both
            r["label"] += f", equal {get_metric(r['budget']).unit}"  # "MACs", "parameters"
    return rows


# --- notebooks 01-05: searches and benchmark tables ------------------------------------------------------


def paper_table(done: Sequence[tuple[Any, list[dict], list[dict]]], table: int,
                extra: Sequence[str] = (), p=None) -> list[dict]:
    """The comparison rows (reproduced beside published) of the settings that stand in for ``table``.

    Args:
        done: ``(setting, records, summary)`` per benchmarked setting (:func:`nslab.runs.studies.benchmark_all`).
        table: the paper's table number.
        extra: further keys that identify a row.
        p: the preset the runs trained under: their epochs decide whether the paper's accuracy stands beside
            them (:func:`comparison_table`; ``None``: it does not).

    Returns:
        :func:`comparison_table` rows after a ``setting`` ("arch dataset"); the paper's values only where
        the setting (arch, dataset, parameters) is the paper's.
    """
    rows = []
    for s, _, summary in done:
        if s.table != table:
            continue
        paper = paper_results(table=table, arch=s.arch, dataset=s.paper_dataset)
        epochs = run_epochs(p, s) if p is not None else None
        for r in comparison_table(summary, paper, extra, arch=s.arch, dataset=s.dataset, epochs=epochs):
            rows.append({"setting": f"{s.arch} {s.dataset}", **r})
    return rows


def label_pretraining(rows: Sequence[dict]) -> list[dict]:
    """Copies of summary or paper rows with a ``label``: "uniform" or "NeuralScale P_e = N"."""
    return [{**r, "label": "uniform" if r.get("pretrain_epochs") is None
             else f"NeuralScale P_e = {r['pretrain_epochs']}"} for r in rows]


def descent_panels(ctx: Context, run, ratios: Sequence[float]) -> tuple[dict, dict, list[dict]]:
    """Figure 3's data: configurations per iteration at each ratio, their changes, and a table.

    Args:
        ctx: the search's method context (budgets of the ratios).
        run: the :class:`nslab.search.descent.SearchRun`.
        ratios: the paper's ratios to show.

    Returns:
        ``(panels, changes, rows)``: ``{"r = 0.25 (0.58M)": {"iteration k": widths}}``,
        ``{"r = 0.25": [change % per iteration >= 2]}`` and one row per (ratio, iteration).
    """
    panels, changes, rows = {}, {}, []
    for r in ratios:
        target = ctx.budget(r).target
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
    """Every ``every``-th recorded row of an :class:`~nslab.search.descent.Iteration` (and the last)."""
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
    from ..scaling.powerlaw import fit_power_law
    from .plots import PowerLawPanel

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
