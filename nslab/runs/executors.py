"""Executors of the reproduction grid (:mod:`nslab.runs.grid`): in this process, or on a Ray cluster.

Both take the same list of :class:`~nslab.runs.grid.Task` s and return a :class:`GridReport`:

- a task whose result is already written is *cached* (not run again: a rerun after a crash or a killed
  driver recomputes nothing that finished, and the running tasks resume from their checkpoints);
- a task runs once every task it depends on is done; one that raises is run again up to its
  ``resources.retries`` times, then reported *failed* by name with its error; the tasks that depend on it
  (directly or not) are reported *skipped*; every other task goes on;
- two tasks that turn out to write the same result (known once their dependencies are done) never run
  at the same time: the second waits and then finds the result cached.

:class:`InProcessExecutor` runs one task at a time in this process (the default; needs nothing more).
:class:`RayExecutor` runs them on a Ray cluster (``pip install -e ".[ray]"``), each task asking for the
preset's CPUs and GPU fraction, so several small runs share a GPU; without an address it starts a local
cluster of its own (:mod:`nslab.runs.cluster`). Progress (done / running / failed, ETA) goes to stderr.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .grid import Task

__all__ = ["EXECUTORS", "GridReport", "InProcessExecutor", "RayExecutor", "make_executor"]


@dataclass
class GridReport:
    """What an executor did with a grid.

    Attributes:
        ran: names of the tasks computed now.
        cached: names of the tasks whose result was already written.
        failed: ``{name: error}`` of the tasks that failed every attempt.
        skipped: ``{name: reason}`` of the tasks not run because a task they need failed.
        attempts: ``{name: runs}`` of every task that ran at least once (retries included).
        seconds: wall time of the grid, s.
    """

    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No task failed or was skipped."""
        return not self.failed and not self.skipped

    def to_dict(self) -> dict:
        """JSON-ready summary (counts, then the names)."""
        return {"tasks": len(self.ran) + len(self.cached) + len(self.failed) + len(self.skipped),
                "ran": len(self.ran), "cached": len(self.cached), "failed": dict(self.failed),
                "skipped": dict(self.skipped), "retried": {k: v for k, v in self.attempts.items() if v > 1},
                "seconds": round(self.seconds, 1)}


class _Progress:
    """One tqdm bar on stderr over the tasks to compute, with running / failed / skipped counts and an ETA."""

    def __init__(self, total: int, cached: int, enabled: bool, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"{desc} ({cached} cached)", unit="task", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True)
        self.enabled = enabled

    def update(self, sched: _Schedule) -> None:
        self.bar.set_postfix_str(f"running {len(sched.running)}, failed {len(sched.report.failed)}, "
                                 f"skipped {len(sched.report.skipped)}", refresh=False)
        self.bar.update(self.bar.total - len(sched.waiting) - len(sched.running) - self.bar.n)

    def failed(self, sched: _Schedule, t: Task, error: str) -> None:
        """Record a failed attempt of ``t`` in ``sched`` and say so (and whether it runs again)."""
        again = sched.failed(t, error)
        self.write(f"task failed ({sched.report.attempts[t.name]}/{sched.max_attempts(t)}): {t.name}: {error}"
                   + ("; retrying" if again else ""))

    def write(self, msg: str) -> None:
        if self.enabled:
            self.bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class _Schedule:
    """The bookkeeping both executors share: which tasks are ready, done, failed or skipped."""

    def __init__(self, tasks: Sequence[Task], retries: int | None):
        self.tasks = {t.key: t for t in _validate(tasks)}
        self.retries = retries
        self.report = GridReport()
        self.done: set[str] = set()  # keys ran or cached
        self.running: dict[str, str | None] = {}  # key -> output key
        self.waiting = list(self.tasks)  # keys not started, in the given (dependency) order
        self.dependents: dict[str, list[str]] = {k: [] for k in self.tasks}
        for t in self.tasks.values():
            for d in t.deps:
                self.dependents[d].append(t.key)

    def max_attempts(self, t: Task) -> int:
        return 1 + (t.resources.retries if self.retries is None else self.retries)

    def scan_cached(self) -> None:
        """Mark the tasks whose results exist (in dependency order, so a task is checked after its deps)."""
        for k in list(self.waiting):
            t = self.tasks[k]
            if all(d in self.done for d in t.deps) and _quiet(t.done):
                self.done.add(k)
                self.report.cached.append(t.name)
                self.waiting.remove(k)

    def ready(self, limit: int | None = None) -> list[Task]:
        """Tasks to start now (at most ``limit``): dependencies done, no running task writing the same result."""
        out: list[Task] = []
        outputs = set(self.running.values())
        for k in list(self.waiting):
            if limit is not None and len(out) >= limit:
                break
            t = self.tasks[k]
            if not all(d in self.done for d in t.deps):
                continue
            try:
                o = t.output()
                written = (o is None or o not in outputs) and t.done()
            except Exception as e:  # noqa: BLE001 - e.g. a search on disk that gives no widths: the task fails
                self.waiting.remove(k)
                self.failed(t, _error(e), retry=False)
                continue
            if o is not None and o in outputs:
                continue  # the same result is being computed: take it from the cache afterwards
            if written:  # written meanwhile (by a task of another key with the same result)
                self.waiting.remove(k)
                self.done.add(k)
                self.report.cached.append(t.name)
                continue
            self.waiting.remove(k)
            self.running[k] = o
            outputs.add(o)
            out.append(t)
        return out

    def finished(self, t: Task) -> None:
        self.running.pop(t.key, None)
        self.done.add(t.key)
        self.report.ran.append(t.name)

    def attempt(self, t: Task) -> int:
        self.report.attempts[t.name] = self.report.attempts.get(t.name, 0) + 1
        return self.report.attempts[t.name]

    def failed(self, t: Task, error: str, retry: bool = True) -> bool:
        """Record a failed attempt; returns whether to run it again (else it and its dependents are out)."""
        self.running.pop(t.key, None)
        if retry and self.report.attempts.get(t.name, 0) < self.max_attempts(t):
            self.waiting.insert(0, t.key)
            return True
        self.report.failed[t.name] = error
        stack = list(self.dependents[t.key])
        while stack:
            k = stack.pop()
            if k in self.waiting:
                self.waiting.remove(k)
                self.report.skipped[self.tasks[k].name] = f"needs {t.name}, which failed"
                stack.extend(self.dependents[k])
        return False

    @property
    def left(self) -> bool:
        return bool(self.waiting or self.running)


def _quiet(done: Callable[[], bool]) -> bool:
    """``done()``, ``False`` when it raises (the task then fails when it is about to start, with the error)."""
    try:
        return bool(done())
    except Exception:  # noqa: BLE001
        return False


def _validate(tasks: Sequence[Task]) -> list[Task]:
    """Unique keys, known dependencies, no cycle; ``ValueError`` naming the culprit otherwise."""
    keys: dict[str, Task] = {}
    for t in tasks:
        if t.key in keys:
            raise ValueError(f"two tasks share the key {t.key!r}: {keys[t.key].name!r} and {t.name!r}")
        keys[t.key] = t
    for t in tasks:
        missing = [d for d in t.deps if d not in keys]
        if missing:
            raise ValueError(f"task {t.name!r} depends on {missing[0]!r}, which is not in the grid")
    state: dict[str, int] = {}  # 1: on the path, 2: checked

    def visit(k: str, path: list[str]) -> None:
        if state.get(k) == 2:
            return
        if state.get(k) == 1:
            raise ValueError(f"dependency cycle: {' -> '.join(keys[x].name for x in path + [k])}")
        state[k] = 1
        for d in keys[k].deps:
            visit(d, path + [k])
        state[k] = 2

    for k in keys:
        visit(k, [])
    return list(tasks)


def _error(e: BaseException) -> str:
    """``"Name: message"`` on one line, with the innermost frame of the traceback (file:line)."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:600]}{where}"


class InProcessExecutor:
    """Runs the tasks one at a time in this process, in dependency order.

    Args:
        retries: runs again a failed task this many times (``None``: each task's ``resources.retries``).
        progress: the grid's bar on stderr.
        threads: torch CPU threads while a task runs (``None``: the task's ``resources.cpus``, as on Ray, so
            that both executors compute the same numbers).
    """

    name = "inprocess"

    def __init__(self, retries: int | None = None, progress: bool = True, threads: int | None = None):
        self.retries, self.progress, self.threads = retries, progress, threads

    def run(self, tasks: Sequence[Task]) -> GridReport:
        """Run ``tasks`` (see the module docstring); ``KeyboardInterrupt`` propagates (finished work is kept)."""
        t0 = time.perf_counter()
        s = _Schedule(tasks, self.retries)
        s.scan_cached()
        bar = _Progress(len(s.waiting), len(s.report.cached), self.progress, "grid (in process)")
        try:
            while s.left:
                ready = s.ready(limit=1)
                bar.update(s)
                if not ready:  # every waiting task is blocked (nothing runs in between): nothing left to do
                    break
                t = ready[0]
                s.attempt(t)
                try:
                    _run(t, self.threads or _threads(t))
                except Exception as e:  # noqa: BLE001 - any failure of a task is reported, the grid goes on
                    bar.failed(s, t, _error(e))
                    continue
                s.finished(t)
            bar.update(s)
        finally:
            bar.close()
        s.report.seconds = time.perf_counter() - t0
        return s.report


def _threads(t: Task) -> int:
    """Torch threads of a task: its CPU count (at least one)."""
    return max(1, int(t.resources.cpus))


def _run(task: Task, threads: int) -> None:
    """``task.run()`` with ``threads`` torch threads (its CPU count: the same on Ray and in process)."""
    from ..device import torch_threads

    with torch_threads(threads):
        task.run()


class RayExecutor:
    """Runs the tasks on a Ray cluster: each asks for ``resources.cpus`` CPUs and ``resources.gpus`` GPUs.

    Args:
        address: an existing cluster (``"auto"`` or ``"HOST:PORT"``); ``None`` starts a local cluster of
            ``num_cpus`` CPUs (and ``num_gpus`` GPUs) in a known place beside ``cluster_dir``, killing the
            leftovers of a previous driver that was killed (:class:`nslab.runs.cluster.LocalCluster`).
        cluster_key: what names the local cluster's place (the results directory: one cluster per results
            directory); ``None``: ``"default"``.
        num_cpus, num_gpus: the local cluster's size (default: every CPU; the GPUs torch sees).
        retries: runs again a failed task this many times (``None``: each task's ``resources.retries``).
        progress: the grid's bar on stderr.

    Every node must see the results directory at the same path (a shared file system) and the data; see
    the README's "Running the grid on a cluster".
    """

    name = "ray"

    def __init__(self, address: str | None = None, cluster_key: str | None = None, num_cpus: int | None = None,
                 num_gpus: int | None = None, retries: int | None = None, progress: bool = True):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError('the ray executor needs Ray: pip install -e ".[ray]" (or pip install ray); '
                             "accepted executors without it: inprocess") from None
        self.address, self.cluster_key = address, cluster_key or "default"
        self.num_cpus, self.num_gpus, self.retries, self.progress = num_cpus, num_gpus, retries, progress

    def run(self, tasks: Sequence[Task]) -> GridReport:
        """Run ``tasks`` on the cluster (see the module docstring); the local cluster stops at the end."""
        import ray

        from .cluster import LocalCluster

        t0 = time.perf_counter()
        s = _Schedule(tasks, self.retries)
        s.scan_cached()
        if not s.waiting:
            s.report.seconds = time.perf_counter() - t0
            return s.report
        cluster = None
        address = self.address
        if address is None:
            cluster = LocalCluster(self.cluster_key)
            address = cluster.start(self.num_cpus, self.num_gpus)
        bar = None
        try:
            _connect(ray, address)
            remote = ray.remote(_run)
            bar = _Progress(len(s.waiting), len(s.report.cached), self.progress, "grid (ray)")
            refs: dict = {}
            while s.left:
                for t in s.ready():
                    r = t.resources
                    refs[remote.options(num_cpus=r.cpus, num_gpus=r.gpus, max_retries=0,
                                        name=t.name[:100]).remote(t, _threads(t))] = t
                    s.attempt(t)
                bar.update(s)
                if not refs:
                    break
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    t = refs.pop(ref)
                    try:
                        ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a task error or a dead worker/node: same handling
                        bar.failed(s, t, _ray_error(e))
                        continue
                    s.finished(t)
        finally:
            if bar is not None:
                bar.close()
            if ray.is_initialized():
                ray.shutdown()
            if cluster is not None:
                cluster.stop()
        s.report.seconds = time.perf_counter() - t0
        return s.report


def _connect(ray, address: str) -> None:
    import logging

    # log_to_driver=False: the workers' prints would land on this process's stdout, which carries the
    # command's JSON; their logs stay in the cluster's session directory
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)


def _ray_error(e: BaseException) -> str:
    """The task's own exception when Ray wrapped one, else Ray's (a worker or node that died)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return _error(cause)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:600]}"


EXECUTORS = ("inprocess", "ray")


def make_executor(name: str, **kw) -> InProcessExecutor | RayExecutor:
    """The executor ``name`` (``"inprocess"`` or ``"ray"``) built with ``kw``; ``ValueError`` otherwise.

    ``kw`` the other executor does not take (e.g. ``address`` for the in-process one) are ignored when
    ``None``, refused otherwise.
    """
    for k in ("retries", "num_cpus", "num_gpus", "threads"):
        v = kw.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (0 if k == "retries" else 1)):
            raise ValueError(f"{k} must be an integer >= {0 if k == 'retries' else 1}, got {v!r}")
    if name == "inprocess":
        extra = {k: v for k, v in kw.items() if k not in ("retries", "progress", "threads") and v is not None}
        if extra:
            raise ValueError(f"the inprocess executor takes no {', '.join(sorted(extra))}; use --executor ray")
        return InProcessExecutor(**{k: v for k, v in kw.items() if k in ("retries", "progress", "threads")})
    if name == "ray":
        return RayExecutor(**{k: v for k, v in kw.items() if k != "threads"})
    raise ValueError(f"unknown executor {name!r}; accepted: {', '.join(EXECUTORS)}")
