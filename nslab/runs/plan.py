"""The planner: how big a preset's grid is and what it will cost on this device, before running it.

:func:`plan` enumerates the grid (:func:`nslab.runs.grid.tasks`), counts its searches, training runs, epochs and
images, and prices every task with a throughput model fitted by a short probe on the current device:
seconds per training image ``a + b * MACs`` per architecture (forward + backward + SGD step of the
network at three widths spanning the grid's, random data, the recipe's batch size capped at 256), an
evaluation image costing a third of a training image. A search iteration is priced as its pre-training
epochs plus its prune steps (``batches_per_step`` minibatches each, on networks shrinking from the start
network to ``stop_fraction`` of its channels). Widths of NeuralScale and MorphNet runs come from the
search when it is on disk; otherwise from the authors' published VGG11 fits, or (other networks) the
uniform network of the same budget, which underestimates them (NeuralScale spends its parameters where
the MACs are: 2.5-2.7x uniform's MACs at the same count, measured on VGG11 / CIFAR-10).

Totals: device-hours (one task at a time), and wall-hours on N devices by a dependency-aware schedule
(longest task first) with the preset's packing: ``floor(1 / resources.gpus)`` tasks per GPU. Where a task
is already finished on disk its measured time is compared with its estimate (``check``).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import Preset
from ..paths import Paths
from .grid import SearchJob, Task, TrainJob
from .specs import settings_for

__all__ = ["SPLITS", "plan", "probe_throughput", "schedule"]

# Training / test images of the standard splits (when the data is not on this machine).
SPLITS = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "tinyimagenet": (100_000, 10_000)}
_EVAL = 1 / 3  # an evaluation image (forward only) against a training image (forward, backward, step)


def _split(p: Preset, setting, paths: Paths, have_data: bool) -> tuple[int, int]:
    if have_data:
        from .studies import load_data

        d = load_data(p, setting, paths)
        return d.num_train, d.num_test
    return SPLITS.get(setting.dataset, (50_000, 10_000))


# --------------------------------------------------------------------------------------------------------
# the throughput probe


def _step_seconds(arch: str, widths: Sequence[int], dataset: str, convcut: bool, batch: int, device,
                  budget: float) -> float:
    """Seconds per image of SGD steps on random data (after one untimed step), over about ``budget`` s."""
    import torch
    import torch.nn.functional as F

    from ..data import dataset_spec
    from ..models import create_model
    from .loop import autocast, channels_last_ok

    spec = dataset_spec(dataset)
    torch.manual_seed(0)
    model = create_model(arch, list(widths), dataset, convcut).to(device)
    cl = channels_last_ok(device, model)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, spec.image_size, spec.image_size, device=device).to(memory_format=fmt)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)

    def step() -> None:
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    sync()
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - t0 < budget and len(times) < 50):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / batch  # the median: a step slowed by another process is not the rule


def _probe_batch(batch: int, macs: float, device) -> int:
    """The recipe's batch (at most 256); on a CPU at most ~4 GMACs of forward pass per step, so that a
    full-width network (the paper's) is timed in seconds, not minutes."""
    if device.type == "cpu":
        batch = min(batch, max(8, int(4e9 // max(macs, 1.0))))
    return min(batch, 256)


def probe_throughput(configs: dict[str, list[tuple[float, tuple, str, bool, int]]], device=None,
                     seconds_per_point: float = 1.0) -> dict[str, dict]:
    """Fit seconds per training image ``a + b * MACs`` per architecture from a few timed configurations.

    Args:
        configs: ``{arch: [(macs, widths, dataset, convcut, batch), ...]}``: the grid's configurations;
            three of them (least, median and most MACs) are timed per architecture.
        device: default: CUDA when available.
        seconds_per_point: timing budget of each configuration (at least two steps run).

    Returns:
        ``{arch: {"a": s, "b": s per MAC, "points": [[macs, s per image], ...]}}``.
    """
    from .loop import resolve_device

    dev = resolve_device(device)
    out = {}
    for arch, cs in configs.items():
        cs = sorted(cs, key=lambda c: c[0])
        picks = list(dict.fromkeys(cs[i] for i in sorted({0, len(cs) // 2, len(cs) - 1})))
        pts = [(c[0], _step_seconds(arch, c[1], c[2], c[3], _probe_batch(c[4], c[0], dev), dev, seconds_per_point))
               for c in picks]
        m = np.array([p[0] for p in pts], dtype=float)
        s = np.array([p[1] for p in pts], dtype=float)
        if len(pts) > 1 and np.ptp(m) > 0:
            b, a = np.polyfit(m, s, 1)
            if a < 0 or b < 0:  # noise on a flat curve: proportional (or constant) instead
                b, a = (float((m @ s) / (m @ m)), 0.0) if b > 0 else (0.0, float(s.mean()))
        else:
            a, b = 0.0, float(s[0] / m[0])
        out[arch] = {"a": float(a), "b": float(b), "points": [[int(x), float(y)] for x, y in pts]}
    return out


# --------------------------------------------------------------------------------------------------------
# pricing the tasks


def _stand_in_widths(job: TrainJob) -> tuple[list[int], str]:
    """Widths of a search-dependent run whose search is not on disk, and where they come from."""
    from ..scaling.methods import Context, get_method
    from ..scaling.powerlaw import published_fit, published_fits
    from .studies import context

    s, p = job.setting, job.preset
    ctx = context(p, s)
    budget = ctx.budget(job.ratio)
    # the authors' fit of this network and dataset, else of this network on another dataset (a fit's shape
    # is the network's more than the data's); networks they published no fit of get uniform stand-ins
    runs = published_fits()
    same = [k for k, v in runs.items() if v["arch"] == s.arch]
    pub = f"{s.arch}-{s.dataset}" if f"{s.arch}-{s.dataset}" in runs else (same[0] if same else None)
    if job.method.startswith("neuralscale") and pub is not None:
        law, _, _ = published_fit(pub, 1 if get_method(job.method).reads_iteration == 1 else len(runs[pub]["fits"]))
        pctx = dataclasses.replace(ctx, laws=(law,))
        return get_method("neuralscale_it1")(pctx, budget), f"the authors' {pub} fit"
    return get_method("uniform")(Context(s.arch, s.dataset, False, ctx.start_ratio, scale=s.scale),
                                 budget), "uniform stand-in"


@dataclasses.dataclass
class _Item:
    """A task's work: ``images`` training images on a network of ``macs`` (plus ``eval_images``)."""

    task: Task
    arch: str
    macs: float
    images: float
    eval_images: float
    epochs: float
    config: tuple
    source: str
    batch: int
    probe: tuple = ()  # (macs, widths, dataset, convcut, batch): what probe_throughput times
    extra: list = dataclasses.field(default_factory=list)  # more (macs, images) pairs (Li et al.'s fine-tuning)
    measured: float | None = None


def _train_item(t: Task, have_data: bool) -> _Item:
    from ..models import macs, uniform_widths
    from ..scaling.methods import get_method

    job: TrainJob = t.job
    p, s = job.preset, job.setting

    r = settings_for(p, s).recipe
    n_train, n_test = _split(p, s, job.paths, have_data)
    n_train = min(n_train, r.subset) if r.subset else n_train
    n_test = min(n_test, s.test_subset) if s.test_subset else n_test
    spec, source, measured = None, "exact", None
    try:
        spec = job.spec(load=True) if have_data else None
    except (ValueError, OSError):
        spec = None
    if spec is not None:
        widths, convcut = list(spec.widths), spec.convcut
        from .store import ResultsStore

        rec = ResultsStore(job.paths.results).get(spec)
        measured = None if rec is None else float(rec.get("seconds", rec.get("train_seconds", 0.0)))
    elif get_method(job.method).needs_search:
        widths, source = _stand_in_widths(job)
        convcut = get_method(job.method).convcut
    else:
        from .studies import context

        ctx = context(p, s)
        widths, convcut = get_method(job.method)(ctx, ctx.budget(job.ratio)), get_method(job.method).convcut
    m = macs(s.arch, widths, s.dataset, convcut)
    it = _Item(t, s.arch, m, r.epochs * n_train, r.epochs * n_test, r.epochs, (s.arch, s.dataset, tuple(widths),
               convcut, r.epochs, n_train), source, r.batch_size, (m, tuple(widths), s.dataset, convcut, r.batch_size),
               measured=measured)
    if get_method(job.method).trains == "li":  # Li et al.: the start network trained, then fine-tuned pruned
        start = uniform_widths(s.arch, settings_for(p, s).search.start_ratio)
        it.extra.append((macs(s.arch, start, s.dataset, convcut), r.epochs * n_train))
        it.extra.append((m, p.baseline.li_finetune_epochs * n_train))
        it.epochs += p.baseline.li_finetune_epochs
    return it


def _search_item(t: Task, have_data: bool) -> _Item:
    from ..io import read_json
    from ..models import macs, uniform_widths
    from ..search.descent import iteration_dir

    job: SearchJob = t.job
    p, s = job.preset, job.setting
    ss = job.spec.settings
    pr = ss.prune
    n_train, n_test = _split(p, s, job.paths, have_data)
    n = min(n_train, ss.train_subset) if ss.train_subset else n_train
    start = uniform_widths(s.arch, ss.start_ratio)
    m0 = macs(s.arch, start, s.dataset)
    total = sum(start)
    steps = max(1, math.ceil((total - pr.target_channels(total)) / pr.channels_per_step))
    # pruning goes from the start network to stop_fraction of its channels: mean MACs along the way
    mean = float(np.mean([macs(s.arch, [max(1, int(w * f)) for w in start], s.dataset)
                          for f in np.linspace(pr.stop_fraction, 1.0, 9)]))
    it = _Item(t, s.arch, m0, pr.pretrain_epochs * n, (pr.pretrain_epochs + 1) * n_test, pr.pretrain_epochs,
               (s.arch, s.dataset, "search", pr.pretrain_epochs, n), "search", pr.batch_size,
               (m0, tuple(start), s.dataset, False, pr.batch_size))
    it.extra.append((mean, steps * pr.batches_per_step * pr.batch_size))
    summary = iteration_dir(job.run_dir, job.iteration) / "summary.json" if job.run_dir else None
    if summary is not None and summary.is_file():
        it.measured = float(read_json(summary)["seconds"])
    return it


def _seconds(it: _Item, fit: dict) -> float:
    a, b = fit[it.arch]["a"], fit[it.arch]["b"]
    per = a + b * it.macs
    return it.images * per + it.eval_images * per * _EVAL + sum(k * (a + b * m) for m, k in it.extra)


def schedule(durations: dict[str, float], deps: dict[str, Sequence[str]], slots: int) -> float:
    """Makespan (s) of ``durations`` on ``slots`` parallel slots, dependencies first, longest ready task first."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    waiting = {k: set(deps.get(k, ())) for k in durations}
    users = defaultdict(list)
    for k, ds in waiting.items():
        for d in ds:
            users[d].append(k)
    ready = [(-durations[k], k) for k, ds in waiting.items() if not ds]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < slots:
            d, k = heapq.heappop(ready)
            heapq.heappush(running, (now - d, k))
        now, k = heapq.heappop(running)
        for u in users[k]:
            waiting[u].discard(k)
            if not waiting[u]:
                heapq.heappush(ready, (-durations[u], u))
    return now


def _have_data(tasks: Sequence[Task]) -> str | None:
    """``None`` when every setting's data loads here, else why not (the grid is then priced on standard splits)."""
    from .specs import data_of

    try:
        for source in {data_of(t.job.preset, t.job.setting, t.job.paths) for t in tasks}:
            source.load()
    except (ValueError, OSError) as e:  # the data is not on this machine: the grid's shape without its keys
        return f"data not loaded ({' '.join(str(e).split())[:160]}): image counts of the standard splits, nothing " \
               "on disk is matched"
    return None


def _probe(p: Preset, items: Sequence[_Item], dev, seconds_per_point: float) -> tuple[dict, float, int]:
    """The throughput fit of the grid's configurations, the probe's seconds and its torch threads."""
    from ..device import torch_threads

    configs: dict[str, list] = defaultdict(list)
    for it in items:  # the searches' items time their start networks (the widest networks of a grid)
        configs[it.arch].append(it.probe)
    tp = time.perf_counter()
    # the executors give each task resources.cpus torch threads: time the device the same way (on a
    # loaded CPU, more threads than free cores spin and run several times slower)
    threads = max(1, int(p.resources.cpus))
    with torch_threads(threads):
        fit = probe_throughput(dict(configs), dev, seconds_per_point)
    return fit, time.perf_counter() - tp, threads


def _configurations(items: Sequence[_Item], secs: dict[str, float | None]) -> list[dict]:
    """The items by configuration (network, data, epochs), most hours first."""
    by_config: dict[tuple, dict] = {}
    for it in items:
        c = by_config.setdefault(it.config, {
            "arch": it.arch, "dataset": it.config[1], "kind": it.task.kind,
            "widths": list(it.config[2]) if it.task.kind == "train" else None, "macs_m": round(it.macs / 1e6, 3),
            "widths_from": it.source, "tasks": 0, "epochs": 0.0, "images": 0, "hours": 0.0})
        c["tasks"] += 1
        c["epochs"] += it.epochs
        c["images"] += int(it.images + sum(k for _, k in it.extra))
        c["hours"] += (secs[it.task.key] or 0.0) / 3600
    out = sorted(by_config.values(), key=lambda c: -c["hours"])
    for c in out:
        c["hours"] = round(c["hours"], 4)
    return out


def _check(items: Sequence[_Item], secs: dict[str, float]) -> dict | None:
    """Measured against estimated minutes of the finished tasks (all, and by kind); ``None``: none finished."""
    done = [it for it in items if it.measured is not None]
    if not done:
        return None
    out: dict[str, Any] = {"finished_tasks": len(done)}
    for kind in (None, "search", "train"):
        sub = [it for it in done if kind is None or it.task.kind == kind]
        if sub:
            m_, e_ = sum(it.measured for it in sub), sum(secs[it.task.key] for it in sub)
            row = {"measured_min": round(m_ / 60, 1), "estimated_min": round(e_ / 60, 1),
                   "error_pct": round(100 * (e_ - m_) / m_, 1)}
            out.update(row if kind is None else {kind: {"tasks": len(sub), **row}})
    return out


def plan(p: Preset, paths: Paths, gpus: int = 1, device: str | None = None, probe: bool = True,
         seconds_per_point: float = 1.0) -> dict[str, Any]:
    """The grid of ``p``, its cost per configuration on this device, device-hours and wall-hours on ``gpus``.

    Args:
        p: the preset.
        paths: where results live (finished tasks are priced too, and checked against their measured time).
        gpus: devices of the wall-hours estimate (N GPUs, or N machines like this one without a GPU).
        device: the device probed (default: CUDA when available).
        probe: time the device (else every estimate is ``None``: counts only).
        seconds_per_point: probe budget per timed configuration.

    Returns:
        A JSON-ready dict (see the module docstring).
    """
    from . import grid
    from .loop import resolve_device

    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ValueError(f"gpus must be an integer >= 1, got {gpus!r}")
    t0 = time.perf_counter()
    tasks = [t for t in grid.tasks(p, paths) if t.kind in ("search", "train")]  # latency passes: seconds
    missing = _have_data(tasks)
    notes = [missing] if missing else []
    items = [_search_item(t, not missing) if t.kind == "search" else _train_item(t, not missing) for t in tasks]
    dev = resolve_device(device)
    fit, probe_s, threads = _probe(p, items, dev, seconds_per_point) if probe else (None, 0.0, 0)
    secs = {it.task.key: _seconds(it, fit) if fit else None for it in items}
    configs_out = _configurations(items, secs)
    train = [it for it in items if it.task.kind == "train"]
    search = [it for it in items if it.task.kind == "search"]
    out: dict[str, Any] = {
        "profile": p.name, "device": str(dev),
        "grid": {"searches": len({it.task.job.spec.ident for it in search}), "search_iterations": len(search),
                 "training_runs": len(train), "epochs": round(sum(it.epochs for it in items), 1),
                 "images": int(sum(it.images + sum(k for _, k in it.extra) for it in items)),
                 "configurations": len(configs_out),
                 "stand_in_widths": sum(1 for it in train if it.source not in ("exact",))},
        "resources": dataclasses.asdict(p.resources),
    }
    if fit:
        pack = max(1, math.floor(1 / p.resources.gpus)) if p.resources.gpus > 0 else 1
        deps = {t.key: t.deps for t in tasks}
        out.update({
            "probe": {"seconds": round(probe_s, 1), "threads": threads,
                      "model": "seconds per training image = a + b * MACs", "fits": fit},
            "device_hours": round(sum(secs.values()) / 3600, 3),
            "gpus": gpus, "packing": pack,
            "wall_hours": round(schedule(secs, deps, gpus * pack) / 3600, 3),
            "wall_hours_one_task_per_device": round(schedule(secs, deps, gpus) / 3600, 3),
        })
        check = _check(items, secs)
        if check:
            out["check"] = check
        notes.append("wall_hours assumes packed tasks keep their solo speed (small runs that leave a GPU idle); "
                     "wall_hours_one_task_per_device is the bound when one run saturates a device")
    if out["grid"]["stand_in_widths"]:
        notes.append(f"{out['grid']['stand_in_widths']} search-dependent run(s) priced with stand-in widths (their "
                     "search is not on disk); uniform stand-ins underestimate NeuralScale's MACs ~2.5x")
    out.update({"configurations": configs_out, "notes": notes, "seconds": round(time.perf_counter() - t0, 1)})
    return out
