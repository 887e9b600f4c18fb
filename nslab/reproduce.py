"""Reproduction profiles and the papermill runner that executes the notebooks headlessly.

A :class:`Profile` is a named, frozen set of settings for every notebook: which data, which training
recipe, how hard to prune, how many descent iterations, which grid of methods x ratios x seeds. Three
are defined (:data:`PROFILES`):

- ``smoke``: synthetic data, tiny networks and grids; every notebook in well under a minute (tests).
- ``cpu``: CIFAR-10 at the data root, VGG11 throughout, the smallest grids that still show each
  figure's point where ResNet18/MobileNetV2 are needed; sized for a 2-core machine (about an hour).
- ``paper``: the released protocol for every network and dataset of the paper (GPU, days).

:func:`run_notebooks` executes ``notebooks/NN_*.ipynb`` in order with papermill, passing ``PROFILE``,
``DATA_ROOT``, ``RESULTS_DIR`` and ``FIGURES_DIR``; executed copies go to ``build/notebooks/``. A failing
notebook raises :class:`NotebookFailed` naming the notebook and the cell.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    """One network-dataset pair of a grid, and the paper element it stands in for.

    Attributes:
        arch: architecture.
        dataset: dataset the runs use (its class count and variant; synthetic data of that shape under a
            synthetic search profile).
        paper_dataset: the dataset of the paper's setting it reproduces (for the "paper" columns).
        ratios: the paper's uniform ratios r; the budget of r is the parameter count of
            ``uniform_widths(arch, r * start_ratio)`` (``start_ratio`` of the search profile: 1 except
            under smoke, whose networks are 1/8 wide).
        seeds: seeds at every ratio.
        extra_seeds: more seeds at the first ratio (the paper's headline ratio 0.25).
        table: which paper table the setting's rows go to (1 or 2 in the benchmark).
        methods: the methods run (``None``: the profile's).
        start_ratio: overrides the search profile's start ratio for this setting (a cheaper search of
            a big network on a CPU); budgets follow it.
        prune: overrides of the search profile's :class:`nslab.prune.PruneSettings` for this setting, as
            ``(field, value)`` pairs (coarser steps for a network whose masked layers stay expensive).
        pretrain_epochs: the P_e compared for this setting in the pre-training study (``None``: the
            profile's).
        train_subset: training images of this setting's from-scratch runs (``None``: the profile's).
        test_subset: evaluate those runs on the first N test images (``None``: all; a CPU evaluates
            MobileNetV2 at ~1 s per 64 images, 10,000 images every epoch dominate a short run).
    """

    arch: str
    dataset: str
    paper_dataset: str
    ratios: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    extra_seeds: tuple[int, ...] = ()
    table: int = 1
    methods: tuple[str, ...] | None = None
    start_ratio: float | None = None
    prune: tuple[tuple[str, object], ...] = ()
    pretrain_epochs: tuple[int, ...] | None = None
    train_subset: int | None = None
    test_subset: int | None = None

    @property
    def slug(self) -> str:
        """``<arch>_<dataset>``, for file names."""
        return f"{self.arch}_{self.dataset}"

    def seeds_at(self, ratio: float) -> tuple[int, ...]:
        """Seeds run at ``ratio``."""
        return self.seeds + (self.extra_seeds if ratio == self.ratios[0] else ())


@dataclass(frozen=True)
class Profile:
    """Everything a notebook needs to know to run at a given cost.

    Attributes:
        name: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        search: the search profile of :mod:`nslab.descent` (pruning schedule, descent iterations, data
            subset, synthetic data, start ratio, Li et al. settings).
        recipe: training recipe name of :func:`nslab.train.recipe` for the from-scratch runs.
        epochs: override of that recipe's epochs (``None``: as the recipe says).
        train_subset: train on this many images (class-balanced) instead of the whole training split
            (synthetic data included).
        iterations: descent iterations of the main search (``None``: the search profile's).
        study_iterations: descent iterations of the pre-training and ConvCut studies (``None``: same).
        descent: the :class:`Setting` notebooks 01, 02 and 04 search on (Figures 2-3); its ratios are the
            ones Figure 3 shows.
        benchmark: Figures 4-5 and Tables 1-2: the settings benchmarked.
        methods: the methods of the benchmark.
        pretrain_epochs: Figures 6-9 and Tables 3-4: the pre-training epochs P_e compared.
        pretrain: the settings of that study (first: VGG11 = Figures 6-7/Table 3; second: MobileNetV2 =
            Figures 8-9/Table 4).
        convcut: Figures 10-11 and Tables 5-6: MobileNetV2 then ResNet18 settings.
        latency: ``(batch, warmup, repeat)`` of the latency measurement.
        threads: torch CPU threads for searches and training (``None``: torch's default). Smoke networks
            are too small to gain from a second thread and lose a lot when the cores are shared.
    """

    name: str
    search: str
    recipe: str
    epochs: int | None = None
    train_subset: int | None = None
    iterations: int | None = None
    study_iterations: int | None = None
    descent: Setting = Setting("vgg11", "cifar10", "cifar10", (0.25, 0.75, 1.25, 2.0))
    benchmark: tuple[Setting, ...] = ()
    methods: tuple[str, ...] = ("uniform", "li", "morphnet", "neuralscale_it1", "neuralscale_last")
    pretrain_epochs: tuple[int, ...] = (0, 2, 5, 10, 30, 60)
    pretrain: tuple[Setting, ...] = ()
    convcut: tuple[Setting, ...] = ()
    latency: tuple[int, int, int] = (100, 20, 80)
    threads: int | None = None


_C = (0.25, 0.75, 2.0)  # the ratios of the paper's CIFAR tables
_T = (0.25, 0.75)  # TinyImageNet in Tables 1-2
_T3 = (0.25, 0.75, 1.0)  # TinyImageNet in Tables 5-6
_SEEDS = (0, 1, 2, 3, 4)

PAPER = Profile(
    name="paper", search="paper", recipe="paper",
    descent=Setting("vgg11", "cifar10", "cifar10", (0.25, 0.75, 1.25, 2.0)),
    benchmark=(
        Setting("vgg11", "cifar10", "cifar10", _C, _SEEDS),
        Setting("mobilenetv2", "cifar100", "cifar100", _C, _SEEDS),
        Setting("resnet18", "tinyimagenet", "tinyimagenet", _T, _SEEDS),
        Setting("vgg11", "cifar100", "cifar100", _C, _SEEDS, table=2),
        Setting("mobilenetv2", "tinyimagenet", "tinyimagenet", _T, _SEEDS, table=2),
        Setting("resnet18", "cifar100", "cifar100", _C, _SEEDS, table=2),
    ),
    pretrain=(Setting("vgg11", "cifar10", "cifar10", _C, _SEEDS),
              Setting("mobilenetv2", "cifar100", "cifar100", _C, _SEEDS)),
    convcut=(Setting("mobilenetv2", "tinyimagenet", "tinyimagenet", _T3, _SEEDS),
             Setting("resnet18", "tinyimagenet", "tinyimagenet", _T3, _SEEDS)),
)

# CPU: VGG11 on CIFAR-10 throughout; MobileNetV2/ResNet18 only where a figure or table is about them, on
# CIFAR-10 too (no TinyImageNet here), at the single ratio 0.25, searched from narrower networks (MobileNetV2
# 1/2, ResNet18 1/4: full width costs seconds per prune step on 2 cores) with one descent iteration.
# The search is nslab.descent's "cpu" profile (a 1,536-image subset, 56 channels per step), 2 iterations for
# VGG11; scratch training is the "cpu" recipe cut to 4 epochs on 5,000 class-balanced images.
# MobileNetV2 at 1/2 width has 8-channel layers: 56-channel steps prune them to one channel before every
# layer has lost one, so only ~2 rows are recorded; it takes 12 channels per step on batches of 32 (~23 rows,
# ~35 s), trains on 1,024 images and tests on 2,000 (its CPU backward is slow). P_e = 0 is left out for it:
# a random MobileNetV2 on 1,536 images keeps some layer whole (beta <= 0, no budget solution).
_CPU_MBV2 = dict(start_ratio=0.5, prune=(("channels_per_step", 12), ("batch_size", 32)), train_subset=1024,
                 test_subset=2000)
CPU = Profile(
    name="cpu", search="cpu", recipe="cpu", epochs=4, train_subset=5_000, iterations=2, study_iterations=1,
    descent=Setting("vgg11", "cifar10", "cifar10", (0.25, 0.75, 1.25, 2.0)),
    benchmark=(Setting("vgg11", "cifar10", "cifar10", (0.25, 0.5), (0,), extra_seeds=(1,)),
               Setting("resnet18", "cifar10", "cifar100", (0.25,), table=2, start_ratio=0.25, test_subset=2000,
                       methods=("uniform", "neuralscale_it1", "neuralscale_last"))),
    pretrain_epochs=(0, 1, 3),
    pretrain=(Setting("vgg11", "cifar10", "cifar10", (0.25,)),
              Setting("mobilenetv2", "cifar10", "cifar100", (0.25,), pretrain_epochs=(1, 3), **_CPU_MBV2)),
    convcut=(Setting("mobilenetv2", "cifar10", "tinyimagenet", (0.25,), **_CPU_MBV2),
             Setting("resnet18", "cifar10", "tinyimagenet", (0.25,), start_ratio=0.25, test_subset=2000)),
    latency=(100, 2, 5),
)

# Smoke: nslab.descent's "smoke" search (synthetic data shaped like the dataset, networks at 1/8 width;
# MobileNetV2 at 1/2 with coarse steps: narrower, its 16-channel layers are pruned to one channel before
# recording starts and the fit degenerates), one epoch of training, the smallest grids that still
# exercise every code path (two seeds at 0.25).
# MobileNetV2's CPU backward costs seconds per batch in torch 2.x whatever its width: train on 16 images.
_SMOKE_MBV2 = dict(start_ratio=0.5, prune=(("channels_per_step", 12), ("batch_size", 16)), train_subset=16)
# ResNet18 at 1/8 width has 8-channel layers that stop changing once recording starts (beta = 0, which the
# budget solver rejects): search it at 1/4, with steps coarse enough (24 channels after each batch of 16; ~25
# rows per iteration) that notebook 05 stays under a minute.
_SMOKE_R18 = dict(start_ratio=0.25, prune=(("channels_per_step", 24), ("batch_size", 16)))
SMOKE = Profile(
    name="smoke", search="smoke", recipe="smoke", epochs=1, train_subset=64, iterations=2, study_iterations=1,
    descent=Setting("vgg11", "cifar10", "cifar10", (0.25, 0.75, 1.25, 2.0)),
    benchmark=(Setting("vgg11", "cifar10", "cifar10", (0.25, 0.75), (0,), extra_seeds=(1,)),
               Setting("resnet18", "cifar10", "cifar100", (0.5,), table=2, **_SMOKE_R18,
                       methods=("uniform", "neuralscale_it1", "neuralscale_last"))),
    pretrain_epochs=(0, 1),
    pretrain=(Setting("vgg11", "cifar10", "cifar10", (0.25,)),
              Setting("mobilenetv2", "cifar10", "cifar100", (0.25,), pretrain_epochs=(1,), **_SMOKE_MBV2)),
    convcut=(Setting("mobilenetv2", "cifar10", "tinyimagenet", (0.25,), **_SMOKE_MBV2),
             Setting("resnet18", "cifar10", "tinyimagenet", (0.5,), **_SMOKE_R18)),
    latency=(8, 1, 2),
    threads=1,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, CPU, PAPER)}


def profile(name: str) -> Profile:
    """The profile ``name``; ``ValueError`` naming the accepted ones otherwise."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {name!r}; accepted: {', '.join(PROFILES)}") from None


# --- paths -----------------------------------------------------------------------------------------------

def project_root(start: str | os.PathLike | None = None) -> Path:
    """The checkout holding ``notebooks/`` and ``pyproject.toml``, searched upwards from ``start`` (cwd).

    Notebooks run from ``notebooks/`` in JupyterLab and from the root under papermill; both resolve to
    the same root. Outside a checkout, the start directory itself.
    """
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "notebooks").is_dir():
            return d
    return here


@dataclass(frozen=True)
class Paths:
    """Where a notebook reads and writes.

    Attributes:
        figures: figures and tables (``figures/``; smoke: ``build/smoke/figures/`` so it never overwrites
            real results).
        results: cached runs (``results/<profile>/``, git-ignored).
        data_root: datasets (``None``: nslab's default, ``$NSLAB_DATA`` or ``~/.cache/nslab/data``).
    """

    figures: Path
    results: Path
    data_root: Path | None


def paths(profile_name: str, figures_dir: str | os.PathLike | None = None,
          results_dir: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None) -> Paths:
    """Resolve a notebook's ``FIGURES_DIR``/``RESULTS_DIR``/``DATA_ROOT`` parameters (``None``: defaults)."""
    profile(profile_name)
    root = project_root()
    default_fig = root / "build" / "smoke" / "figures" if profile_name == "smoke" else root / "figures"
    return Paths(Path(figures_dir) if figures_dir else default_fig,
                 Path(results_dir) if results_dir else root / "results" / profile_name,
                 Path(data_root) if data_root else None)


# --- the papermill runner ------------------------------------------------------------------------------------

class NotebookFailed(RuntimeError):
    """A notebook raised.

    Attributes:
        notebook: its file name.
        cell: 0-based index of the failing cell in the executed copy (papermill inserts an
            ``injected-parameters`` cell after the ``parameters`` cell, so later indices are one higher
            than in the committed notebook).
        error: ``"ExceptionName: message [cell starts: ...]"``.
        executed: path of the executed copy (its outputs hold the traceback).
    """

    def __init__(self, notebook: str, cell: int | None, error: str, executed: Path):
        self.notebook, self.cell, self.error, self.executed = notebook, cell, error, executed
        where = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(f"notebook {notebook} failed in {where}: {error} (executed copy: {executed})")


def list_notebooks(notebooks_dir: str | os.PathLike, only: Sequence[str] | None = None) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks in order, restricted to the numbers in ``only`` (e.g. ``["03", "5"]``)."""
    nbs = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        want = {f"{int(x):02d}" for x in only}
        unknown = want - {p.name[:2] for p in nbs}
        if unknown:
            raise ValueError(f"no notebook numbered {', '.join(sorted(unknown))} in {notebooks_dir}; "
                             f"accepted: {', '.join(p.name[:2] for p in nbs)}")
        nbs = [p for p in nbs if p.name[:2] in want]
    return nbs


def _running_cell(executed: Path) -> int | None:
    """Index of the cell papermill was running or marked failed in an executed copy (a kernel death)."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return None
    for i, c in enumerate(nb.cells):
        if c.metadata.get("papermill", {}).get("status") in ("running", "failed"):
            return i
    return None


def run_notebooks(profile_name: str, only: Sequence[str] | None = None, data_root: str | os.PathLike | None = None,
                  notebooks_dir: str | os.PathLike | None = None, build_dir: str | os.PathLike | None = None,
                  figures_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None,
                  progress: bool = True, kernel_name: str | None = None,
                  parameters: dict | None = None) -> list[dict]:
    """Execute the notebooks in order with papermill under ``profile_name``.

    Args:
        profile_name: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        only: notebook numbers to run (default all).
        data_root, figures_dir, results_dir: passed to every notebook (``None``: the notebook's defaults,
            see :func:`paths`).
        notebooks_dir: default ``<project root>/notebooks``.
        build_dir: executed copies, default ``<project root>/build/notebooks``.
        kernel_name: Jupyter kernel (default: the notebook's, ``python3``).
        parameters: more papermill parameters for every notebook (e.g. ``{"AUTHORS_DIR": ...}``; a notebook
            without that name simply gets an unused variable).

    Returns:
        One ``{"notebook", "executed", "seconds"}`` per notebook.

    Raises:
        NotebookFailed: the first notebook that raised (later ones are not run).
    """
    import papermill as pm

    profile(profile_name)
    root = project_root()
    nb_dir = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    out_dir = Path(build_dir) if build_dir else root / "build" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"PROFILE": profile_name, **(parameters or {})}
    for k, v in (("DATA_ROOT", data_root), ("FIGURES_DIR", figures_dir), ("RESULTS_DIR", results_dir)):
        if v is not None:
            params[k] = str(Path(v).resolve())
    done = []
    for nb in list_notebooks(nb_dir, only):
        out = out_dir / f"{nb.stem}.{profile_name}.ipynb"
        t0 = time.perf_counter()
        try:
            # the bar (stderr) counts cells: a long notebook shows where it is; stdout stays for the CLI's JSON
            pm.execute_notebook(str(nb), str(out), parameters=params, progress_bar=progress, cwd=str(root),
                                kernel_name=kernel_name, log_output=False)
        except Exception as e:  # noqa: BLE001 - a dead kernel or a bad parameter fails the same way
            if not isinstance(e, pm.PapermillExecutionError):
                raise NotebookFailed(nb.name, _running_cell(out), f"{type(e).__name__}: {e}", out) from e
            first = (e.source or "").strip().splitlines()[:1]
            msg = str(e.evalue)
            msg = msg if len(msg) <= 400 else msg[:300] + " ... " + msg[-80:]  # plotly errors list every option
            raise NotebookFailed(nb.name, e.cell_index, f"{e.ename}: {msg}"
                                 + (f" [cell starts: {first[0][:80]!r}]" if first else ""), out) from None
        done.append({"notebook": nb.name, "executed": str(out), "seconds": round(time.perf_counter() - t0, 1)})
        if progress:
            print(f"{nb.name}: ok in {done[-1]['seconds']:.1f} s -> {out}", file=sys.stderr, flush=True)
    return done


def with_overrides(p: Profile, **changes) -> Profile:
    """A copy of profile ``p`` with fields replaced (e.g. fewer iterations for an experiment)."""
    return replace(p, **changes)
