"""The studies: each notebook's work declared once (:func:`requests`), and the functions notebooks call.

Every request (a :class:`SearchRequest` or a :class:`BenchRequest`) is read by both the notebooks' functions
here and the grid (:func:`nslab.runs.grid.tasks`), so the two compute the same work under the same keys. Every
function reads finished artifacts from the results directory and computes (with progress bars on stderr) only
what is missing:

- :func:`search`: architecture descent of a setting, one run directory per resolved search
  (``<results>/descent/<arch>_<dataset>_pe<P_e>_<key>``, :func:`nslab.runs.specs.search_spec`): notebook 01
  runs iteration 1, 04 extends it, 05-07 read its fits.
- :func:`run_specs` / :func:`train_runs` / :func:`benchmark` / :func:`fulfil`: the training runs (method x
  ratio x seed) of a setting, one record per run in :class:`~nslab.runs.store.ResultsStore`.
- :func:`benchmark_all`, :func:`pretraining_study`, :func:`convcut_study`, :func:`macs_study`: the studies of
  notebooks 05-09 (Figures 4-11, then two beyond the paper), each the requests :func:`requests` declares.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Preset, Setting, resolve
from ..data import ImageData
from ..device import torch_threads
from ..models import macs, param_count
from ..paths import Paths
from ..scaling.methods import Context, get_method
from ..search.descent import SearchRun, architecture_descent
from .specs import (
    SearchSpec,
    alone_latencies,
    data_of,
    device_kind,
    latency,
    search_spec,
    settings_for,
    shares_device,
)
from .store import ResultsStore, RunSpec

__all__ = ["CONVCUT_METHODS", "MACS_METHODS", "BenchRequest", "SearchRequest", "bench_methods", "benchmark",
           "benchmark_all", "context", "convcut_requests", "convcut_study", "fulfil", "load_data",
           "macs_requests", "macs_study", "pretraining_requests", "pretraining_study", "requests",
           "run_search", "run_slots", "run_specs", "search", "search_dir", "train_runs", "your_network"]

CONVCUT_METHODS = ("uniform", "morphnet", "uniform_convcut", "neuralscale_it1", "neuralscale_last")
MACS_METHODS = ("uniform", "morphnet", "neuralscale_last")


# --------------------------------------------------------------------------------------------------------
# what each notebook asks for, declared once


@dataclass(frozen=True)
class SearchRequest:
    """:func:`search` of ``setting`` with ``iterations`` and P_e ``pretrain_epochs`` (``None``: the search's)."""

    setting: Setting
    iterations: int | None = None
    pretrain_epochs: int | None = None


@dataclass(frozen=True)
class BenchRequest:
    """Training runs of ``setting`` (:func:`fulfil`), after the search they need.

    Attributes:
        setting: the network-dataset pair.
        methods: ``None``: the setting's or the preset's.
        iterations, pretrain_epochs: of the search the widths come from (``None``: the search's).
        tags: extra ``(name, value)`` pairs stored with every run (e.g. pre-training epochs).
        metric: what the budget holds equal (``"params"``; notebook 08 ``"macs"`` too).
        merge_last: leave ``neuralscale_last`` out beside ``neuralscale_it1`` after a one-iteration search
            (:func:`bench_methods`).
    """

    setting: Setting
    methods: tuple[str, ...] | None = None
    iterations: int | None = None
    pretrain_epochs: int | None = None
    tags: tuple = ()
    metric: str = "params"
    merge_last: bool = True

    def methods_of(self, p: Preset) -> tuple[str, ...]:
        """The methods asked for (before :func:`bench_methods` merges the last iteration)."""
        return tuple(self.methods or self.setting.methods or p.methods)

    def needs_search(self, p: Preset) -> bool:
        """Whether some method reads the search."""
        return any(get_method(m).needs_search for m in self.methods_of(p))


Request = SearchRequest | BenchRequest


def pretraining_requests(p: Preset, setting: Setting) -> list[BenchRequest]:
    """Notebook 06 on ``setting``: uniform, then NeuralScale (last) after a search with each P_e."""
    out = [BenchRequest(setting, ("uniform",))]
    for pe in setting.pretrain_epochs or p.pretrain_epochs:
        out.append(BenchRequest(setting, ("neuralscale_last",), p.study_iterations, pe, (("pretrain_epochs", pe),)))
    return out


def convcut_requests(p: Preset, setting: Setting) -> list[BenchRequest]:
    """Notebook 07 on ``setting``: :data:`CONVCUT_METHODS` after a search of the study's iterations."""
    return [BenchRequest(setting, CONVCUT_METHODS, p.study_iterations)]


def macs_requests(p: Preset, setting: Setting | None = None) -> list[BenchRequest]:
    """Notebooks 08 and 09: ``setting``'s methods (default: the preset's ``macs_study``; methods default
    :data:`MACS_METHODS`) at equal MACs, NeuralScale (last) at equal parameters too (none without a setting)."""
    s = setting or p.macs_study
    if s is None:
        return []
    return [BenchRequest(s, tuple(s.methods or MACS_METHODS), metric="macs", merge_last=False),
            BenchRequest(s, ("neuralscale_last",), merge_last=False)]


def your_network(p: Preset, arch: str | None = None) -> Setting:
    """Notebook 09's setting: the preset's ``your_network`` study, on ``arch`` (a factory string) when given;
    ``ValueError`` when the preset has none."""
    if p.your_network is None:
        raise ValueError(f"preset {p.name!r} has no your_network setting (notebook 09)")
    return p.your_network if arch is None else dataclasses.replace(p.your_network, arch=arch)


def requests(p: Preset) -> dict[str, list[Request]]:
    """The searches and training runs each notebook asks for under ``p``, by notebook (``"01"``, ...).

    01/02: iteration 1 of the descent setting; 04: its full search; 05: :func:`benchmark_all`; 06:
    :func:`pretraining_study` of each pre-training setting; 07: :func:`convcut_study` of each ConvCut setting;
    08 (when the preset has one): :func:`macs_study`; 09 (when it has one): :func:`macs_study` of its
    ``your_network`` setting. Notebook 03 reads fits only.
    """
    out: dict[str, list[Request]] = {
        "01": [SearchRequest(p.descent, 1)],
        "02": [SearchRequest(p.descent, 1)],
        "04": [SearchRequest(p.descent)],
        "05": [BenchRequest(s) for s in p.benchmark],
        "06": [r for s in p.pretrain for r in pretraining_requests(p, s)],
        "07": [r for s in p.convcut for r in convcut_requests(p, s)],
    }
    if p.macs_study is not None:
        out["08"] = macs_requests(p)
    if p.your_network is not None:
        out["09"] = macs_requests(p, p.your_network)
    return out


# --------------------------------------------------------------------------------------------------------
# searches


def load_data(p: Preset, setting: Setting, paths: Paths) -> ImageData:
    """The dataset of ``setting`` (synthetic data of its shape under a synthetic search), loaded once."""
    return data_of(p, setting, paths).load()


def search(p: Preset, setting: Setting, paths: Paths, iterations: int | None = None,
           pretrain_epochs: int | None = None, progress: bool = True,
           on_row: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> SearchRun:
    """Run or resume architecture descent of ``setting`` under preset ``p``.

    Args:
        p: the preset (its search, with the setting's start ratio and prune overrides).
        setting: arch and dataset.
        paths: where results live (:func:`nslab.paths.paths`).
        iterations: default the search's.
        pretrain_epochs: P_e (default: the search's).
        progress: tqdm bars on stderr.
        on_row: ``on_row(iteration, widths (rows, L), params (rows,))`` after every row a running
            iteration records (a live plot); not called for iterations read from disk.

    Returns:
        The :class:`~nslab.search.descent.SearchRun` of iterations 1..N.
    """
    return run_search(search_spec(p, setting, paths, pretrain_epochs, iterations), progress, on_row)


def run_search(spec: SearchSpec, progress: bool = True,
               on_row: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> SearchRun:
    """Run or resume the search ``spec`` resolves to (up to ``spec.settings.iterations``); see :func:`search`."""
    data = spec.data.load()  # first: loading refreshes the fingerprint the run directory's key holds
    with torch_threads(spec.settings.threads):
        return architecture_descent(spec.arch, spec.dataset, data, spec.settings, spec.run_dir(),
                                    device=str(spec.device), progress=progress, on_row=on_row)


def search_dir(p: Preset, setting: Setting, paths: Paths, pretrain_epochs: int | None = None) -> Path:
    """The run directory :func:`search` uses: ``<results>/descent/<arch>_<dataset>_pe<P_e>_<key>``.

    The key hashes the resolved search (its iteration count aside: more iterations extend the same run),
    the data's fingerprint and the device kind.
    """
    return search_spec(p, setting, paths, pretrain_epochs).run_dir()


# --------------------------------------------------------------------------------------------------------
# training runs


def context(p: Preset, setting: Setting, run: SearchRun | None = None) -> Context:
    """The methods' :class:`~nslab.scaling.methods.Context` of ``setting`` (with ``run``'s fits when given)."""
    if run is not None:
        return Context.from_run(run, p.baseline.morphnet_keep, setting.scale)
    return Context(setting.arch, setting.dataset, False, settings_for(p, setting).search.start_ratio,
                   morphnet_keep=p.baseline.morphnet_keep, scale=setting.scale)


def run_specs(p: Preset, setting: Setting, run: SearchRun | None, methods: Sequence[str], data,
              ratios: Sequence[float] | None = None, tags: tuple = (), metric: str = "params") -> list[RunSpec]:
    """The training runs of ``methods`` x ratios x seeds of ``setting`` (Li et al.: its own ratio only).

    Args:
        p, setting: preset and setting.
        run: the descent run the NeuralScale and MorphNet widths come from.
        methods: method names (:data:`nslab.scaling.methods.METHODS`).
        data: the dataset the runs train on, or anything with its ``fingerprint()`` (part of every key).
        ratios: default ``setting.ratios``; Li et al. runs at ``p.baseline.li_ratio`` (0.75) only.
        tags: extra ``(name, value)`` pairs stored with every run (e.g. pre-training epochs).
        metric: what the budget of ratio r holds equal: the uniform network's ``"params"`` (the paper) or
            ``"macs"`` (notebook 08). A network is keyed by its widths, not by how they were found, so
            uniform's runs are the same runs under either metric.
    """
    ctx = context(p, setting, run)
    recipe = resolve(settings_for(p, setting).recipe)
    protocol = {"test_subset": setting.test_subset, "latency": resolve(p.latency), "device": device_kind(),
                "data": data.fingerprint()}
    out, widths = [], {}
    for name, r, seed in run_slots(p, setting, methods, ratios):
        m = get_method(name)
        if (name, r) not in widths:
            widths[name, r] = m(ctx, ctx.budget(r, metric))
        t = tags + ((("iteration", len(run.iterations)),) if name == "neuralscale_last" and run else ())
        pr = {**protocol, "li": resolve(p.baseline)} if m.trains == "li" else protocol
        out.append(RunSpec(name, setting.arch, setting.dataset, r, seed, tuple(widths[name, r]), recipe, m.convcut,
                           t, pr))
    return out


def run_slots(p: Preset, setting: Setting, methods: Sequence[str], ratios: Sequence[float] | None = None
              ) -> list[tuple[str, float, int]]:
    """``(method, ratio, seed)`` of every run :func:`run_specs` makes, in its order; needs no search.

    Li et al. run at ``p.baseline.li_ratio`` only; a ratio of the setting's grid gets its seeds (the extra
    seeds at the first ratio included), any other ratio the setting's base seeds.
    """
    out = []
    for name in methods:
        li = get_method(name).trains == "li"
        for r in (p.baseline.li_ratio,) if li else tuple(ratios or setting.ratios):
            out.extend((name, r, seed) for seed in (setting.seeds_at(r, name) if r in setting.ratios
                                                    else setting.seeds))
    return out


def train_runs(p: Preset, setting: Setting, specs: Sequence[RunSpec], paths: Paths, progress: bool = True,
               alone_latency: bool = True) -> list[dict]:
    """Records of ``specs`` from the results store, training the missing ones (tqdm over runs).

    A run trains from scratch with the preset's recipe (Li et al.: :func:`nslab.scaling.baselines.li_baseline`,
    train-prune-fine-tune), then measures latency with the preset's protocol: at the end of the run, or, where
    the preset packs several tasks on one device (:func:`~nslab.runs.specs.shares_device`), in a pass alone
    on the device (:func:`~nslab.runs.specs.measure_alone`; the grid runs it as a task of its own). The record
    holds ``acc`` (best test accuracy over epochs, %), ``params``, ``macs`` (per image), ``latency_ms``,
    ``train_seconds`` (Li et al.: training plus fine-tuning) and more. ``alone_latency=False``: the records
    as stored, without the latency measured alone (the grid's training tasks: their latency is a task of
    its own).

    Raises:
        ValueError: a run, trained now or cached, lies within the preset's ``chance_margin`` of chance
            (:func:`nslab.views.tables.check_chance`); the data differs from the one a spec was keyed with.
    """
    import torch

    from ..models import create_model
    from ..views.tables import check_chance
    from .train import seed_everything, train

    data = load_data(p, setting, paths)
    if data is not None and hasattr(data, "fingerprint"):
        fp = data.fingerprint()
        if any(s.protocol.get("data", fp) != fp for s in specs):
            raise ValueError(f"{setting.slug}: the data changed since these runs were keyed (now {fp}); list them "
                             "again")
    if setting.test_subset:
        data = data.test_subset(setting.test_subset)
    recipe = settings_for(p, setting).recipe
    store = ResultsStore(paths.results)
    device = str(device_kind())
    alone = shares_device(p)

    def compute(s: RunSpec) -> dict:
        work = store.work_dir(s)
        if get_method(s.method).trains == "li":
            from ..scaling.baselines import li_baseline

            ctx = context(p, setting)
            res = li_baseline(s.arch, s.dataset, data, recipe, p.baseline, ctx.budget(s.ratio).target,
                              ctx.start_ratio, work, s.seed, device, progress=False)
            model, hist = res.model, res.finetune_history
            seconds = res.train_history.seconds + hist.seconds
        else:
            seed_everything(s.seed)
            model = create_model(s.arch, list(s.widths), s.dataset, s.convcut)
            hist = train(model, data, recipe, device, s.seed, work, progress=False)
            seconds = hist.seconds
        # on a shared device the others' load would be in the timing: measured alone instead (specs.measure_alone)
        lat_ms, lat_sd = (None, None) if alone else latency(model, data.spec.image_size, device, p)
        res = {"acc": hist.best_test_acc, "last_acc": hist.last_test_acc, "epochs": len(hist.records),
               "params": param_count(s.arch, list(s.widths), s.dataset, s.convcut),
               "macs": macs(s.arch, list(s.widths), s.dataset, s.convcut), "trained_widths": list(s.widths),
               "latency_ms": lat_ms, "latency_std_ms": lat_sd, "device": device,
               "train_seconds": seconds, "threads": torch.get_num_threads()}
        shutil.rmtree(work, ignore_errors=True)  # checkpoints were only for resuming; the record is the result
        return res

    records = store.ensure(list(specs), compute, desc=f"{setting.arch}/{setting.dataset} runs", progress=progress)
    check_chance(records, p.chance_margin)  # cached records too: an old run at chance never reaches a table
    return alone_latencies(p, records, specs, paths.results) if alone and alone_latency else records


def bench_methods(p: Preset, setting: Setting, methods: Sequence[str] | None, searched: int | None
                  ) -> tuple[str, ...]:
    """The methods :func:`benchmark` runs: after a one-iteration search ``neuralscale_last`` is
    ``neuralscale_it1``'s network and is left out beside it."""
    methods = tuple(methods or setting.methods or p.methods)
    if searched == 1 and "neuralscale_it1" in methods:
        methods = tuple(m for m in methods if m != "neuralscale_last")
    return methods


def benchmark(p: Preset, setting: Setting, paths: Paths, methods: Sequence[str] | None = None,
              run: SearchRun | None = None, ratios: Sequence[float] | None = None, tags: tuple = (),
              progress: bool = True) -> tuple[SearchRun | None, list[dict]]:
    """Descent (when a method needs it) plus every training run of ``setting``: ``(run, records)``.

    After a one-iteration search ``neuralscale_last`` is ``neuralscale_it1``'s network: run beside it, it
    is left out (alone, as in the pre-training study, it runs).
    """
    methods = tuple(methods or setting.methods or p.methods)
    if run is None and any(get_method(m).needs_search for m in methods):
        run = search(p, setting, paths, progress=progress)
    methods = bench_methods(p, setting, methods, len(run.iterations) if run is not None else None)
    specs = run_specs(p, setting, run, methods, load_data(p, setting, paths), ratios, tags)
    return run, train_runs(p, setting, specs, paths, progress)


def fulfil(p: Preset, req: BenchRequest, paths: Paths, progress: bool = True) -> tuple[SearchRun | None, list[dict]]:
    """The search (when a method needs it) and training runs of one request: ``(run, records)``."""
    s = req.setting
    run = search(p, s, paths, req.iterations, req.pretrain_epochs, progress) if req.needs_search(p) else None
    methods = req.methods_of(p)
    if req.merge_last:
        methods = bench_methods(p, s, methods, len(run.iterations) if run is not None else None)
    specs = run_specs(p, s, run, methods, load_data(p, s, paths), None, req.tags, req.metric)
    return run, train_runs(p, s, specs, paths, progress)


# --------------------------------------------------------------------------------------------------------
# the studies of notebooks 05-08


def benchmark_all(p: Preset, paths: Paths, progress: bool = True) -> list[tuple[Setting, list[dict], list[dict]]]:
    """Every benchmark setting of ``p``: ``(setting, records, summary)`` with summary by method and ratio."""
    from ..views.tables import summarize

    out = []
    for req in requests(p)["05"]:
        _, recs = fulfil(p, req, paths, progress)
        out.append((req.setting, recs, summarize(recs)))
    return out


def pretraining_study(p: Preset, setting: Setting, paths: Paths, progress: bool = True
                      ) -> tuple[dict, list[dict], list[dict]]:
    """Figures 6-9 / Tables 3-4: search with each P_e, train the last iteration's networks and uniform.

    Returns:
        ``(panels, records, summary)``: ``{"r = 0.25 (...)": {"P_e = 0": widths}}`` (configurations of the
        last iteration), every run's record, and the summary by (method, pretrain_epochs, ratio) where
        uniform has ``pretrain_epochs`` ``None``.
    """
    from ..views.tables import summarize

    panels: dict = {}
    last = get_method("neuralscale_last")
    recs: list[dict] = []
    for req in pretraining_requests(p, setting):
        run, more = fulfil(p, req, paths, progress)
        recs += more
        if run is not None:
            ctx = context(p, setting, run)
            for r in setting.ratios:
                b = ctx.budget(r)
                panels.setdefault(f"r = {r:g} ({b.target / 1e6:.3g}M parameters)", {})[
                    f"P_e = {req.pretrain_epochs}"] = last(ctx, b)
    return panels, recs, summarize(recs, by=("method", "pretrain_epochs", "ratio"))


def convcut_study(p: Preset, setting: Setting, paths: Paths, progress: bool = True
                  ) -> tuple[list[dict], list[dict]]:
    """Figures 10-11 / Tables 5-6: uniform, MorphNet, uniform with conv shortcuts, NeuralScale 1 and last.

    NeuralScale's last iteration runs only when the study searches more than one iteration (otherwise it
    is iteration 1's network, and :func:`bench_methods` leaves it out).

    Returns:
        ``(records, summary)`` with the summary by (method, ratio).
    """
    from ..views.tables import summarize

    recs: list[dict] = []
    for req in convcut_requests(p, setting):
        recs += fulfil(p, req, paths, progress)[1]
    return recs, summarize(recs)


def macs_study(p: Preset, paths: Paths, progress: bool = True, setting: Setting | None = None
               ) -> tuple[SearchRun, list[dict], list[dict]]:
    """Notebooks 08 and 09, beyond the paper: the benchmark with the budget in MACs per image as well as parameters.

    ``setting`` (default: the preset's ``macs_study``) trains its methods at the MACs of uniform r (NeuralScale
    solved for MACs from the same fitted law, MorphNet scaled to them), plus NeuralScale (last) at uniform's
    *parameters* as the paper sets it. Every run is a benchmark run keyed by its widths, so the ones Table 1
    already trained (uniform, NeuralScale at equal parameters) are read from the cache.

    Returns:
        ``(run, records, summary)``; each record and summary row carries ``budget``: ``"macs"`` or
        ``"params"`` (what was held equal to uniform's), and the summary is grouped by method, budget
        and ratio. ``ValueError`` without a setting (the preset has no ``macs_study``).
    """
    if setting is None and p.macs_study is None:
        raise ValueError(f"preset {p.name!r} has no macs_study setting (notebook 08)")
    from ..views.tables import summarize

    run, recs = None, []
    for req in macs_requests(p, setting):
        run, more = fulfil(p, req, paths, progress)
        recs += [{**r, "budget": req.metric} for r in more]
    return run, recs, summarize(recs, by=("method", "budget", "ratio"))
