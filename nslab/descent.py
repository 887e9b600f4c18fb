"""Algorithm 4: architecture descent over a run directory, and the named search profiles.

Run directory layout (every file written atomically; ``summary.json`` last, so it marks a finished
iteration)::

    RUN_DIR/settings.json            resolved settings (arch, dataset, profile, prune schedule, seed, ...)
    RUN_DIR/descent.json             one line of results per finished iteration (fit, convergence)
    RUN_DIR/iter_01/trajectory.csv   the pruning trajectory (header w1..wL,params)
    RUN_DIR/iter_01/fit.json         the power law fitted on it
    RUN_DIR/iter_01/widths.json      the widths that law generates at the start budget (ratio 1)
    RUN_DIR/iter_01/summary.json     everything about the iteration

A rerun skips iterations whose ``summary.json`` exists and redoes an interrupted one from its start;
raising ``iterations`` continues a finished run.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io
from .data import ImageData, synthetic_data
from .datasets import dataset_spec
from .models import default_widths, get_arch, param_count, uniform_widths
from .powerlaw import PowerLaw, fit_power_law, load_fit, save_fit, widths_for_budget
from .prune import PruneSettings, prune

__all__ = [
    "PROFILES",
    "DescentResult",
    "SearchProfile",
    "architecture_descent",
    "get_profile",
    "iteration_dir",
    "law_from_run",
    "load_run",
    "smoke_data",
]

SETTINGS = "settings.json"
LOG = "descent.json"


@dataclass(frozen=True)
class SearchProfile:
    """A named, frozen set of search (and baseline) settings, saved next to every run it produced.

    Attributes:
        name: profile name.
        prune: the pruning schedule of every descent iteration (Algorithm 1).
        iterations: default number of descent iterations.
        train_subset: keep this many training images (class-balanced, seeded); ``None`` keeps all.
        synthetic: search on :func:`smoke_data` instead of a real dataset.
        start_ratio: iteration 1 prunes ``uniform_widths(arch, start_ratio)`` (1.0: the default network);
            its parameter count is the budget of every generated start network.
        morphnet_stop_fraction: fraction of channels left by the MorphNet baseline's single pruning.
        li_ratio: the uniform ratio whose budget Li et al. prune to (the paper: 0.75).
        li_train_recipe: training recipe name (``nslab.train``) of Li et al.'s full network.
        li_train_epochs: epochs of that training (``None``: the recipe's own).
        li_finetune_epochs: fine-tuning epochs after the L1 pruning.
        li_finetune_lr: fine-tuning learning rate (constant).
    """

    name: str
    prune: PruneSettings
    iterations: int
    train_subset: int | None = None
    synthetic: bool = False
    start_ratio: float = 1.0
    morphnet_stop_fraction: float = 0.5
    li_ratio: float = 0.75
    li_train_recipe: str = "paper"
    li_train_epochs: int | None = None
    li_finetune_epochs: int = 40
    li_finetune_lr: float = 0.001

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return dataclasses.asdict(self)


PROFILES: dict[str, SearchProfile] = {
    # The released protocol: 10 pre-training epochs at lr 0.1, then lr 0.01 / 1.5 every 10 epochs while
    # removing 10 channels every 50 minibatches of 256 (SGD momentum 0.5, wd 5e-4), to 5% of the channels.
    "paper": SearchProfile("paper", PruneSettings(), iterations=15),
    # A 2-core CPU: one VGG11 CIFAR-10 iteration in under 3 minutes with >= 30 recorded rows. A small
    # class-balanced subset (1536 images), one pre-training epoch over it, and coarse, frequent steps:
    # 56 channels after every minibatch of 64 (47 steps; the first ~8, before every layer has lost a
    # channel, are not recorded). The full-width network costs most per step, so the early phase is kept
    # short; the network shrinks as it goes, so later steps are cheap.
    "cpu": SearchProfile(
        "cpu",
        PruneSettings(
            channels_per_step=56,
            batches_per_step=1,
            batch_size=64,
            pretrain_epochs=1,
            pretrain_lr=0.05,
            lr=0.01,
            lr_decay_every=10,
            channels_last=True,
        ),
        iterations=3,
        train_subset=1536,
        li_train_recipe="cpu",
        li_train_epochs=2,
        li_finetune_epochs=1,
        # the paper's 0.001 suits a converged network (its last training lr is 1e-4); after a few CPU epochs
        # that ended near lr 0.01-0.02, 0.001 leaves the pruned network where pruning put it
        li_finetune_lr=0.01,
    ),
    # Seconds, for tests and notebook smoke runs: synthetic data and a network at 1/8 of the default widths.
    "smoke": SearchProfile(
        "smoke",
        PruneSettings(
            channels_per_step=6,
            batches_per_step=1,
            batch_size=32,
            pretrain_epochs=1,
            pretrain_lr=0.05,
            lr=0.02,
        ),
        iterations=2,
        synthetic=True,
        start_ratio=0.125,
        li_train_recipe="smoke",
        li_train_epochs=1,
        li_finetune_epochs=1,
        li_finetune_lr=0.01,
    ),
}


def get_profile(name: str | SearchProfile) -> SearchProfile:
    """The search profile ``name`` (``paper``, ``cpu``, ``smoke``); a :class:`SearchProfile` passes through.

    Raises:
        ValueError: unknown name (the message lists the accepted ones).
    """
    if isinstance(name, SearchProfile):
        return name
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown search profile {name!r}; accepted: {', '.join(PROFILES)}") from None


def smoke_data(dataset: str = "cifar10", seed: int = 0) -> ImageData:
    """Synthetic data shaped like ``dataset`` (its class count and image size), for the smoke profile."""
    spec = dataset_spec(dataset)
    d = synthetic_data(
        num_classes=spec.num_classes,
        train_per_class=max(4, 640 // spec.num_classes),
        test_per_class=max(2, 200 // spec.num_classes),
        image_size=spec.image_size,
        seed=seed,
    )
    # The models are built for ``dataset``: carry its spec so class count and size checks line up.
    return dataclasses.replace(d, spec=dataclasses.replace(spec, mean=d.spec.mean, std=d.spec.std))


def iteration_dir(run_dir: str | Path, k: int) -> Path:
    """``RUN_DIR/iter_XX`` of (1-based) iteration ``k``."""
    return Path(run_dir) / f"iter_{k:02d}"


@dataclass
class DescentResult:
    """The finished iterations of a run, oldest first (each one's ``summary.json`` content)."""

    run_dir: Path
    settings: dict
    iterations: list[dict] = field(default_factory=list)

    def law(self, k: int | None = None) -> PowerLaw:
        """The power law of iteration ``k`` (1-based; default the last)."""
        return law_from_run(self.run_dir, k)[0]

    def to_dict(self) -> dict:
        """JSON summary: settings and, per iteration, the fit and the generated widths."""
        return {
            "run_dir": str(self.run_dir),
            "settings": self.settings,
            "iterations": [_brief(s) for s in self.iterations],
        }


def _brief(summary: dict) -> dict:
    fit = summary["fit"]
    return {
        "iteration": summary["iteration"],
        "rows": fit["rows"],
        "alpha": fit["alpha"],
        "beta": fit["beta"],
        "r2": fit["r2"],
        "median_r2": float(np.median(fit["r2"])),
        "generated_widths": summary["generated"]["widths"],
        "change_from_previous": summary["change_from_previous"],
        "seconds": summary["seconds"],
    }


def _check_iterations(iterations: int) -> int:
    if not isinstance(iterations, (int, np.integer)) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    return int(iterations)


def _resolved_settings(
    arch, dataset, convcut, prof: SearchProfile, settings: PruneSettings, seed, data
) -> dict:
    return {
        "arch": arch,
        "dataset": dataset,
        "convcut": convcut,
        "seed": seed,
        "profile": prof.name,
        "prune": settings.to_dict(),
        "train_subset": prof.train_subset,
        "start_ratio": prof.start_ratio,
        "data": data.source,
        "num_train": data.num_train,
    }


def _same_run(saved: dict, now: dict, run_dir: Path) -> None:
    diff = [k for k in now if k not in ("data",) and saved.get(k) != now[k]]
    if diff:
        detail = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in diff)
        raise ValueError(
            f"{run_dir} holds a search with different settings ({detail}); "
            "use another --out directory or the same settings"
        )


def architecture_descent(
    arch: str,
    dataset: str,
    data: ImageData | None,
    iterations: int | None = None,
    profile: str | SearchProfile = "cpu",
    run_dir: str | Path = "runs/search",
    pretrain_epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    convcut: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_row: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> DescentResult:
    """Algorithm 4: prune, fit, generate the next start network at the same budget; repeat.

    Iteration 1 prunes the default network (``uniform_widths(arch, profile.start_ratio)``); iteration
    k >= 2 prunes a fresh random network (seed ``seed + k - 1``) whose widths the fit of iteration k-1
    generates at the default network's parameter count (ratio 1).

    Args:
        arch: architecture name.
        dataset: dataset name (class count and variant of the networks).
        data: the data to prune on; ``None`` with a synthetic profile builds :func:`smoke_data`. The
            profile's ``train_subset`` is applied here.
        iterations: total iterations wanted (default: the profile's); a finished run continues when it
            is raised.
        profile: profile name or object.
        run_dir: the run directory (created; an existing one of the same settings is resumed).
        pretrain_epochs: overrides the profile's pre-training epochs (the paper's supplement: 0..60).
        seed: base seed.
        device: training device.
        convcut: ResNet18/MobileNetV2 with conv shortcuts everywhere.
        progress: tqdm bars.
        log: called with one line per event (default: tqdm.write when ``progress``).
        on_row: called as ``on_row(iteration, widths, params)`` after every row a running iteration
            records (see :func:`nslab.prune.prune`); finished iterations are read back, not replayed.

    Returns:
        A :class:`DescentResult` with all finished iterations.

    Raises:
        ValueError: bad settings, a run directory of other settings, or an iteration that recorded too
            few rows to fit (the message says which and why).
    """
    from tqdm.auto import tqdm

    prof = get_profile(profile)
    get_arch(arch)
    dataset_spec(dataset)
    n_iter = _check_iterations(prof.iterations if iterations is None else iterations)
    settings = prof.prune
    if pretrain_epochs is not None:
        settings = dataclasses.replace(settings, pretrain_epochs=pretrain_epochs)
    if data is None:
        if not prof.synthetic:
            raise ValueError(f"profile {prof.name!r} needs a dataset (data=None only for synthetic profiles)")
        data = smoke_data(dataset, seed)
    if prof.train_subset is not None:
        data = data.subset(prof.train_subset, "balanced", seed)
    if log is None:
        log = tqdm.write if progress else (lambda _msg: None)

    run_dir = Path(run_dir)
    now = _resolved_settings(arch, dataset, convcut, prof, settings, seed, data)
    if (run_dir / SETTINGS).exists():
        _same_run(io.read_json(run_dir / SETTINGS), now, run_dir)
    io.write_json(run_dir / SETTINGS, {**now, "iterations": n_iter, "profile_settings": prof.to_dict()})

    base = default_widths(arch) if prof.start_ratio == 1 else uniform_widths(arch, prof.start_ratio)
    budget = param_count(arch, base, dataset, convcut)
    done: list[dict] = []
    prev = base
    for k in tqdm(range(1, n_iter + 1), desc=f"descent {arch}", disable=not progress):
        it = iteration_dir(run_dir, k)
        if (it / "summary.json").exists():
            summary = io.read_json(it / "summary.json")
            done.append(summary)
            prev = summary["generated"]["widths"]
            continue
        summary = _run_iteration(
            k, prev, arch, dataset, convcut, data, settings, seed, device, budget, it, progress,
            None if on_row is None else functools.partial(on_row, k),
        )
        log(
            f"iteration {k}: {summary['fit']['rows']} rows, "
            f"median R^2 {np.median(summary['fit']['r2']):.3f}, "
            f"widths {summary['generated']['widths']}, change {summary['change_from_previous']:.3f}"
        )
        done.append(summary)
        io.write_json(run_dir / LOG, [_brief(s) for s in done])
        prev = summary["generated"]["widths"]
    io.write_json(run_dir / LOG, [_brief(s) for s in done])
    return DescentResult(run_dir, now, done)


def _run_iteration(
    k, start, arch, dataset, convcut, data, settings, seed, device, budget, it, progress, on_row
) -> dict:
    t0 = time.perf_counter()
    res = prune(
        arch,
        data,
        settings,
        widths=start,
        dataset=dataset,
        convcut=convcut,
        device=device,
        seed=seed + k - 1,
        progress=progress,
        on_row=on_row,
    )
    io.write_trajectory(it / "trajectory.csv", res.widths, res.params)
    try:
        law = fit_power_law(res.widths, arch, dataset, convcut)
    except ValueError as e:
        raise ValueError(
            f"iteration {k}: cannot fit the power law: {e}. Lower channels_per_step or "
            f"stop_fraction so that more rows are recorded (trajectory kept in {it})"
        ) from None
    save_fit(it / "fit.json", law, arch=arch, dataset=dataset, convcut=convcut, iteration=k)
    try:
        gen = widths_for_budget(law, arch, dataset, budget, convcut=convcut)
    except ValueError as e:
        raise ValueError(f"iteration {k}: the fit cannot generate the next network: {e}") from None
    io.write_json(
        it / "widths.json",
        {
            "ratio": 1.0,
            "widths": gen.widths,
            "params": gen.params,
            "target": gen.target,
            "rel_error": gen.rel_error,
        },
    )
    # Convergence: how much the generated configuration moved, mean over layers of |w_k - w_{k-1}| / w_{k-1}.
    change = float(np.mean(np.abs(np.subtract(gen.widths, start)) / np.asarray(start, dtype=float)))
    summary = {
        "iteration": k,
        "start_widths": list(start),
        "start_params": param_count(arch, start, dataset, convcut),
        "final_widths": res.final_widths,
        "steps": res.steps,
        "stop_reason": res.stop_reason,
        "fit": law.to_dict(),
        "generated": {
            "ratio": 1.0,
            "widths": gen.widths,
            "params": gen.params,
            "target": gen.target,
            "rel_error": gen.rel_error,
        },
        "change_from_previous": change,
        "final_loss": res.losses[-1] if res.losses else None,
        "pretrain_seconds": res.pretrain_seconds,
        "prune_seconds": res.seconds,
        "seconds": time.perf_counter() - t0,
    }
    io.write_json(it / "summary.json", summary)
    return summary


def load_run(run_dir: str | Path) -> DescentResult:
    """The finished iterations of a run directory (no work is done)."""
    run_dir = Path(run_dir)
    settings = io.read_json(run_dir / SETTINGS)
    done = []
    k = 1
    while (iteration_dir(run_dir, k) / "summary.json").exists():
        done.append(io.read_json(iteration_dir(run_dir, k) / "summary.json"))
        k += 1
    return DescentResult(run_dir, settings, done)


def law_from_run(run_dir: str | Path, iteration: int | None = None) -> tuple[PowerLaw, str, str, bool]:
    """The power law of a search run's iteration, with the network it belongs to.

    Args:
        run_dir: a run directory written by :func:`architecture_descent`.
        iteration: 1-based iteration; ``None`` takes the last finished one.

    Returns:
        ``(law, arch, dataset, convcut)``.

    Raises:
        ValueError: not a run directory, or the iteration is not finished (naming the finished ones).
    """
    run_dir = Path(run_dir)
    if not (run_dir / SETTINGS).exists():
        raise ValueError(f"{run_dir} is not a search run directory (no {SETTINGS})")
    s = io.read_json(run_dir / SETTINGS)
    finished = load_run(run_dir).iterations
    if not finished:
        raise ValueError(f"{run_dir} has no finished iteration yet")
    k = len(finished) if iteration is None else iteration
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(finished):
        raise ValueError(
            f"iteration {iteration!r} of {run_dir} is not finished; finished: 1..{len(finished)}"
        )
    law = load_fit(iteration_dir(run_dir, k) / "fit.json")
    return law, s["arch"], s["dataset"], bool(s.get("convcut", False))
