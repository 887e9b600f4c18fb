"""The reproduction grid of a preset as tasks: every search iteration and training run the notebooks ask for.

Notebooks 01-08 call :mod:`nslab.runs.studies`, which computes what is missing on demand. :func:`tasks` lists
the same work up front, as small picklable :class:`Task` s that an executor (:mod:`nslab.runs.executors`) can
run in any order their dependencies allow, on one machine or many. Each task's only output is its result,
written atomically where the notebooks look for it, under the same key:

- a *search task* runs iteration k of one architecture-descent run directory
  (:func:`nslab.runs.studies.search_dir`); it needs iteration k - 1 of the same directory;
- a *training task* trains and times one network (one :class:`~nslab.runs.store.RunSpec`: method x ratio x
  seed of a setting) into the :class:`~nslab.runs.store.ResultsStore`; NeuralScale and MorphNet runs need the
  search iteration whose fit (or trajectory) gives their widths: iteration 1 for ``neuralscale_it1`` and
  ``morphnet``, the last for ``neuralscale_last``.

The notebooks' calls are mirrored by :func:`notebook_requests` (one entry per notebook); after an executor
has run the grid, every notebook finds its searches and runs cached. A training task that needs a search
knows its widths only once the search iteration is on disk: its :meth:`Task.output` (the RunSpec key) is
``None`` until then, and its static :attr:`Task.key` hashes what the widths come from instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from ..config import Preset, Setting, digest, resolve
from ..config.parts import Resources
from ..paths import Paths

__all__ = ["BenchRequest", "Job", "SearchJob", "SearchRequest", "Task", "TrainJob", "notebook_requests", "tasks"]

# Which search iteration a method's widths come from (1-based; -1: the last one the call searched): see
# nslab.scaling.methods (MorphNet: iteration 1's trajectory or fit; NeuralScale: the fit of iteration 1 / the last).
# A method that needs a search and is not listed here waits for the last iteration (always correct).
_READS = {"morphnet": 1, "neuralscale_it1": 1, "neuralscale_last": -1}


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
        kind: ``"search"`` or ``"train"``.
        deps: keys of the tasks whose results this one reads.
        resources: what it asks an executor for (the preset's :class:`~nslab.config.parts.Resources`).
        notebooks: the notebooks (``"01"``, ...) that ask for it.
        job: the work itself (:class:`SearchJob`, :class:`TrainJob`, or any picklable :class:`Job`).
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
        """The key of the result this task writes, once its dependencies are done (else ``None``)."""
        return self.job.output()

    def done(self) -> bool:
        """Whether the result is already written (then the task is skipped)."""
        return self.job.done()


# --------------------------------------------------------------------------------------------------------
# the jobs


def _device_kind() -> str:
    from .studies import _device

    return _device().split(":")[0]


def _check_place(expected: str, now: Path | str, what: str) -> None:
    """A worker must compute the key the driver enumerated, or the notebooks would never find the result."""
    if str(now) != expected:
        raise ValueError(f"{what}: this worker would write {now}, the grid expects {expected} (device kind "
                         f"{_device_kind()!r} here; every node must use the device kind, data and nslab version of "
                         "the driver, whose keys the notebooks will look up)")


@dataclass(frozen=True)
class SearchJob:
    """Iteration ``iteration`` of the search of ``setting`` with P_e ``pretrain_epochs`` (``None``: the preset's).

    Attributes:
        run_dir: the run directory the driver computed (a worker checks it computes the same).
    """

    preset: Preset
    setting: Setting
    paths: Paths
    pretrain_epochs: int | None
    iteration: int
    run_dir: str

    def run(self) -> None:
        from .studies import search, search_dir

        _check_place(self.run_dir, search_dir(self.preset, self.setting, self.paths, self.pretrain_epochs),
                     f"search {self.setting.slug} iteration {self.iteration}")
        search(self.preset, self.setting, self.paths, iterations=self.iteration,
               pretrain_epochs=self.pretrain_epochs, progress=False)

    def output(self) -> str:
        return f"{self.run_dir}/iter_{self.iteration:02d}"

    def done(self) -> bool:
        from ..search.descent import iteration_dir

        return (iteration_dir(self.run_dir, self.iteration) / "summary.json").is_file()


@lru_cache(maxsize=256)
def _load_run(run_dir: str, iterations: int, stamp: float):
    """A finished search's first ``iterations`` iterations (cached while its summary is unchanged)."""
    from ..search.descent import load_run

    return load_run(run_dir, iterations)


@dataclass(frozen=True)
class TrainJob:
    """One training run: ``method`` at ``ratio`` with ``seed`` on ``setting``, as :func:`nslab.runs.studies.benchmark`
    would make it.

    Attributes:
        search: ``(pretrain_epochs, iterations, reads)`` of the search the widths come from (``None``: no
            search): the run directory of P_e ``pretrain_epochs`` read up to iteration ``reads`` (the last of
            the ``iterations`` the notebook's call searched, or 1).
        run_dir: that run directory (``""`` without a search).
        tags: the extra ``(name, value)`` pairs of the notebook's call (e.g. pre-training epochs).
        metric: what the budget holds equal (``"params"``; ``"macs"`` in notebook 08).
    """

    preset: Preset
    setting: Setting
    paths: Paths
    method: str
    ratio: float
    seed: int
    search: tuple[int | None, int] | None
    run_dir: str
    tags: tuple = ()
    metric: str = "params"

    def _run(self):
        if self.search is None:
            return None
        from ..search.descent import iteration_dir

        reads = self.search[1]
        summary = iteration_dir(self.run_dir, reads) / "summary.json"
        if not summary.is_file():
            return None
        run = _load_run(self.run_dir, reads, summary.stat().st_mtime_ns)
        if len(run.iterations) != reads:
            return None
        return run

    def spec(self):
        """The :class:`~nslab.runs.store.RunSpec` (``None`` while the search it needs is unfinished)."""
        from .studies import load_data, run_specs

        run = self._run()
        if self.search is not None and run is None:
            return None
        # read up to the iteration the method uses: neuralscale_last reads (and is tagged with) the call's
        # last iteration; the others read iteration 1 only, which gives the widths the full run gives
        data = load_data(self.preset, self.setting, self.paths)
        specs = [s for s in run_specs(self.preset, self.setting, run, (self.method,), data, (self.ratio,), self.tags,
                                      self.metric) if s.seed == self.seed]
        if len(specs) != 1:
            raise ValueError(f"{self.method} r={self.ratio:g} seed {self.seed}: expected one run of "
                             f"{self.setting.slug}, found {len(specs)}")
        return specs[0]

    def output(self) -> str | None:
        s = self.spec()
        return None if s is None else s.key

    def done(self) -> bool:
        from .store import ResultsStore

        s = self.spec()
        return s is not None and ResultsStore(self.paths.results).get(s) is not None

    def run(self) -> None:
        from .studies import search_dir, train_runs

        if self.search is not None:
            _check_place(self.run_dir, search_dir(self.preset, self.setting, self.paths, self.search[0]),
                         f"training run {self.method} {self.setting.slug}")
        s = self.spec()
        if s is None:
            raise ValueError(f"the search {self.run_dir} has not finished iteration {self.search[1]}")
        train_runs(self.preset, self.setting, [s], self.paths, progress=False)


# --------------------------------------------------------------------------------------------------------
# what the notebooks ask for


@dataclass(frozen=True)
class SearchRequest:
    """``benchmark.search(preset, setting, paths, iterations, pretrain_epochs)``."""

    setting: Setting
    iterations: int | None = None
    pretrain_epochs: int | None = None


@dataclass(frozen=True)
class BenchRequest:
    """``benchmark.benchmark(preset, setting, paths, methods, run=<search of iterations and P_e>, tags=tags)``.

    ``methods`` ``None``: the setting's or the preset's; ``iterations`` ``None``: the search's default;
    ``metric``: the budget's (:func:`nslab.runs.studies.macs_study`: ``"macs"``); ``merge_last``: leave
    ``neuralscale_last`` out beside ``neuralscale_it1`` after a one-iteration search, as ``benchmark`` does.
    """

    setting: Setting
    methods: tuple[str, ...] | None = None
    iterations: int | None = None
    pretrain_epochs: int | None = None
    tags: tuple = ()
    metric: str = "params"
    merge_last: bool = True


def notebook_requests(p: Preset) -> dict[str, list[SearchRequest | BenchRequest]]:
    """The searches and benchmark calls each notebook makes under ``p`` (mirrors notebooks 01-08).

    01/02: iteration 1 of the descent setting; 04: its full search; 05: :func:`nslab.runs.studies.benchmark_all`;
    06: :func:`nslab.runs.studies.pretraining_study` of each pre-training setting; 07:
    :func:`nslab.runs.studies.convcut_study` of each ConvCut setting; 08 (when the preset has one):
    :func:`nslab.runs.studies.macs_study`. Notebook 03 reads fits only.
    """
    from .studies import CONVCUT_METHODS, MACS_METHODS

    its = p.study_iterations
    pre: list[SearchRequest | BenchRequest] = []
    for s in p.pretrain:
        pre.append(BenchRequest(s, ("uniform",)))
        for pe in s.pretrain_epochs or p.pretrain_epochs:
            pre.append(BenchRequest(s, ("neuralscale_last",), its, pe, (("pretrain_epochs", pe),)))
    out: dict[str, list[SearchRequest | BenchRequest]] = {
        "01": [SearchRequest(p.descent, 1)],
        "02": [SearchRequest(p.descent, 1)],
        "04": [SearchRequest(p.descent)],
        "05": [BenchRequest(s) for s in p.benchmark],
        "06": pre,
        "07": [BenchRequest(s, CONVCUT_METHODS, its) for s in p.convcut],
    }
    macs = p.macs_study
    if macs is not None:  # notebook 08: the methods at equal MACs, NeuralScale (last) at equal parameters too
        methods = tuple(macs.methods or MACS_METHODS)
        out["08"] = [BenchRequest(macs, methods, metric="macs", merge_last=False),
                     BenchRequest(macs, ("neuralscale_last",), merge_last=False)]
    return out


def _slug(setting: Setting, pe: int | None, p: Preset) -> str:
    return f"{setting.arch}/{setting.dataset} P_e={p.search_for(setting, pe).prune.pretrain_epochs}"


class _Grid:
    """Tasks by key, merged across notebooks (the same work asked twice is one task)."""

    def __init__(self, p: Preset, paths: Paths):
        self.p, self.paths, self.tasks = p, paths, {}

    def add(self, task: Task) -> str:
        old = self.tasks.get(task.key)
        if old is not None:
            task = Task(old.name, old.key, old.kind, old.deps, old.resources,
                        tuple(sorted(set(old.notebooks) | set(task.notebooks))), old.job)
        self.tasks[task.key] = task
        return task.key

    def search(self, setting: Setting, iterations: int | None, pe: int | None, nb: str) -> tuple[str, list[str]]:
        """Tasks of iterations 1..N of a search; returns (run_dir, keys by iteration)."""
        from .studies import search_dir

        n = self.p.search_for(setting, pe, iterations).iterations
        run_dir = str(search_dir(self.p, setting, self.paths, pe))
        keys: list[str] = []
        for k in range(1, n + 1):
            job = SearchJob(self.p, setting, self.paths, pe, k, run_dir)
            name = f"search {_slug(setting, pe, self.p)} it {k} [{Path(run_dir).name[-10:]}]"
            keys.append(self.add(Task(name, f"search:{run_dir}:{k}", "search", tuple(keys[-1:]), self.p.resources,
                                      (nb,), job)))
        return run_dir, keys

    def bench(self, req: BenchRequest, nb: str) -> None:
        from ..scaling.methods import get_method
        from .studies import bench_methods, run_slots

        s, p = req.setting, self.p
        methods = tuple(req.methods or s.methods or p.methods)
        needs = any(get_method(m).needs_search for m in methods)
        run_dir, keys, n = "", [], None
        if needs:
            run_dir, keys = self.search(s, req.iterations, req.pretrain_epochs, nb)
            n = len(keys)
        for method, r, seed in run_slots(p, s, bench_methods(p, s, methods, n) if req.merge_last else methods):
            m = get_method(method)
            tag = f" P_e={req.pretrain_epochs}" if req.pretrain_epochs is not None else ""
            tag += f" (equal {req.metric})" if req.metric != "params" else ""
            if not m.needs_search:
                job = TrainJob(p, s, self.paths, method, r, seed, None, "", req.tags, req.metric)
                spec = job.spec()
                name = f"train {method} {s.arch}/{s.dataset} r={r:g} seed {seed}{tag} [{spec.key[:8]}]"
                self.add(Task(name, spec.key, "train", (), p.resources, (nb,), job))
                continue
            reads = _READS.get(method, -1)
            reads = n if reads == -1 else reads
            job = TrainJob(p, s, self.paths, method, r, seed, (req.pretrain_epochs, reads), run_dir, req.tags,
                           req.metric)
            # the widths are not known yet: key what they come from (the run directory and the iteration read)
            # plus everything else of the RunSpec's key
            key = "train:" + digest(method, s.arch, s.dataset, r, seed, run_dir, reads,
                                    resolve(p.recipe_for(s)), s.test_subset, s.scale,
                                    resolve(p.latency), resolve(p.baseline), resolve(req.tags), req.metric)
            name = f"train {method} {s.arch}/{s.dataset} r={r:g} seed {seed}{tag} (search it {reads}) [{key[6:14]}]"
            self.add(Task(name, key, "train", (keys[reads - 1],), p.resources, (nb,), job))


def tasks(p: Preset, paths: Paths, notebooks: Sequence[str] | None = None) -> list[Task]:
    """Every search iteration and training run the notebooks ask for under ``p``, dependencies first.

    Loads each setting's data once (its fingerprint is part of every key) but computes nothing.

    Args:
        p: the preset.
        paths: where results live (the notebooks' ``RESULTS_DIR``/``DATA_ROOT``, see :func:`nslab.paths.paths`).
        notebooks: restrict to the tasks of these notebooks (numbers such as ``"5"`` or ``"05"``; default all).

    Returns:
        The tasks, each after the tasks it depends on.
    """
    want = None if notebooks is None else {f"{int(x):02d}" for x in notebooks}
    g = _Grid(p, paths)
    for nb, reqs in notebook_requests(p).items():
        if want is not None and nb not in want:
            continue
        for req in reqs:
            if isinstance(req, SearchRequest):
                g.search(req.setting, req.iterations, req.pretrain_epochs, nb)
            else:
                g.bench(req, nb)
    # searches first (in iteration order), then training runs: every task after its dependencies
    return sorted(g.tasks.values(), key=lambda t: t.kind != "search")
