"""The grid of a preset: its searches and training runs, each cached under a key of its resolved settings.

Notebooks call these; every function reads finished artifacts from the results directory and computes
(with progress bars on stderr) only what is missing:

- :func:`search`: architecture descent of a setting, one run directory per resolved search
  (``<results>/descent/<arch>_<dataset>_pe<P_e>_<key>``): notebook 01 runs iteration 1, 04 extends it,
  05-07 read its fits.
- :func:`run_specs` / :func:`train_runs` / :func:`benchmark`: the training runs (method x ratio x seed)
  of a setting, one record per run in :class:`~nslab.runs.store.ResultsStore`.
- :func:`benchmark_all`, :func:`pretraining_study`, :func:`convcut_study`: the grids of Figures 4-11.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..config import Preset, Setting, digest, resolve
from ..data import ImageData
from ..device import torch_threads
from ..models import macs, param_count
from ..paths import Paths
from ..scaling.methods import Context, get_method
from ..search.descent import SearchRun, architecture_descent, resolved_settings
from .store import ResultsStore, RunSpec

__all__ = ["benchmark", "benchmark_all", "context", "convcut_study", "load_data", "pretraining_study",
           "run_slots", "run_specs", "search", "search_dir", "train_runs"]


@lru_cache(maxsize=4)
def _load(name: str, root: str | None, synthetic: bool) -> ImageData:
    from ..data import load_dataset, smoke_data

    return smoke_data(name) if synthetic else load_dataset(name, root, progress=False)


def load_data(p: Preset, setting: Setting, paths: Paths) -> ImageData:
    """The dataset of ``setting`` (synthetic data of its shape under a synthetic search), loaded once."""
    return _load(setting.dataset, str(paths.data_root) if paths.data_root else None, p.search.synthetic)


def _device() -> str:
    from .train import resolve_device

    return str(resolve_device(None))


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
    ss = p.search_for(setting, pretrain_epochs, iterations)
    run_dir = search_dir(p, setting, paths, pretrain_epochs)
    with torch_threads(ss.threads):
        return architecture_descent(setting.arch, setting.dataset, load_data(p, setting, paths), ss, run_dir,
                                    device=_device(), progress=progress, on_row=on_row)


def search_dir(p: Preset, setting: Setting, paths: Paths, pretrain_epochs: int | None = None) -> Path:
    """The run directory :func:`search` uses: ``<results>/descent/<arch>_<dataset>_pe<P_e>_<key>``.

    The key hashes the resolved search (its iteration count aside: more iterations extend the same run),
    the data's fingerprint and the device kind.
    """
    ss = p.search_for(setting, pretrain_epochs)
    data = load_data(p, setting, paths)
    key = digest(resolved_settings(setting.arch, setting.dataset, False, ss, 0, data, _device()), n=10)
    return paths.results / "descent" / f"{setting.slug}_pe{ss.prune.pretrain_epochs}_{key}"


def context(p: Preset, setting: Setting, run: SearchRun | None = None) -> Context:
    """The methods' :class:`~nslab.scaling.methods.Context` of ``setting`` (with ``run``'s fits when given)."""
    if run is not None:
        return Context.from_run(run, p.baseline.morphnet_keep, setting.scale)
    return Context(setting.arch, setting.dataset, False, p.search_for(setting).start_ratio,
                   morphnet_keep=p.baseline.morphnet_keep, scale=setting.scale)


def run_specs(p: Preset, setting: Setting, run: SearchRun | None, methods: Sequence[str], data: ImageData,
              ratios: Sequence[float] | None = None, tags: tuple = (), metric: str = "params") -> list[RunSpec]:
    """The training runs of ``methods`` x ratios x seeds of ``setting`` (Li et al.: its own ratio only).

    Args:
        p, setting: preset and setting.
        run: the descent run the NeuralScale and MorphNet widths come from.
        methods: method names (:data:`nslab.scaling.methods.METHODS`).
        data: the dataset the runs train on (its fingerprint is part of every key).
        ratios: default ``setting.ratios``; Li et al. runs at ``p.baseline.li_ratio`` (0.75) only.
        tags: extra ``(name, value)`` pairs stored with every run (e.g. pre-training epochs).
        metric: what the budget of ratio r holds equal: the uniform network's ``"params"`` (the paper) or
            ``"macs"`` (notebook 08). A network is keyed by its widths, not by how they were found, so
            uniform's runs are the same runs under either metric.
    """
    ctx = context(p, setting, run)
    recipe = resolve(p.recipe_for(setting))
    protocol = {"test_subset": setting.test_subset, "latency": resolve(p.latency), "device": _device().split(":")[0],
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


def train_runs(p: Preset, setting: Setting, specs: Sequence[RunSpec], paths: Paths, progress: bool = True
               ) -> list[dict]:
    """Records of ``specs`` from the results store, training the missing ones (tqdm over runs).

    A run trains from scratch with the preset's recipe (Li et al.: :func:`nslab.scaling.baselines.li_baseline`,
    train-prune-fine-tune), then measures latency with the preset's protocol. The record holds ``acc``
    (best test accuracy over epochs, %), ``params``, ``macs`` (per image), ``latency_ms``, ``train_seconds``
    (Li et al.: training plus fine-tuning) and more.

    Raises:
        ValueError: a run, trained now or cached, lies within the preset's ``chance_margin`` of chance
            (:func:`nslab.views.tables.check_chance`).
    """
    import torch

    from ..models import create_model
    from ..scaling.latency import measure_latency
    from ..views.tables import check_chance
    from .train import seed_everything, train

    data = load_data(p, setting, paths)
    if setting.test_subset:
        data = data.test_subset(setting.test_subset)
    recipe = p.recipe_for(setting)
    store = ResultsStore(paths.results)
    device = _device()

    def compute(s: RunSpec) -> dict:
        work = store.work_dir(s)
        if get_method(s.method).trains == "li":
            from ..scaling.baselines import li_baseline

            ctx = context(p, setting)
            res = li_baseline(s.arch, s.dataset, data, recipe, p.baseline, ctx.budget(s.ratio).params,
                              ctx.start_ratio, work, s.seed, device, progress=False)
            model, hist = res.model, res.finetune_history
            seconds = res.train_history.seconds + hist.seconds
        else:
            seed_everything(s.seed)
            model = create_model(s.arch, list(s.widths), s.dataset, s.convcut)
            hist = train(model, data, recipe, device, s.seed, work, progress=False)
            seconds = hist.seconds
        size = data.spec.image_size
        # Training leaves the model channels-last; measure the plain layout, as a deployed model would
        # run (and torch's one-thread CPU kernels corrupt memory on channels-last tiny MobileNetV2s).
        model = model.to(memory_format=torch.contiguous_format)
        lat = p.latency
        lat_ms, lat_sd = measure_latency(model, (3, size, size), device, batch=lat.batch, warmup=lat.warmup,
                                         repeat=lat.repeat)
        res = {"acc": hist.best_test_acc, "last_acc": hist.last_test_acc, "epochs": len(hist.records),
               "params": param_count(s.arch, list(s.widths), s.dataset, s.convcut),
               "macs": macs(s.arch, list(s.widths), s.dataset, s.convcut), "trained_widths": list(s.widths),
               "latency_ms": lat_ms, "latency_std_ms": lat_sd, "device": device,
               "train_seconds": seconds, "threads": torch.get_num_threads()}
        shutil.rmtree(work, ignore_errors=True)  # checkpoints were only for resuming; the record is the result
        return res

    records = store.ensure(list(specs), compute, desc=f"{setting.arch}/{setting.dataset} runs", progress=progress)
    check_chance(records, p.chance_margin)  # cached records too: an old run at chance never reaches a table
    return records


CONVCUT_METHODS = ("uniform", "morphnet", "uniform_convcut", "neuralscale_it1", "neuralscale_last")
MACS_METHODS = ("uniform", "morphnet", "neuralscale_last")


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


def benchmark_all(p: Preset, paths: Paths, progress: bool = True) -> list[tuple[Setting, list[dict], list[dict]]]:
    """Every benchmark setting of ``p``: ``(setting, records, summary)`` with summary by method and ratio."""
    from ..views.tables import summarize

    out = []
    for s in p.benchmark:
        _, recs = benchmark(p, s, paths, progress=progress)
        out.append((s, recs, summarize(recs)))
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

    _, recs = benchmark(p, setting, paths, methods=("uniform",), progress=progress)
    panels: dict = {}
    last = get_method("neuralscale_last")
    for pe in setting.pretrain_epochs or p.pretrain_epochs:
        run = search(p, setting, paths, iterations=p.study_iterations, pretrain_epochs=pe, progress=progress)
        ctx = context(p, setting, run)
        for r in setting.ratios:
            b = ctx.budget(r)
            panels.setdefault(f"r = {r:g} ({b.params / 1e6:.3g}M parameters)", {})[f"P_e = {pe}"] = last(ctx, b)
        _, more = benchmark(p, setting, paths, methods=("neuralscale_last",), run=run,
                            tags=(("pretrain_epochs", pe),), progress=progress)
        recs += more
    return panels, recs, summarize(recs, by=("method", "pretrain_epochs", "ratio"))


def convcut_study(p: Preset, setting: Setting, paths: Paths, progress: bool = True
                  ) -> tuple[list[dict], list[dict]]:
    """Figures 10-11 / Tables 5-6: uniform, MorphNet, uniform with conv shortcuts, NeuralScale 1 and last.

    NeuralScale's last iteration runs only when the study searches more than one iteration (otherwise it
    is iteration 1's network, and :func:`benchmark` leaves it out).

    Returns:
        ``(records, summary)`` with the summary by (method, ratio).
    """
    from ..views.tables import summarize

    run = search(p, setting, paths, iterations=p.study_iterations, progress=progress)
    _, recs = benchmark(p, setting, paths, methods=CONVCUT_METHODS, run=run, progress=progress)
    return recs, summarize(recs)


def macs_study(p: Preset, paths: Paths, progress: bool = True) -> tuple[SearchRun, list[dict], list[dict]]:
    """Notebook 08, beyond the paper: the benchmark with the budget in MACs per image instead of parameters.

    The preset's ``macs_study`` setting trains its methods at the MACs of uniform r (NeuralScale solved
    for MACs from the same fitted law, MorphNet scaled to them), plus NeuralScale (last) at uniform's
    *parameters* as the paper sets it, for reference. Every run is a benchmark run keyed by its widths,
    so the ones Table 1 already trained (uniform, NeuralScale at equal parameters) are read from the cache.

    Returns:
        ``(run, records, summary)``; each record and summary row carries ``budget``: ``"macs"`` or
        ``"params"`` (what was held equal to uniform's), and the summary is grouped by method, budget
        and ratio.

    Raises:
        ValueError: the preset has no ``macs_study`` setting.
    """
    setting = p.macs_study
    if setting is None:
        raise ValueError(f"preset {p.name!r} has no macs_study setting (notebook 08)")
    from ..views.tables import summarize

    run = search(p, setting, paths, progress=progress)
    data = load_data(p, setting, paths)
    methods = tuple(setting.methods or MACS_METHODS)
    recs = []
    for metric, names in (("macs", methods), ("params", ("neuralscale_last",))):
        specs = run_specs(p, setting, run, names, data, metric=metric)
        recs += [{**r, "budget": metric} for r in train_runs(p, setting, specs, paths, progress)]
    return run, recs, summarize(recs, by=("method", "budget", "ratio"))
