"""What each notebook computes, as plain cached functions over a :class:`~nslab.reproduce.Profile`.

Notebooks only call these and the plot/save helpers. Every function reads its finished artifacts from
the results directory when they exist and computes (with progress bars) only what is missing:

- :func:`descent`: Algorithms 1, 2, 4 through :func:`nslab.descent.architecture_descent`, one shared run
  directory per (arch, dataset, search profile, P_e); iteration 1 is notebook 01's pruning run, more
  iterations extend it.
- :func:`run_specs` / :func:`train_runs` / :func:`benchmark`: the training runs (method x ratio x seed)
  of a setting, cached one JSON per run by :class:`~nslab.results.ResultsStore`.
- :func:`descent_panels`, :func:`paper_table`, :func:`pretraining_study`, :func:`convcut_study`: the data
  behind each figure and table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import io, powerlaw
from .models import param_count, uniform_widths
from .powerlaw import PowerLaw, Scaled
from .reproduce import Paths, Profile, Setting
from .results import ResultsStore, RunSpec

# --- data ---------------------------------------------------------------------------------------------------


def search_profile(p: Profile, setting: Setting | None = None):
    """The :class:`nslab.descent.SearchProfile` of ``p`` (with ``setting``'s start ratio, if it has one)."""
    from .descent import get_profile

    sp = get_profile(p.search)
    if setting is not None and setting.start_ratio is not None and setting.start_ratio != sp.start_ratio:
        sp = replace(sp, name=f"{sp.name}-start{setting.start_ratio:g}", start_ratio=setting.start_ratio)
    if setting is not None and setting.prune:
        tag = "-".join(f"{k}{v}" for k, v in setting.prune).replace("_", "")
        sp = replace(sp, name=f"{sp.name}-{tag}", prune=replace(sp.prune, **dict(setting.prune)))
    return sp


@lru_cache(maxsize=4)
def _load(name: str, root: str | None, synthetic: bool):
    from .data import load_dataset
    from .descent import smoke_data

    return smoke_data(name) if synthetic else load_dataset(name, root, progress=False)


def load_data(p: Profile, setting: Setting, paths: Paths):
    """The dataset of ``setting`` (synthetic data of its shape under a synthetic search), loaded once."""
    return _load(setting.dataset, str(paths.data_root) if paths.data_root else None, search_profile(p).synthetic)


@contextmanager
def _threads(p: Profile):
    """Run a search with the profile's torch thread count, restoring it afterwards.

    Only searches: with one thread and channels-last tensors, training a tiny MobileNetV2 crashes torch
    2.x's CPU backward (heap corruption), so training keeps torch's default.
    """
    import torch

    before = torch.get_num_threads()
    if p.threads:
        torch.set_num_threads(p.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device() -> str:
    from .train import resolve_device

    return str(resolve_device(None))


def uniform_at(p: Profile, setting: Setting, ratio: float) -> list[int]:
    """The uniform network of the paper's ratio ``ratio``: ``int(w * ratio * start_ratio)``."""
    return uniform_widths(setting.arch, ratio * search_profile(p, setting).start_ratio)


def budget(p: Profile, setting: Setting, ratio: float) -> int:
    """Parameters of :func:`uniform_at` (the budget every method is matched to at ``ratio``)."""
    return param_count(setting.arch, uniform_at(p, setting, ratio), setting.dataset)


# --- Algorithms 1, 2, 4: architecture descent ------------------------------------------------------------------

@dataclass(frozen=True)
class Iteration:
    """One architecture-descent iteration.

    Attributes:
        index: 1-based iteration number.
        start: (L,) widths of the fresh network that was pruned.
        widths: (rows, L) recorded trajectory.
        params: (rows,) exact parameter count of each row.
        law: the power law fitted to the trajectory.
        change: mean relative change of the generated configuration vs the start network.
        seconds: wall time of the iteration, s.
    """

    index: int
    start: tuple[int, ...]
    widths: np.ndarray
    params: np.ndarray
    law: PowerLaw
    change: float
    seconds: float


@dataclass(frozen=True)
class DescentRun:
    """A finished architecture-descent run (iterations 1..N) of ``arch`` on ``dataset``."""

    arch: str
    dataset: str
    run_dir: Path
    iterations: tuple[Iteration, ...]
    pretrain_epochs: int

    def widths(self, iteration: int, target: float) -> Scaled:
        """Algorithm 3 with the fit of ``iteration`` (1-based; -1 = last) at ``target`` parameters."""
        it = self.iterations[iteration - 1 if iteration > 0 else iteration]
        return powerlaw.widths_for_budget(it.law, self.arch, self.dataset, target)

    def morphnet_base(self, keep: float = 0.5) -> list[int]:
        """MorphNet (Taylor-FO)'s pruned network: iteration 1's first row with at most ``keep`` of the channels.

        The baseline (:func:`nslab.baselines.morphnet_baseline`) prunes the same start network with the
        same schedule and seed and stops at 50% of the channels; iteration 1 of descent is that very run
        continued to 5%, so its trajectory passes through the same network and no second pruning run is
        needed. Falls back to iteration 1's law (:func:`nslab.explorer.morphnet_base`) if recording
        started below ``keep``.
        """
        first = self.iterations[0]
        target = keep * sum(first.start)
        for row in first.widths:
            if row.sum() <= target:
                return [int(x) for x in row]
        from .explorer import morphnet_base

        return morphnet_base(first.law, self.arch, self.dataset, keep)

    def changes(self, target: float) -> list[float]:
        """Relative L1 change (%) of the configuration at ``target`` between consecutive iterations."""
        from .explorer import relative_change

        return relative_change([self.widths(i, target).widths for i in range(1, len(self.iterations) + 1)])


def descent(p: Profile, setting: Setting, paths: Paths, iterations: int | None = None,
            pretrain_epochs: int | None = None, progress: bool = True,
            on_row: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> DescentRun:
    """Run or resume architecture descent (:func:`nslab.descent.architecture_descent`) for ``setting``.

    The run directory is ``<results>/descent/<arch>_<dataset>_pe<P_e>``: the same search is shared by
    every notebook that needs it (01 runs iteration 1, 04 extends it, 05-07 read its fits), and asking
    for more iterations extends a finished run.

    Args:
        p: the profile (its search profile fixes the pruning schedule).
        setting: arch and dataset.
        paths: where results live (:func:`nslab.reproduce.paths`).
        iterations: default ``p.iterations`` (else the search profile's).
        pretrain_epochs: P_e (default: the search profile's).
        on_row: ``on_row(iteration, widths (rows, L), params (rows,))`` after every row a running
            iteration records (a live plot); not called for iterations read from disk.

    Returns:
        The :class:`DescentRun` of iterations 1..N.
    """
    from .descent import architecture_descent, iteration_dir

    sp = search_profile(p, setting)
    pe = sp.prune.pretrain_epochs if pretrain_epochs is None else pretrain_epochs
    n = iterations or p.iterations or sp.iterations
    data = None if sp.synthetic else load_data(p, setting, paths)
    run_dir = paths.results / "descent" / f"{setting.arch}_{setting.dataset}_{sp.name}_pe{pe}"
    with _threads(p):
        res = architecture_descent(setting.arch, setting.dataset, data, n, sp, run_dir, pretrain_epochs=pe,
                                   device=_device(), progress=progress, on_row=on_row)
    its = []
    for s in res.iterations:
        d = iteration_dir(run_dir, s["iteration"])
        w = io.read_trajectory(d / "trajectory.csv")
        params = np.asarray([param_count(setting.arch, r, setting.dataset) for r in w.tolist()], dtype=np.int64)
        its.append(Iteration(s["iteration"], tuple(s["start_widths"]), w, params, powerlaw.load_fit(d / "fit.json"),
                             float(s["change_from_previous"]), float(s["seconds"])))
    return DescentRun(setting.arch, setting.dataset, run_dir, tuple(its[:n]), pe)


# --- training runs -------------------------------------------------------------------------------------------

def _recipe(p: Profile, setting: Setting):
    from .train import recipe, scale_epochs

    r = recipe(p.recipe, setting.dataset)
    if p.epochs is not None and p.epochs != r.epochs:
        r = scale_epochs(r, p.epochs)
    subset = setting.train_subset or p.train_subset
    if subset:
        # class-balanced: folder datasets are stored class by class, so the first N would be one class
        r = replace(r, subset=subset, subset_mode="balanced")
    return r


def method_widths(p: Profile, setting: Setting, method: str, run: DescentRun | None, ratio: float
                  ) -> tuple[list[int], bool]:
    """``(widths, convcut)`` of ``method`` at the paper's ratio ``ratio`` (budget: :func:`budget`).

    ``neuralscale_it1``/``neuralscale_last`` solve descent fit 1/N for the budget; ``morphnet`` scales the
    50%-pruned network of iteration 1 with one global factor; ``uniform``/``uniform_convcut`` are the
    uniform network itself (the latter with conv shortcuts in every block).
    """
    arch, dataset = setting.arch, setting.dataset
    target = budget(p, setting, ratio)
    if method in ("uniform", "uniform_convcut"):
        return uniform_at(p, setting, ratio), method == "uniform_convcut"
    if run is None:
        raise ValueError(f"method {method!r} needs an architecture-descent run")
    if method == "neuralscale_it1":
        return run.widths(1, target).widths, False
    if method == "neuralscale_last":
        return run.widths(-1, target).widths, False
    if method == "morphnet":
        return powerlaw.scale_widths(run.morphnet_base(), arch, dataset, target).widths, False
    raise ValueError(f"unknown method {method!r}; accepted: uniform, uniform_convcut, morphnet, "
                     "neuralscale_it1, neuralscale_last, li")


def run_specs(p: Profile, setting: Setting, run: DescentRun | None, methods: Sequence[str],
              ratios: Sequence[float] | None = None, tags: tuple = ()) -> list[RunSpec]:
    """The training runs of ``methods`` x ratios x seeds of ``setting`` (Li et al.: its ratio only).

    Args:
        p, setting: profile and setting.
        run: the descent run the NeuralScale and MorphNet widths come from.
        methods: method ids.
        ratios: default ``setting.ratios`` (Li et al. adds the search profile's ``li_ratio``, 0.75).
        tags: extra ``(name, value)`` pairs stored with every run (e.g. pre-training epochs).
    """
    sp = search_profile(p, setting)
    rec = _recipe(p, setting).to_dict()
    ratios = tuple(ratios or setting.ratios)
    out = []
    for m in methods:
        for r in (ratios + ((sp.li_ratio,) if sp.li_ratio not in ratios else ()) if m == "li" else ratios):
            if m == "li" and r != sp.li_ratio:
                continue  # the paper prunes to the r = 0.75 budget only
            if m == "li":  # the budget's uniform network stands in the key; Li's widths are found when run
                widths, convcut = uniform_at(p, setting, r), False
                li = {k: v for k, v in sp.to_dict().items() if k.startswith("li_") and k != "li_train_epochs"}
                t = tags + (("li", {**li, "li_train_recipe": "the benchmark's"}),)
            else:
                widths, convcut = method_widths(p, setting, m, run, r)
                t = tags + ((("iteration", len(run.iterations)),) if m == "neuralscale_last" and run else ())
            for seed in setting.seeds_at(r) if r in setting.ratios else setting.seeds:
                out.append(RunSpec(m, setting.arch, setting.dataset, r, seed, tuple(widths), rec, convcut, t))
    return out


def train_runs(p: Profile, setting: Setting, specs: Sequence[RunSpec], paths: Paths, progress: bool = True
               ) -> list[dict]:
    """Records of ``specs`` from the results store, training the missing ones (tqdm over runs).

    A run trains from scratch with the profile's recipe (Li et al.: :func:`nslab.baselines.li_baseline`,
    train-prune-fine-tune), then measures latency with the profile's ``(batch, warmup, repeat)``. The
    record holds ``acc`` (best test accuracy over epochs, %), ``params``, ``latency_ms`` and more.
    """
    import torch

    from .latency import measure_latency
    from .models import create_model
    from .train import seed_everything, train

    data = load_data(p, setting, paths)
    if setting.test_subset:
        data = data.test_subset(setting.test_subset)
    store = ResultsStore(paths.results)
    device = _device()
    lat_batch, warmup, repeat = p.latency

    def compute(s: RunSpec) -> dict:
        work = store.work_dir(s)
        if s.method == "li":
            from .baselines import li_baseline

            # the full network trains on the same images and epochs as the from-scratch runs
            sp = search_profile(p, setting)
            target = budget(p, setting, s.ratio)
            res = li_baseline(s.arch, s.dataset, None if sp.synthetic else data, sp, target, work, s.seed, device,
                              progress=False, train_recipe=_recipe(p, setting))
            model, hist, widths = res.model, res.finetune_history, res.widths
        else:
            seed_everything(s.seed)
            model = create_model(s.arch, list(s.widths), s.dataset, s.convcut)
            hist = train(model, data, _recipe(p, setting), device, s.seed, work, progress=False)
            widths = list(s.widths)
        size = data.spec.image_size
        # Training leaves the model channels-last; measure the plain layout, as a deployed model would
        # run (and torch's one-thread CPU kernels corrupt memory on channels-last tiny MobileNetV2s).
        model = model.to(memory_format=torch.contiguous_format)
        lat, lat_sd = measure_latency(model, (3, size, size), device, batch=lat_batch, warmup=warmup, repeat=repeat)
        res = {"acc": hist.best_test_acc, "last_acc": hist.last_test_acc, "epochs": len(hist.records),
               "params": param_count(s.arch, widths, s.dataset, s.convcut), "trained_widths": list(widths),
               "latency_ms": lat, "latency_std_ms": lat_sd, "device": device,
               "train_seconds": hist.seconds, "threads": torch.get_num_threads()}
        shutil.rmtree(work, ignore_errors=True)  # checkpoints were only for resuming; the record is the result
        return res

    return store.ensure(list(specs), compute, desc=f"{setting.arch}/{setting.dataset} runs", progress=progress)


def benchmark(p: Profile, setting: Setting, paths: Paths, methods: Sequence[str] | None = None,
              run: DescentRun | None = None, ratios: Sequence[float] | None = None, tags: tuple = (),
              progress: bool = True) -> tuple[DescentRun | None, list[dict]]:
    """Descent (when a method needs it) plus every training run of ``setting``: ``(run, records)``."""
    methods = tuple(methods or setting.methods or p.methods)
    if run is None and any(m not in ("uniform", "uniform_convcut", "li") for m in methods):
        run = descent(p, setting, paths, progress=progress)
    specs = run_specs(p, setting, run, methods, ratios, tags)
    return run, train_runs(p, setting, specs, paths, progress)


# --- what the notebooks show ----------------------------------------------------------------------------------

def power_law_panel(run: DescentRun, iteration: int = 1, title: str | None = None):
    """Figure 2's panel for one descent iteration of this project's search."""
    from .plots import PowerLawPanel

    it = run.iterations[iteration - 1]
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

    if directory is None:
        return []
    d = Path(directory)
    panels = []
    for name, arch, dataset in AUTHORS_FILES:
        if (d / name).is_file():
            w = io.read_trajectory(d / name)
            params = np.asarray([param_count(arch, r, dataset) for r in w.tolist()], dtype=np.int64)
            law = powerlaw.fit_power_law(w, arch, dataset)
            panels.append(PowerLawPanel(f"authors: {arch} {dataset}, iteration 1 ({name})", w, params, law))
    if not panels:
        raise ValueError(f"{d} holds none of the authors' trajectories {[f for f, _, _ in AUTHORS_FILES]}")
    return panels


def fit_rows(panels: Sequence) -> list[dict]:
    """One table row per (panel, layer): alpha, beta, R^2 and the number of trajectory rows fitted."""
    return [{"run": p.title, "layer": i + 1, "alpha": p.law.alpha[i], "beta": p.law.beta[i],
             "r2": p.law.r2[i] if p.law.r2 else None, "rows": len(p.widths)}
            for p in panels for i in range(len(p.law.alpha))]


def descent_panels(p: Profile, setting: Setting, run: DescentRun, ratios: Sequence[float] | None = None
                   ) -> tuple[dict, dict, list[dict]]:
    """Figure 3's data: configurations per iteration at each ratio, their changes, and a table.

    Returns:
        ``(panels, changes, rows)``: ``{"r = 0.25 (0.58M)": {"iteration k": widths}}``,
        ``{"r = 0.25": [change % per iteration >= 2]}`` and one row per (ratio, iteration).
    """
    panels, changes, rows = {}, {}, []
    for r in ratios or setting.ratios:
        target = budget(p, setting, r)
        configs = {}
        for it in run.iterations:
            s = run.widths(it.index, target)
            configs[f"iteration {it.index}"] = s.widths
            rows.append({"ratio": r, "iteration": it.index, "target_params": s.target, "params": s.params,
                         "widths": s.widths})
        panels[f"r = {r:g} ({target / 1e6:.3g}M parameters)"] = configs
        changes[f"r = {r:g}"] = run.changes(target)
    return panels, changes, rows


def benchmark_all(p: Profile, paths: Paths, progress: bool = True) -> list[tuple[Setting, list[dict], list[dict]]]:
    """Every benchmark setting of ``p``: ``(setting, records, summary)`` with summary by method and ratio."""
    from .results import summarize

    out = []
    for s in p.benchmark:
        _, recs = benchmark(p, s, paths, progress=progress)
        out.append((s, recs, summarize(recs)))
    return out


def paper_table(done: Sequence[tuple[Setting, list[dict], list[dict]]], table: int,
                extra: Sequence[str] = ()) -> list[dict]:
    """The comparison rows (reproduced beside published) of the settings that stand in for ``table``."""
    from .results import comparison_table, paper_results

    rows = []
    for s, _, summary in done:
        if s.table != table:
            continue
        paper = paper_results(table=table, arch=s.arch, dataset=s.paper_dataset)
        for r in comparison_table(summary, paper, extra):
            rows.append({"setting": f"{s.arch} {s.dataset}", "paper_setting": f"{s.arch} {s.paper_dataset}", **r})
    return rows


def pretraining_study(p: Profile, setting: Setting, paths: Paths, progress: bool = True
                      ) -> tuple[dict, list[dict], list[dict]]:
    """Figures 6-9 / Tables 3-4: search with each P_e, train the last iteration's networks and uniform.

    Returns:
        ``(panels, records, summary)``: ``{"r = 0.25 (...)": {"P_e = 0": widths}}`` (configurations of the
        last iteration), every run's record, and the summary by (method, pretrain_epochs, ratio) where
        uniform has ``pretrain_epochs`` ``None``.
    """
    from .results import summarize

    iters = p.study_iterations or p.iterations
    _, recs = benchmark(p, setting, paths, methods=("uniform",), progress=progress)
    panels: dict = {}
    for pe in setting.pretrain_epochs or p.pretrain_epochs:
        run = descent(p, setting, paths, iterations=iters, pretrain_epochs=pe, progress=progress)
        for r in setting.ratios:
            target = budget(p, setting, r)
            panels.setdefault(f"r = {r:g} ({target / 1e6:.3g}M parameters)", {})[f"P_e = {pe}"] = \
                run.widths(-1, target).widths
        _, more = benchmark(p, setting, paths, methods=("neuralscale_last",), run=run,
                            tags=(("pretrain_epochs", pe),), progress=progress)
        recs += more
    return panels, recs, summarize(recs, by=("method", "pretrain_epochs", "ratio"))


def convcut_study(p: Profile, setting: Setting, paths: Paths, progress: bool = True
                  ) -> tuple[list[dict], list[dict]]:
    """Figures 10-11 / Tables 5-6: uniform, MorphNet, uniform with conv shortcuts, NeuralScale 1 and last.

    Returns:
        ``(records, summary)`` with the summary by (method, ratio).
    """
    from .results import summarize

    run = descent(p, setting, paths, iterations=p.study_iterations or p.iterations, progress=progress)
    methods = ("uniform", "morphnet", "uniform_convcut", "neuralscale_it1", "neuralscale_last")
    _, recs = benchmark(p, setting, paths, methods=methods, run=run, progress=progress)
    return recs, summarize(recs)


def trajectory_rows(it: Iteration, every: int = 10) -> list[dict]:
    """Every ``every``-th recorded row of an iteration (and the last): row index, parameters, widths."""
    idx = sorted(set(range(0, len(it.widths), every)) | {len(it.widths) - 1})
    return [{"row": i, "params": int(it.params[i]), "channels": int(it.widths[i].sum()),
             "widths": [int(x) for x in it.widths[i]]} for i in idx]


def label_pretraining(rows: Sequence[dict]) -> list[dict]:
    """Copies of summary or paper rows with a ``label``: "uniform" or "NeuralScale P_e = N"."""
    return [{**r, "label": "uniform" if r.get("pretrain_epochs") is None
             else f"NeuralScale P_e = {r['pretrain_epochs']}"} for r in rows]
