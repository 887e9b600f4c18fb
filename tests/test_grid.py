"""The reproduction grid as tasks, the executors' scheduling, retries and caching, and the Ray executor.

The Ray tests run a local 2-CPU cluster; they skip when ray is not installed (.ci/run installs it).
"""

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ONE_WORKER

from nslab import config
from nslab.cli import main as cli_main
from nslab.config.parts import Resources
from nslab.paths import paths as make_paths
from nslab.runs import grid
from nslab.runs.cluster import LocalCluster, session_processes
from nslab.runs.executors import InProcessExecutor, make_executor
from nslab.runs.grid import Task

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------
# scheduling with stand-in jobs (no training): fast


@dataclasses.dataclass(frozen=True)
class FakeJob:
    """Writes ``<dir>/<name>``; fails its first ``fails`` runs (counted in ``<dir>/<name>.runs``)."""

    dir: str
    name: str
    fails: int = 0
    out: str | None = None

    def run(self) -> None:
        runs = Path(self.dir) / f"{self.name}.runs"
        n = int(runs.read_text()) + 1 if runs.exists() else 1
        runs.write_text(str(n))
        if n <= self.fails:
            raise RuntimeError(f"{self.name} broke on run {n}")
        Path(self.dir, self.out or self.name).write_text("done")

    def output(self) -> str:
        return self.out or self.name

    def done(self) -> bool:
        return Path(self.dir, self.out or self.name).exists()


def fake(tmp_path, name, deps=(), fails=0, out=None, retries=2):
    return Task(name, name, "train", tuple(deps), Resources(retries=retries), ("05",),
                FakeJob(str(tmp_path), name, fails, out))


def runs(tmp_path, name):
    p = tmp_path / f"{name}.runs"
    return int(p.read_text()) if p.exists() else 0


def test_failed_task_is_retried_reported_and_its_dependents_skipped(tmp_path):
    ts = [fake(tmp_path, "a"), fake(tmp_path, "bad", fails=99), fake(tmp_path, "c", ["bad"]),
          fake(tmp_path, "d", ["c"]), fake(tmp_path, "e", ["a"])]
    rep = InProcessExecutor(progress=False).run(ts)
    assert runs(tmp_path, "bad") == 3  # one run and two retries
    assert list(rep.failed) == ["bad"] and "RuntimeError: bad broke on run 3" in rep.failed["bad"]
    assert set(rep.skipped) == {"c", "d"} and "needs bad" in rep.skipped["d"]
    assert sorted(rep.ran) == ["a", "e"] and not rep.ok
    assert rep.to_dict()["retried"] == {"bad": 3}
    assert runs(tmp_path, "c") == runs(tmp_path, "d") == 0


def test_flaky_task_succeeds_on_retry_and_a_rerun_recomputes_nothing(tmp_path):
    ts = [fake(tmp_path, "flaky", fails=1), fake(tmp_path, "after", ["flaky"])]
    rep = make_executor("inprocess", progress=False).run(ts)
    assert rep.ok and rep.ran == ["flaky", "after"] and rep.attempts["flaky"] == 2
    again = InProcessExecutor(progress=False).run(ts)
    assert again.ran == [] and again.cached == ["flaky", "after"]
    assert runs(tmp_path, "flaky") == 2 and runs(tmp_path, "after") == 1


def test_retries_override_and_no_retry(tmp_path):
    rep = InProcessExecutor(retries=0, progress=False).run([fake(tmp_path, "x", fails=1)])
    assert list(rep.failed) == ["x"] and runs(tmp_path, "x") == 1


def test_two_tasks_with_one_output_compute_it_once(tmp_path):
    # different keys, the same result (known only at run time): the second finds it cached
    ts = [fake(tmp_path, "one", out="shared"), fake(tmp_path, "two", out="shared")]
    rep = InProcessExecutor(progress=False).run(ts)
    assert rep.ran == ["one"] and rep.cached == ["two"] and runs(tmp_path, "two") == 0


@dataclasses.dataclass(frozen=True)
class Unresolvable(FakeJob):
    """A task whose result cannot even be named (e.g. a search on disk that gives no widths)."""

    def output(self) -> str:
        raise ValueError("no widths for this budget")

    def done(self) -> bool:
        return self.output() is None


def test_task_that_cannot_name_its_result_fails_without_stopping_the_grid(tmp_path):
    ts = [Task("odd", "odd", "train", (), Resources(), ("05",), Unresolvable(str(tmp_path), "odd")),
          fake(tmp_path, "after", ["odd"]), fake(tmp_path, "other")]
    rep = InProcessExecutor(progress=False).run(ts)
    assert rep.failed == {"odd": rep.failed["odd"]} and "ValueError: no widths for this budget" in rep.failed["odd"]
    assert list(rep.skipped) == ["after"] and rep.ran == ["other"] and runs(tmp_path, "odd") == 0


def test_bad_grids_and_executors_are_refused(tmp_path):
    with pytest.raises(ValueError, match="share the key 'a'"):
        InProcessExecutor(progress=False).run([fake(tmp_path, "a"), fake(tmp_path, "a")])
    with pytest.raises(ValueError, match="depends on 'nope'"):
        InProcessExecutor(progress=False).run([fake(tmp_path, "a", ["nope"])])
    with pytest.raises(ValueError, match="dependency cycle: a -> b -> a"):
        InProcessExecutor(progress=False).run([fake(tmp_path, "a", ["b"]), fake(tmp_path, "b", ["a"])])
    with pytest.raises(ValueError, match="unknown executor 'dask'; accepted: inprocess, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="retries must be an integer >= 0, got -1"):
        make_executor("inprocess", retries=-1)
    with pytest.raises(ValueError, match="takes no address"):
        make_executor("inprocess", address="auto")
    with pytest.raises(ValueError, match="Resources.gpus must be a finite number >= 0"):
        Resources(gpus=-0.5)


# --------------------------------------------------------------------------------------------------------
# the real grid: what the notebooks ask for


def outputs(results: Path) -> dict[str, int]:
    """Finished search iterations and run records, with their modification times (ns)."""
    files = list(results.glob("descent/*/iter_*/summary.json")) + list(results.glob("runs/*.json"))
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in files}


def test_grid_computes_exactly_what_the_notebooks_then_read(smoke_reproduction, tmp_path, monkeypatch):
    from nslab.runs import studies
    from nslab.search import descent

    # the smoke reproduction's grid (every kind of notebook request: search iteration 1 / all, benchmark, both
    # studies, notebooks 08 and 09) ran in process, then every notebook; a copy of its results, so that a call
    # below that computed would not touch the folder the other tests read
    ref, report = smoke_reproduction
    p = config.SMOKE
    shutil.copytree(ref / "results", tmp_path / "res")
    where = make_paths("smoke", tmp_path / "fig", tmp_path / "res")
    ts = grid.tasks(p, where)
    assert len({t.key for t in ts}) == len(ts) and len({t.name for t in ts}) == len(ts)
    keys = {t.key: i for i, t in enumerate(ts)}
    assert all(keys[d] < keys[t.key] for t in ts for d in t.deps)  # dependencies first
    it1 = [t for t in ts if t.kind == "train" and "neuralscale_it1 vgg11" in t.name]
    assert it1 and all(d.endswith(":1") for t in it1 for d in t.deps)  # iteration 1 only, not the last
    assert report["grid"]["ran"] == len(ts) and report["grid"]["failed"] == {}, report["grid"]
    before = outputs(where.results)
    # one output per task, after the notebooks too: nothing computed twice under two names (nor by a notebook,
    # outside the grid), nothing missing
    assert len(before) == len(ts)
    assert sum(1 for k in before if k.startswith("descent")) == sum(t.kind == "search" for t in ts)

    def computes(*a, **k):
        raise AssertionError("a notebook call computed something the grid should have cached")

    monkeypatch.setattr(descent, "_run_iteration", computes)
    monkeypatch.setattr(importlib.import_module("nslab.runs.train"), "train", computes)  # nslab.train: the function
    monkeypatch.setattr(importlib.import_module("nslab.scaling.baselines"), "li_baseline", computes)
    # the calls of notebooks 01/02, 04, 05, 06, 07, 08 and 09
    studies.search(p, p.descent, where, iterations=1, progress=False)
    studies.search(p, p.descent, where, progress=False)
    studies.benchmark_all(p, where, progress=False)
    studies.pretraining_study(p, p.pretrain[0], where, progress=False)
    studies.convcut_study(p, p.convcut[0], where, progress=False)
    if getattr(p, "macs_study", None) is not None:  # notebook 08
        studies.macs_study(p, where, progress=False)
    if getattr(p, "your_network", None) is not None:  # notebook 09: a traced network's search and runs
        studies.macs_study(p, where, progress=False, setting=studies.your_network(p))
    assert outputs(where.results) == before
    # only some notebooks: their tasks only
    only = grid.tasks(p, where, ["7"])
    assert only and all("07" in t.notebooks for t in only) and len(only) < len(ts)
    assert InProcessExecutor(progress=False).run(only).cached == [t.name for t in only]


def test_listing_and_checking_a_grid_loads_no_data(tmp_path, monkeypatch):
    from nslab.data import smoke_data
    from nslab.runs import specs

    def loads(*a, **k):
        raise AssertionError("listing or checking the grid loaded data")

    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    where = make_paths("cpu", tmp_path / "fig", tmp_path / "res", root)
    cpu = config.preset("cpu")
    monkeypatch.setattr(specs, "_load", loads)
    for p in (cpu, config.preset("smoke"), config.preset("gpu"), config.preset("paper")):
        assert grid.tasks(p, where)  # every request resolved, no image decoded, no width solved from data
    ts = grid.tasks(cpu, where)
    # the data's fingerprint is not known yet: no result can be named or found, and none is looked for
    assert all(t.output() is None and not t.done() for t in ts)
    # once the data has been loaded (by a run), its fingerprint is kept beside the results: names, no loading
    monkeypatch.setattr(specs, "_load", lambda name, root, synthetic: smoke_data(name))
    specs.data_of(cpu, cpu.descent, where).load()
    monkeypatch.setattr(specs, "_load", loads)
    searches = [t for t in ts if t.kind == "search"]
    assert all(t.output().startswith(str(where.results / "descent")) and not t.done() for t in searches)
    assert all(t.output() for t in ts if t.kind == "train" and t.job.search is None)
    # a changed data root invalidates the kept fingerprint
    (root / "test").mkdir()
    assert all(t.output() is None for t in searches)


def test_the_fingerprint_is_kept_for_the_environments_data_root_too(tmp_path, monkeypatch):
    # `NSLAB_DATA=... nslab reproduce` passes no data root: the kept fingerprint must still be found, or every
    # finished task of a rerun is listed as not done (and loads the data to find out)
    from nslab.data import smoke_data
    from nslab.runs import specs

    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    monkeypatch.setenv("NSLAB_DATA", str(root))
    where = make_paths("cpu", tmp_path / "fig", tmp_path / "res")
    cpu = config.preset("cpu")
    monkeypatch.setattr(specs, "_load", lambda name, root, synthetic: smoke_data(name))
    specs.data_of(cpu, cpu.descent, where).load()
    monkeypatch.setattr(specs, "_load", lambda *a, **k: pytest.fail("listing loaded data"))
    assert list((where.results / "data").glob("cifar10_*.json"))
    assert all(t.output() for t in grid.tasks(cpu, where) if t.kind == "search")


def test_a_shared_gpu_times_each_run_alone_after_it_and_the_notebooks_then_compute_nothing(tmp_path, monkeypatch):
    from nslab.runs import specs, studies
    from nslab.search import descent

    vgg = config.Setting("vgg11", "cifar10", "cifar10", (0.25,), (0,), methods=("uniform", "neuralscale_it1"))
    p = dataclasses.replace(config.SMOKE, benchmark=(vgg,), resources=Resources(cpus=1, gpus=0.25))
    where = make_paths("smoke", tmp_path / "fig", tmp_path / "res")
    ts = grid.tasks(p, where, ["5"])
    train = {t.key for t in ts if t.kind == "train"}
    latency = [t for t in ts if t.kind == "latency"]
    # one pass per training run, after it, holding a whole GPU (no other task's load in its timing)
    assert len(train) == 2 and len(latency) == 2
    assert all(t.resources.gpus == 1 and t.deps[0] in train for t in latency)
    assert not any(t.kind == "latency" for t in grid.tasks(dataclasses.replace(p, resources=Resources()), where))
    rep = InProcessExecutor(progress=False).run(ts)
    assert rep.ok and len(rep.ran) == len(ts), rep.to_dict()
    assert len(list((where.results / "latency").glob("*.json"))) == 2

    def computes(*a, **k):
        raise AssertionError("a notebook call computed something the grid should have cached")

    monkeypatch.setattr(descent, "_run_iteration", computes)
    monkeypatch.setattr(importlib.import_module("nslab.runs.train"), "train", computes)
    monkeypatch.setattr(specs, "measure_alone", computes)
    (_, recs, _), = studies.benchmark_all(p, where, progress=False)
    assert {r["latency_protocol"] for r in recs} == {specs.LATENCY_PROTOCOL} and all(r["latency_ms"] > 0 for r in recs)


# --------------------------------------------------------------------------------------------------------
# Ray: a local 2-CPU cluster; the smoke grid of notebook 05 against the in-process executor

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the Ray executor's tests need ray (pip install -e '.[ray]')")
# Each Ray test checks that it leaves no Ray process behind, counted over the whole machine, so no two may run at
# once on two xdist workers (CI failed on that: a process of the other test's cluster appeared in between)
one_worker = pytest.mark.xdist_group(ONE_WORKER)


def reproduce_args(d: Path, *more: str) -> list[str]:
    return ["reproduce", "--profile", "smoke", "--only", "05", "--results-dir", str(d / "res"),
            "--figures-dir", str(d / "fig"), "--build-dir", str(d / "build"), *more]


@pytest.fixture(scope="module")
def inprocess_ref(smoke_reproduction):
    """The in-process executor's smoke reproduction (every notebook; shared with the notebook tests)."""
    return smoke_reproduction[0]


def records(results: Path) -> dict[str, dict]:
    """The run records by file name, without what depends on timing (latency, training time)."""
    drop = ("latency_ms", "latency_std_ms", "train_seconds", "seconds")
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in drop}
            for p in sorted(results.glob("runs/*.json"))}


def ray_processes() -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
                state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if (b"ray::" in cmd or b"raylet" in cmd or b"gcs_server" in cmd) and state != "Z":
                out.add(int(d))
    return out


@needs_ray
@one_worker
def test_ray_driver_killed_mid_grid_resumes_without_recomputing(inprocess_ref, tmp_path):
    res = tmp_path / "res"
    before_any = ray_processes()
    # the grid only: its records are what the notebook's tables are made of (the notebook tests run it)
    cmd = [sys.executable, "-m", "nslab", *reproduce_args(tmp_path, "--executor", "ray", "--num-cpus", "2",
                                                          "--grid-only")]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    # kill once some searches and runs are finished and others are running
    while not (list(res.glob("descent/vgg11*/iter_01/summary.json")) and len(list(res.glob("runs/*.json"))) >= 2):
        assert driver.poll() is None, "the driver ended before it could be killed"
        assert time.monotonic() - t0 < 240, "no progress within 4 minutes"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = outputs(res)
    cluster = LocalCluster(str(res.resolve()))
    assert cluster.leftovers(), "the killed driver's cluster should still be running"
    leftover_sid = json.loads(cluster.record.read_text())["pid"]

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)["grid"]
    # nothing that had finished ran again: same files, untouched; all of them (and any the dying workers
    # finished meanwhile) counted as cached
    after = outputs(res)
    assert all(after[k] == v for k, v in finished.items())
    assert report["cached"] >= len(finished) and report["ran"] == report["tasks"] - report["cached"] > 0
    assert report["failed"] == {} and report["skipped"] == {}
    assert "stopped" in done.stderr and "previous run left" in done.stderr
    # every run record (notebook 05's Tables 1 and 2) is the in-process executor's, bit for bit (timings aside),
    # and no Ray process is left
    ray_records, ref = records(res), records(inprocess_ref / "results")
    assert len(ray_records) == report["tasks"] - len(list(res.glob("descent/*/iter_*/summary.json"))) > 0
    assert ray_records == {k: ref[k] for k in ray_records}
    assert session_processes(leftover_sid) == [] and not cluster.record.exists()
    assert ray_processes() <= before_any


@needs_ray
@one_worker
def test_ray_failing_task_is_retried_reported_and_the_rest_completes(tmp_path, monkeypatch, capsys):
    # a setting whose search fails when it runs (a training subset of 0 images): its NeuralScale run is
    # skipped, its uniform run and the other setting's go on
    s = config.SMOKE
    good = config.Setting("vgg11", "cifar10", "cifar10", (0.25,), methods=("uniform",))
    bad = config.Setting("vgg11", "cifar10", "cifar10", (0.75,), methods=("uniform", "neuralscale_it1"),
                         search=(("train_subset", 0),))
    p = dataclasses.replace(s, benchmark=(good, bad), resources=Resources(cpus=1, retries=1))
    monkeypatch.setitem(config.PRESETS, "smoke", p)
    before_any = ray_processes()
    status = cli_main(reproduce_args(tmp_path, "--executor", "ray", "--num-cpus", "2", "--grid-only"))
    err = capsys.readouterr().err
    assert status == 1
    line = [x for x in err.splitlines() if x.startswith("nslab reproduce: error:")][0]
    assert "1 grid task(s) failed (search vgg11/cifar10 P_e=1 it 1" in line and "ValueError" in line
    assert "notebooks not run: 05" in line
    assert err.count("task failed (") == 2 and "task failed (2/2): search" in err  # one retry, then reported
    recs = [json.loads(f.read_text()) for f in (tmp_path / "res" / "runs").glob("*.json")]
    # the good setting's runs, and the bad setting's uniform run (it needs no search)
    assert sorted((r["method"], r["ratio"]) for r in recs) == [("uniform", 0.25), ("uniform", 0.75)]
    assert "; 2 skipped;" in line  # search iteration 2 and NeuralScale at 0.75 need the failed iteration
    assert ray_processes() <= before_any
