"""The reproduction grid of a preset as tasks: every search iteration and training run the notebooks ask for.

Notebooks 01-08 call :mod:`nslab.runs.studies`, which computes what is missing on demand. :func:`tasks` lists
the same work up front, from the same declarations (:func:`nslab.runs.studies.requests`), as small picklable
:class:`Task` s that an executor (:mod:`nslab.runs.executors`) can run in any order their dependencies allow,
on one machine or many. Each task's only output is its result, written atomically where the notebooks look
for it, under the same key:

- a *search task* runs iteration k of one architecture-descent run directory
  (:class:`nslab.runs.specs.SearchSpec`); it needs iteration k - 1 of the same directory;
- a *training task* trains one network (one :class:`~nslab.runs.store.RunSpec`: method x ratio x seed of a
  setting) into the :class:`~nslab.runs.store.ResultsStore`; NeuralScale and MorphNet runs need the search
  iteration whose fit (or trajectory) gives their widths (the method's ``reads_iteration``: iteration 1 for
  ``neuralscale_it1`` and ``morphnet``, the last for ``neuralscale_last``);
- a *latency task* (only where the preset packs several tasks on one GPU,
  :func:`nslab.runs.specs.shares_device`) times a training run's network alone on a whole device, after it.

Every request is resolved once, when the tasks are listed, into its exact settings (:class:`SearchSpec`,
:func:`nslab.runs.specs.settings_for`); listing loads no data and fits nothing (a run without a search gets
its widths from closed-form counts). A task's :attr:`Task.key` hashes what it is asked to do (settings, data
source, device kind); its :meth:`Task.output` (the run directory or RunSpec key, which hold the data's
fingerprint and, for a training run, its widths) is ``None`` until it is known: the data's fingerprint kept on
disk (:class:`nslab.runs.specs.DataSource`) and, for a run whose widths come from a search, that search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Protocol

from ..config import Preset, Setting, digest, resolve
from ..config.parts import Resources
from ..paths import Paths
from .specs import SearchSpec, data_of, device_kind, search_spec, settings_for, shares_device

__all__ = ["Job", "LatencyJob", "SearchJob", "Task", "TrainJob", "tasks"]


class Job(Protocol):
    """What a task does: ``run()`` writes its result; ``output()`` names it; ``done()`` says it is written."""

    def run(self) -> None: ...

    def output(self) -> str | None: ...

    def done(self) -> bool: ...


@dataclass(frozen=True)
class Task:
    """One unit of the grid.

    Attributes:
        name: readable and unique within a grid (progress lines and failure reports name it).
        key: identity: two requests of the same work give the same key (and one task); deps refer to it.
        kind: ``"search"``, ``"train"`` or ``"latency"``.
        deps: keys of the tasks whose results this one reads.
        resources: what it asks an executor for (the preset's :class:`~nslab.config.parts.Resources`; a
            latency task a whole GPU).
        notebooks: the notebooks (``"01"``, ...) that ask for it.
        job: the work itself (:class:`SearchJob`, :class:`TrainJob`, :class:`LatencyJob`, or any picklable
            :class:`Job`).
    """

    name: str
    key: str
    kind: str
    deps: tuple[str, ...]
    resources: Resources
    notebooks: tuple[str, ...]
    job: Job

    def run(self) -> None:
        """Do the work (resuming from checkpoints); the result goes where the notebooks look for it."""
        self.job.run()

    def output(self) -> str | None:
        """The key of the result this task writes, once it is known (else ``None``)."""
        return self.job.output()

    def done(self) -> bool:
        """Whether the result is already written (then the task is skipped)."""
        return self.job.done()


# --------------------------------------------------------------------------------------------------------
# the jobs


def _check_place(spec: SearchSpec, expect_data: dict | None, what: str) -> None:
    """A worker must compute the keys the driver listed, or the notebooks would never find the result."""
    here = device_kind()
    now = spec.data.load().fingerprint() if expect_data is not None else None
    if here != spec.device or now != expect_data:
        raise ValueError(f"{what}: this worker (device kind {here!r}, data {now}) would not write what the grid "
                         f"expects (device kind {spec.device!r}, data {expect_data}); every node must use the device "
                         "kind, data and nslab version of the driver, whose keys the notebooks will look up")


@dataclass(frozen=True)
class SearchJob:
    """Iteration ``iteration`` of the search ``spec`` (of ``setting`` with P_e ``pretrain_epochs``).

    Attributes:
        spec: the resolved search (its ``iterations`` is this job's iteration).
        expect_data: the data's fingerprint the driver knew when it listed the task (``None``: unknown); a
            worker checks its data against it.
    """

    preset: Preset
    setting: Setting
    paths: Paths
    pretrain_epochs: int | None
    iteration: int
    spec: SearchSpec
    expect_data: dict | None = None

    @property
    def run_dir(self) -> str:
        """The run directory (``""`` while the data's fingerprint is unknown)."""
        d = self.spec.run_dir(load=False)
        return "" if d is None else str(d)

    def run(self) -> None:
        from .studies import run_search

        _check_place(self.spec, self.expect_data, f"search {self.spec.name} iteration {self.iteration}")
        run_search(self.spec, progress=False)

    def output(self) -> str | None:
        d = self.run_dir
        return f"{d}/iter_{self.iteration:02d}" if d else None

    def done(self) -> bool:
        from ..search.descent import iteration_dir

        d = self.run_dir
        return bool(d) and (iteration_dir(d, self.iteration) / "summary.json").is_file()


@lru_cache(maxsize=256)
def _load_run(run_dir: str, iterations: int, stamp: float):
    """A finished search's first ``iterations`` iterations (cached while its summary is unchanged)."""
    from ..search.descent import load_run

    return load_run(run_dir, iterations)


@dataclass(frozen=True)
class TrainJob:
    """One training run: ``method`` at ``ratio`` with ``seed`` on ``setting``, as :func:`nslab.runs.studies.fulfil`
    makes it.

    Attributes:
        search: the search the widths come from (``None``: no search), read up to iteration ``reads``.
        tags: the extra ``(name, value)`` pairs of the request (e.g. pre-training epochs).
        metric: what the budget holds equal (``"params"``; ``"macs"`` in notebook 08).
        device: the device kind the driver listed it for.
    """

    preset: Preset
    setting: Setting
    paths: Paths
    method: str
    ratio: float
    seed: int
    search: SearchSpec | None
    reads: int
    tags: tuple = ()
    metric: str = "params"
    device: str = "cpu"

    def _run(self, load: bool):
        if self.search is None:
            return None
        from ..search.descent import iteration_dir

        d = self.search.run_dir(load)
        summary = None if d is None else iteration_dir(d, self.reads) / "summary.json"
        if summary is None or not summary.is_file():
            return None
        stamp = summary.stat().st_mtime_ns
        run = _load_run(str(d), self.reads, stamp)
        return (run, f"{d}:{stamp}") if len(run.iterations) == self.reads else None

    def spec(self, load: bool = False):
        """The :class:`~nslab.runs.store.RunSpec` (``None`` while the search it needs is unfinished, or while
        the data's fingerprint is unknown and ``load`` is false); computed once per search state."""
        from .specs import Fingerprinted
        from .studies import run_specs

        fp = data_of(self.preset, self.setting, self.paths).fingerprint(load)
        found = self._run(load) if fp is not None else None
        if fp is None or (self.search is not None and found is None):
            return None
        run, stamp = found or (None, "")
        memo = self.__dict__.setdefault("_specs", {})  # a cache, not a field: frozen dataclasses allow it
        at = (digest(fp), stamp)
        if at not in memo:
            # read up to the iteration the method uses: neuralscale_last reads (and is tagged with) the call's
            # last iteration; the others read iteration 1 only, which gives the widths the full run gives
            specs = [s for s in run_specs(self.preset, self.setting, run, (self.method,), Fingerprinted(fp),
                                          (self.ratio,), self.tags, self.metric) if s.seed == self.seed]
            if len(specs) != 1:
                raise ValueError(f"{self.method} r={self.ratio:g} seed {self.seed}: expected one run of "
                                 f"{self.setting.slug}, found {len(specs)}")
            memo.clear()
            memo[at] = specs[0]
        return memo[at]

    def output(self) -> str | None:
        s = self.spec()
        return None if s is None else s.key

    def done(self) -> bool:
        from .store import ResultsStore

        s = self.spec()
        return s is not None and ResultsStore(self.paths.results).get(s) is not None

    def run(self) -> None:
        from .studies import train_runs

        if device_kind() != self.device:
            raise ValueError(f"training run {self.method} {self.setting.slug}: this worker's device kind "
                             f"{device_kind()!r} is not the driver's {self.device!r}, whose keys the notebooks use")
        s = self.spec(load=True)
        if s is None:
            raise ValueError(f"the search {self.search.name} has not finished iteration {self.reads}")
        train_runs(self.preset, self.setting, [s], self.paths, progress=False, alone_latency=False)


@dataclass(frozen=True)
class LatencyJob:
    """The latency of ``train``'s network, timed alone on a whole device (a shared-device preset)."""

    train: TrainJob

    def _key(self, load: bool = False) -> str | None:
        from .specs import latency_key

        s = self.train.spec(load)
        return None if s is None else latency_key(self.train.preset, s.arch, s.dataset, s.widths, s.convcut,
                                                  self.train.device)

    def output(self) -> str | None:
        k = self._key()
        return None if k is None else f"latency:{k}"

    def done(self) -> bool:
        from .specs import read_latency

        k = self._key()
        return k is not None and read_latency(self.train.paths.results, k) is not None

    def run(self) -> None:
        from .specs import measure_alone, write_latency

        k = self._key(load=True)
        if k is None:
            raise ValueError(f"latency of {self.train.method} {self.train.setting.slug}: its widths are unknown")
        write_latency(self.train.paths.results, k, measure_alone(self.train.preset, self.train.spec(load=True)))


# --------------------------------------------------------------------------------------------------------
# the requests of the studies as tasks


class _Grid:
    """Tasks by key, merged across notebooks (the same work asked twice is one task)."""

    def __init__(self, p: Preset, paths: Paths):
        self.p, self.paths, self.tasks = p, paths, {}
        self.device = device_kind()
        alone = Resources(p.resources.cpus, 1.0, p.resources.retries) if p.resources.gpus > 0 else p.resources
        self.latency_resources = alone  # the whole device: no other task's load in the timing

    def add(self, task: Task) -> str:
        old = self.tasks.get(task.key)
        if old is not None:
            task = replace(old, notebooks=tuple(sorted(set(old.notebooks) | set(task.notebooks))))
        self.tasks[task.key] = task
        return task.key

    def search(self, setting: Setting, iterations: int | None, pe: int | None, nb: str) -> tuple[SearchSpec, list]:
        """Tasks of iterations 1..N of a search; returns (its spec, keys by iteration)."""
        spec = search_spec(self.p, setting, self.paths, pe, iterations)
        expect = spec.data.kept_fingerprint() if not spec.data.synthetic else None
        keys: list[str] = []
        for k in range(1, spec.settings.iterations + 1):
            job = SearchJob(self.p, setting, self.paths, pe, k, replace(spec, settings=replace(spec.settings,
                                                                                             iterations=k)), expect)
            name = f"search {setting.arch}/{setting.dataset} P_e={spec.settings.prune.pretrain_epochs} it {k} " \
                   f"[{spec.ident[-10:]}]"
            keys.append(self.add(Task(name, f"search:{spec.ident}:{k}", "search", tuple(keys[-1:]),
                                      self.p.resources, (nb,), job)))
        return spec, keys

    def bench(self, req, nb: str) -> None:
        from ..scaling.methods import get_method
        from .studies import bench_methods, run_slots

        s, p = req.setting, self.p
        methods, spec, keys = req.methods_of(p), None, []
        if req.needs_search(p):
            spec, keys = self.search(s, req.iterations, req.pretrain_epochs, nb)
        if req.merge_last:
            methods = bench_methods(p, s, methods, len(keys) if spec is not None else None)
        for method, r, seed in run_slots(p, s, methods):
            m = get_method(method)
            reads = 0 if not m.needs_search else len(keys) if m.reads_iteration == -1 else m.reads_iteration
            job = TrainJob(p, s, self.paths, method, r, seed, spec if m.needs_search else None, reads, req.tags,
                           req.metric, self.device)
            key = "train:" + (self._searched_key(req, method, r, seed, spec, reads) if job.search else
                              self._plain_key(req, method, r, seed))
            tag = f" P_e={req.pretrain_epochs}" if req.pretrain_epochs is not None else ""
            tag += f" (equal {req.metric})" if req.metric != "params" else ""
            tag += f" (search it {reads})" if reads else ""
            name = f"train {method} {s.arch}/{s.dataset} r={r:g} seed {seed}{tag} [{key[6:14]}]"
            self.add(Task(name, key, "train", (keys[reads - 1],) if reads else (), p.resources, (nb,), job))
            if shares_device(p):
                self.add(Task("latency" + name[5:], "latency:" + key[6:], "latency", (key,), self.latency_resources,
                              (nb,), LatencyJob(job)))

    def _source(self, s: Setting) -> list:
        src = data_of(self.p, s, self.paths)
        return [src.dataset, src.root, src.synthetic]

    def _plain_key(self, req, method: str, r: float, seed: int) -> str:
        """A run that needs no search: its RunSpec's key with the data source in place of the data's fingerprint
        (its widths come from closed-form counts: the same network asked by two notebooks is one task)."""
        from .specs import Fingerprinted
        from .studies import run_specs

        stand_in = Fingerprinted({"source": self._source(req.setting)})
        specs = run_specs(self.p, req.setting, None, (method,), stand_in, (r,), req.tags, req.metric)
        return next(x.key for x in specs if x.seed == seed)

    def _searched_key(self, req, method: str, r: float, seed: int, spec: SearchSpec, reads: int) -> str:
        """A run whose widths come from a search: what they come from (the search and the iteration read, the
        data source) plus everything else of the RunSpec's key."""
        p, s = self.p, req.setting
        return digest(method, s.arch, s.dataset, r, seed, spec.ident, reads, resolve(settings_for(p, s).recipe),
                      s.test_subset, s.scale, resolve(p.latency), resolve(p.baseline), resolve(req.tags), req.metric,
                      self._source(s), self.device)


_ORDER = {"search": 0, "train": 1, "latency": 2}


def tasks(p: Preset, paths: Paths, notebooks: Sequence[str] | None = None) -> list[Task]:
    """Every search iteration, training run (and alone-latency pass) the notebooks ask for under ``p``.

    Resolves every request once into its exact settings; loads no data and reads no search.

    Args:
        p: the preset.
        paths: where results live (the notebooks' ``RESULTS_DIR``/``DATA_ROOT``, see :func:`nslab.paths.paths`).
        notebooks: restrict to the tasks of these notebooks (numbers such as ``"5"`` or ``"05"``; default all).

    Returns:
        The tasks, each after the tasks it depends on.
    """
    from .studies import SearchRequest, requests

    want = None if notebooks is None else {f"{int(x):02d}" for x in notebooks}
    g = _Grid(p, paths)
    for nb, reqs in requests(p).items():
        if want is not None and nb not in want:
            continue
        for req in reqs:
            if isinstance(req, SearchRequest):
                g.search(req.setting, req.iterations, req.pretrain_epochs, nb)
            else:
                g.bench(req, nb)
    # searches first (in iteration order), then training runs, then their latency: dependencies first
    return sorted(g.tasks.values(), key=lambda t: _ORDER[t.kind])
