"""Algorithm 4: architecture descent over a run directory, and its typed results.

Run directory layout (every file written atomically; ``summary.json`` last, so it marks a finished
iteration)::

    RUN_DIR/settings.json            resolved settings (network, search, seed, data fingerprint, device kind)
    RUN_DIR/descent.json             one line per finished iteration on disk (fit, generated widths, change)
    RUN_DIR/iter_01/prune/           the running iteration's pruning checkpoint (removed when it finishes)
    RUN_DIR/iter_01/trajectory.csv   the pruning trajectory (header w1..wL,params)
    RUN_DIR/iter_01/fit.json         the power law fitted on it
    RUN_DIR/iter_01/summary.json     everything else about the iteration

A rerun skips iterations whose ``summary.json`` exists and resumes an interrupted one at its last prune
step; asking for more iterations continues a finished run, asking for fewer returns the first ones and
leaves the rest on disk. :class:`SearchRun` (with its :class:`Iteration` s) is the one type written here
and read back by everything else.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import io
from ..config import SearchSettings, resolve
from ..data import ImageData, dataset_spec, smoke_data
from ..models import get_arch, param_count, uniform_widths
from ..scaling.powerlaw import PowerLaw, fit_power_law, load_fit, save_fit
from ..scaling.solver import Scaled, widths_for_budget
from .prune import prune, weights_digest

__all__ = ["Iteration", "SearchRun", "architecture_descent", "iteration_dir", "load_run", "search_data"]

SETTINGS = "settings.json"
LOG = "descent.json"


def iteration_dir(run_dir: str | Path, k: int) -> Path:
    """``RUN_DIR/iter_XX`` of (1-based) iteration ``k``."""
    return Path(run_dir) / f"iter_{k:02d}"


@dataclass(frozen=True)
class Iteration:
    """One finished architecture-descent iteration.

    Attributes:
        index: 1-based iteration number.
        start: (L,) widths of the fresh network that was pruned.
        widths: (rows, L) int64 recorded trajectory (alive channels per layer after each recorded step).
        params: (rows,) int64 exact parameter count of each row.
        law: the power law fitted to the trajectory.
        generated: the widths ``law`` generates at the search budget: the next iteration's start.
        change: mean over layers of ``|generated - start| / start`` (convergence of the descent).
        summary: the rest of ``summary.json`` (steps, stop reason, seconds, final loss, the test accuracy
            pruning started from as ``pretrain_accuracy`` in percent, ...).
    """

    index: int
    start: tuple[int, ...]
    widths: np.ndarray
    params: np.ndarray
    law: PowerLaw
    generated: Scaled
    change: float
    summary: dict

    @property
    def at_half(self) -> tuple[int, ...] | None:
        """(L,) alive widths when half the start network's channels were pruned (MorphNet's network; ``None``
        if pruning stopped before, or the run is of an older nslab)."""
        w = self.summary.get("at_half")
        return None if w is None else tuple(int(x) for x in w)

    @property
    def seconds(self) -> float:
        """Wall time of the session that finished the iteration, s."""
        return float(self.summary["seconds"])

    def brief(self) -> dict:
        """One line of ``descent.json``: the fit, the generated widths and the convergence."""
        return {"iteration": self.index, "rows": len(self.widths), "alpha": list(self.law.alpha),
                "beta": list(self.law.beta), "r2": list(self.law.r2), "median_r2": float(np.median(self.law.r2)),
                "generated_widths": self.generated.widths, "change_from_previous": self.change,
                "seconds": self.seconds}


@dataclass(frozen=True)
class SearchRun:
    """Iterations 1..N of an architecture-descent run of ``arch`` on ``dataset``.

    Attributes:
        arch, dataset, convcut: the network searched.
        run_dir: the run directory.
        settings: its resolved settings (``settings.json``).
        iterations: the finished iterations, oldest first.
    """

    arch: str
    dataset: str
    convcut: bool
    run_dir: Path
    settings: dict
    iterations: tuple[Iteration, ...]

    def iteration(self, k: int) -> Iteration:
        """Iteration ``k`` (1-based; -1 = the last). ``ValueError`` naming the finished ones otherwise."""
        n = len(self.iterations)
        if not isinstance(k, int | np.integer) or not (1 <= k <= n or -n <= k <= -1):
            raise ValueError(f"iteration {k!r} of {self.run_dir} is not finished; finished: 1..{n}")
        return self.iterations[k - 1 if k > 0 else k]

    def law(self, k: int = -1) -> PowerLaw:
        """The power law of iteration ``k`` (1-based; -1 = the last)."""
        return self.iteration(k).law

    def widths(self, k: int, budget: float) -> Scaled:
        """Algorithm 3 with the fit of iteration ``k`` (1-based; -1 = last) at ``budget`` parameters."""
        return widths_for_budget(self.law(k), self.arch, self.dataset, budget, convcut=self.convcut)

    def changes(self, budget: float) -> list[float]:
        """Relative L1 change (%) of the configuration at ``budget`` between consecutive iterations."""
        configs = [np.asarray(self.widths(i, budget).widths, dtype=float) for i in range(1, len(self.iterations) + 1)]
        return [float(100 * np.abs(b - a).sum() / a.sum()) for a, b in zip(configs, configs[1:])]

    def to_dict(self) -> dict:
        """JSON summary: the run directory, its settings and one :meth:`Iteration.brief` per iteration."""
        return {"run_dir": str(self.run_dir), "settings": self.settings,
                "iterations": [it.brief() for it in self.iterations]}


def _read_iteration(d: Path, k: int, arch: str, dataset: str, convcut: bool) -> Iteration:
    s = io.read_json(d / "summary.json")
    w = io.read_trajectory(d / "trajectory.csv")
    count = functools.partial(param_count, arch, dataset=dataset, convcut=convcut)
    params = np.asarray([count(r) for r in w.tolist()], dtype=np.int64)
    g = s["generated"]
    gen = Scaled(list(g["widths"]), int(g["params"]), int(g["target"]), float(g["rel_error"]))
    return Iteration(k, tuple(s["start_widths"]), w, params, load_fit(d / "fit.json"), gen,
                     float(s["change_from_previous"]), s)


def load_run(run_dir: str | Path, iterations: int | None = None) -> SearchRun:
    """The finished iterations (the first ``iterations`` of them, default all) of a run directory.

    Raises:
        ValueError: not a run directory (no ``settings.json``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / SETTINGS).is_file():
        raise ValueError(f"{run_dir} is not a search run directory (no {SETTINGS})")
    s = io.read_json(run_dir / SETTINGS)
    arch, dataset, convcut = s["arch"], s["dataset"], bool(s.get("convcut", False))
    its, k = [], 1
    while (iteration_dir(run_dir, k) / "summary.json").is_file() and (iterations is None or k <= iterations):
        its.append(_read_iteration(iteration_dir(run_dir, k), k, arch, dataset, convcut))
        k += 1
    return SearchRun(arch, dataset, convcut, run_dir, s, tuple(its))


def search_data(search: SearchSettings, dataset: str, data: ImageData | None, seed: int = 0) -> ImageData:
    """The images a search prunes on: ``data`` (synthetic data of ``dataset``'s shape when the search is
    synthetic and ``data`` is None), cut to the search's class-balanced ``train_subset``."""
    if data is None:
        if not search.synthetic:
            raise ValueError("this search needs a dataset (data=None only for synthetic searches)")
        data = smoke_data(dataset, seed)
    return data.subset(search.train_subset, "balanced", seed) if search.train_subset is not None else data


def resolved_settings(arch: str, dataset: str, convcut: bool, search: SearchSettings, seed: int,
                      data: ImageData, device: str) -> dict:
    """Everything that changes a search's result, as plain JSON (``iterations`` aside: more extend a run)."""
    return {"arch": arch, "dataset": dataset, "convcut": bool(convcut), "seed": int(seed),
            "search": {k: v for k, v in resolve(search).items() if k != "iterations"},
            "data": data.fingerprint(), "device": str(device).split(":")[0],
            # the rows and fit rule of a traced network (the paper networks' keys stay as they were)
            **({"fit": "onset"} if get_arch(arch).fit_from_onset else {})}


def _same_run(saved: dict, now: dict, run_dir: Path) -> None:
    diff = [k for k in now if saved.get(k) != now[k]] + ["weights"] * ("weights" in saved and "weights" not in now)
    if diff:
        detail = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in diff)
        raise ValueError(f"{run_dir} holds a search with different settings ({detail}); "
                         "use another --out directory or the same settings")


def architecture_descent(
    arch: str,
    dataset: str,
    data: ImageData | None,
    search: SearchSettings,
    run_dir: str | Path,
    seed: int = 0,
    device: str = "cpu",
    convcut: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_row: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    weights=None,
) -> SearchRun:
    """Algorithm 4: prune, fit, generate the next start network at the same budget; repeat.

    Iteration 1 prunes ``uniform_widths(arch, search.start_ratio)``; iteration k >= 2 prunes a fresh
    random network (seed ``seed + k - 1``) whose widths the fit of iteration k-1 generates at the
    parameter count of iteration 1's network.

    Args:
        arch: architecture name.
        dataset: dataset name (class count and variant of the networks).
        data: the data to prune on (see :func:`search_data`).
        search: the search settings (:class:`nslab.config.SearchSettings`); ``search.iterations`` is
            the number of iterations wanted (a finished run continues when it is raised).
        run_dir: the run directory (created; an existing one of the same settings is resumed).
        seed: base seed.
        device: training device.
        convcut: ResNet18/MobileNetV2 with conv shortcuts everywhere.
        progress: tqdm bars (stderr).
        log: called with one line per finished iteration (default: tqdm.write to stderr when ``progress``).
        on_row: called as ``on_row(iteration, widths (rows, L), params (rows,))`` after every row a
            running iteration records; finished iterations are read back, not replayed.
        weights: iteration 1 starts from these weights (a state dict of the network at iteration 1's start
            widths, or ``"factory"``; see :func:`nslab.search.prune.load_weights`); the later iterations start from
            a fresh initialisation, as the paper's. Listed in ``settings.json`` (a digest of the tensors, or
            ``"factory"``) when given, so a rerun with other weights is refused.

    Returns:
        The :class:`SearchRun` of iterations 1..``search.iterations``.

    Raises:
        ValueError: bad settings, a run directory of other settings, or an iteration that recorded too
            few rows to fit (the message says which and why).
    """
    import sys

    from tqdm.auto import tqdm

    get_arch(arch)
    dataset_spec(dataset)
    data = search_data(search, dataset, data, seed)
    if log is None:
        log = functools.partial(tqdm.write, file=sys.stderr) if progress else (lambda _msg: None)
    run_dir = Path(run_dir)
    now = resolved_settings(arch, dataset, convcut, search, seed, data, device)
    if weights is not None:  # listed only when given: a run from a fresh init keeps its settings
        now["weights"] = weights if isinstance(weights, str) else weights_digest(weights)
    if (run_dir / SETTINGS).exists():
        _same_run(io.read_json(run_dir / SETTINGS), now, run_dir)
    else:
        io.write_json(run_dir / SETTINGS, now)

    base = uniform_widths(arch, search.start_ratio)
    budget = param_count(arch, base, dataset, convcut)
    prev = base
    for k in tqdm(range(1, search.iterations + 1), desc=f"descent {arch}", disable=not progress):
        it = iteration_dir(run_dir, k)
        if not (it / "summary.json").exists():
            _run_iteration(k, prev, arch, dataset, convcut, data, search, seed, device, budget, it, progress,
                           None if on_row is None else functools.partial(on_row, k), weights if k == 1 else None)
            done = _read_iteration(it, k, arch, dataset, convcut)
            log(f"iteration {k}: pre-trained to {done.summary['pretrain_accuracy']:.1f}%, {len(done.widths)} rows, "
                f"median R^2 {np.median(done.law.r2):.3f}, "
                f"widths {done.generated.widths}, change {done.change:.3f}")
        prev = io.read_json(it / "summary.json")["generated"]["widths"]
    full = load_run(run_dir)
    io.write_json(run_dir / LOG, [i.brief() for i in full.iterations])
    return replace(full, iterations=full.iterations[: search.iterations])


def _run_iteration(k, start, arch, dataset, convcut, data, search, seed, device, budget, it: Path, progress,
                   on_row, weights=None) -> None:
    t0 = time.perf_counter()
    res = prune(arch, data, search.prune, widths=start, dataset=dataset, convcut=convcut, device=device,
                seed=seed + k - 1, progress=progress, on_row=on_row, run_dir=it / "prune", weights=weights)
    io.write_trajectory(it / "trajectory.csv", res.widths, res.params)
    try:
        law = fit_power_law(res.widths, arch, dataset, convcut)
    except ValueError as e:
        raise ValueError(f"iteration {k}: cannot fit the power law: {e}. Lower channels_per_step or "
                         f"stop_fraction so that more rows are recorded (trajectory kept in {it})") from None
    save_fit(it / "fit.json", law, arch=arch, dataset=dataset, convcut=convcut, iteration=k)
    try:
        gen = widths_for_budget(law, arch, dataset, budget, convcut=convcut)
    except ValueError as e:
        raise ValueError(f"iteration {k}: the fit cannot generate the next network: {e}") from None
    # Convergence: how much the generated configuration moved, mean over layers of |w_k - w_{k-1}| / w_{k-1}.
    change = float(np.mean(np.abs(np.subtract(gen.widths, start)) / np.asarray(start, dtype=float)))
    io.write_json(it / "summary.json", {
        "iteration": k, "start_widths": list(start), "start_params": param_count(arch, start, dataset, convcut),
        "final_widths": res.final_widths, "at_half": res.at_half,
        "never_pruned": [i for i, (w, w0) in enumerate(zip(res.final_widths, start)) if w == w0],  # beta = 0
        "steps": res.steps, "stop_reason": res.stop_reason,
        "generated": {"ratio": 1.0, "widths": gen.widths, "params": gen.params, "target": gen.target,
                      "rel_error": gen.rel_error},
        "change_from_previous": change, "final_loss": res.losses[-1] if res.losses else None,
        "pretrain_accuracy": res.pretrain_accuracy,
        "pretrain_seconds": res.pretrain_seconds, "prune_seconds": res.seconds,
        "seconds": time.perf_counter() - t0,
    })
