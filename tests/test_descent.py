"""Algorithm 4: architecture descent over a run directory (tiny synthetic runs), typed results, resume."""

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nslab.search.descent as descent
from nslab import io
from nslab.config import PruneSettings, SearchSettings
from nslab.data import synthetic_data
from nslab.models import param_count, uniform_widths
from nslab.scaling.methods import Context, morphnet_base
from nslab.search.descent import architecture_descent, iteration_dir, load_run

TINY = SearchSettings(
    PruneSettings(channels_per_step=8, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05),
    iterations=2,
    synthetic=True,
    start_ratio=0.125,
)


def tiny(**changes) -> SearchSettings:
    return dataclasses.replace(TINY, **changes)


@pytest.fixture(scope="module")
def data():
    return synthetic_data(train_per_class=16, test_per_class=2)


class CountingPrune:
    """Wraps the real pruner: counts calls, optionally interrupts the n-th one."""

    def __init__(self, fail_on: int | None = None):
        self.calls, self.fail_on = 0, fail_on

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        return REAL_PRUNE(*args, **kwargs)


REAL_PRUNE = descent.prune


def test_descent_writes_typed_results_and_reads_them_back(tmp_path, data):
    run = tmp_path / "run"
    live = {}  # iteration -> the last trajectory a live plot was sent
    res = architecture_descent("vgg11", "cifar10", data, TINY, run, progress=False,
                               on_row=lambda k, w, p: live.__setitem__(k, w))
    assert [it.index for it in res.iterations] == [1, 2] and sorted(live) == [1, 2]
    budget = param_count("vgg11", uniform_widths("vgg11", 0.125))
    for it in res.iterations:
        d = iteration_dir(run, it.index)
        assert (d / "trajectory.csv").read_text().splitlines()[0] == "w1,w2,w3,w4,w5,w6,w7,w8,params"
        np.testing.assert_array_equal(io.read_trajectory(d / "trajectory.csv"), it.widths)
        np.testing.assert_array_equal(live[it.index], it.widths)
        assert len(it.widths) == it.law.rows >= 6
        assert it.params.tolist() == [param_count("vgg11", r) for r in it.widths.tolist()]
        assert it.generated.params == param_count("vgg11", it.generated.widths)
        assert abs(it.generated.params - budget) / budget < 0.02 and np.isfinite(it.change)
        assert not (d / "prune").exists()  # the pruning checkpoint goes once the iteration is done
    # MorphNet's network is the one iteration 1 kept when exactly half the start network's channels were left
    n = sum(uniform_widths("vgg11", 0.125))
    first = res.iterations[0]
    assert sum(first.at_half) == n - int(0.5 * n) and list(first.at_half) not in first.widths.tolist()
    assert morphnet_base(Context.from_run(res)) == list(first.at_half)
    # iteration 2 starts from the widths iteration 1 generated
    assert list(res.iterations[1].start) == res.iterations[0].generated.widths
    settings = io.read_json(run / "settings.json")
    assert settings["search"]["prune"]["channels_per_step"] == 8 and settings["data"] == data.fingerprint()
    assert len(io.read_json(run / "descent.json")) == 2
    # everything is read back as saved: the same typed values, nothing recomputed differently
    back = load_run(run)
    for a, b in zip(res.iterations, back.iterations):
        assert a.law == b.law and a.generated == b.generated and a.start == b.start and a.change == b.change
    assert back.widths(1, budget) == res.widths(1, budget)
    assert res.law(-1) == res.iterations[-1].law
    with pytest.raises(ValueError, match="iteration 3 .* is not finished; finished: 1..2"):
        res.iteration(3)


def test_descent_resumes_without_redoing_finished_iterations(tmp_path, data, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(descent, "prune", CountingPrune(fail_on=2))
    with pytest.raises(KeyboardInterrupt):
        architecture_descent("vgg11", "cifar10", data, TINY, run, progress=False)
    assert (iteration_dir(run, 1) / "summary.json").exists()
    assert not (iteration_dir(run, 2) / "summary.json").exists()
    stamp = (iteration_dir(run, 1) / "summary.json").stat().st_mtime_ns

    resumed = CountingPrune()
    monkeypatch.setattr(descent, "prune", resumed)
    res = architecture_descent("vgg11", "cifar10", data, TINY, run, progress=False)
    assert resumed.calls == 1 and len(res.iterations) == 2  # only the interrupted iteration 2 ran
    assert (iteration_dir(run, 1) / "summary.json").stat().st_mtime_ns == stamp

    again = CountingPrune()
    monkeypatch.setattr(descent, "prune", again)
    architecture_descent("vgg11", "cifar10", data, TINY, run, progress=False)
    assert again.calls == 0  # a finished run does nothing
    # fewer iterations: the first ones, and nothing on disk is forgotten or shortened
    one = architecture_descent("vgg11", "cifar10", data, tiny(iterations=1), run, progress=False)
    assert len(one.iterations) == 1 and again.calls == 0
    assert len(io.read_json(run / "descent.json")) == 2 and (iteration_dir(run, 2) / "summary.json").exists()
    res = architecture_descent("vgg11", "cifar10", data, tiny(iterations=3), run, progress=False)
    assert again.calls == 1 and len(res.iterations) == 3  # raising the iterations continues


def test_descent_refuses_a_run_dir_of_other_settings(tmp_path, data, monkeypatch):
    run = tmp_path / "run"
    calls = CountingPrune()
    monkeypatch.setattr(descent, "prune", calls)
    architecture_descent("vgg11", "cifar10", data, tiny(iterations=1), run, progress=False)
    before = (run / "settings.json").read_text()
    other = tiny(iterations=1, prune=dataclasses.replace(TINY.prune, pretrain_epochs=3))
    with pytest.raises(ValueError, match="different settings.*pretrain_epochs"):
        architecture_descent("vgg11", "cifar10", data, other, run, progress=False)
    other_data = synthetic_data(train_per_class=16, test_per_class=2, seed=1)
    with pytest.raises(ValueError, match="different settings.*data"):
        architecture_descent("vgg11", "cifar10", other_data, tiny(iterations=1), run, progress=False)
    assert (run / "settings.json").read_text() == before  # nothing written over
    assert calls.calls == 1


def test_bad_input():
    with pytest.raises(ValueError, match="iterations must be an integer >= 1, got 0"):
        tiny(iterations=0)
    with pytest.raises(ValueError, match="needs a dataset"):
        architecture_descent("vgg11", "cifar10", None, tiny(synthetic=False), "unused")
    with pytest.raises(ValueError, match="is not a search run directory"):
        load_run("no/such/run")


_KILLED_SEARCH = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from nslab.config import PruneSettings, SearchSettings
    from nslab.data import synthetic_data
    from nslab.search.descent import architecture_descent
    search = SearchSettings(PruneSettings(channels_per_step=8, batches_per_step=1, batch_size=16,
                                          pretrain_epochs=1, lr=0.05), iterations=1, synthetic=True,
                            start_ratio=0.125)
    kill_after = int(sys.argv[2])
    def on_row(k, w, p):
        if kill_after and len(w) == kill_after:
            os._exit(9)  # no cleanup, as a SIGKILL would leave it
    architecture_descent("vgg11", "cifar10", synthetic_data(train_per_class=16, test_per_class=2), search,
                         sys.argv[1], progress=False, on_row=on_row)
""")


def test_a_search_killed_mid_iteration_resumes_to_the_same_bytes(tmp_path):
    def run(d, kill_after):
        return subprocess.run([sys.executable, "-c", _KILLED_SEARCH, str(d), str(kill_after)], capture_output=True,
                              text=True, timeout=300)

    assert run(tmp_path / "whole", 0).returncode == 0
    killed = run(tmp_path / "killed", 10)
    assert killed.returncode == 9, killed.stderr
    assert (iteration_dir(tmp_path / "killed", 1) / "prune").is_dir()  # a checkpoint was left behind
    assert not (iteration_dir(tmp_path / "killed", 1) / "summary.json").exists()
    resumed = run(tmp_path / "killed", 0)
    assert resumed.returncode == 0, resumed.stderr
    whole = (iteration_dir(tmp_path / "whole", 1) / "trajectory.csv").read_bytes()
    assert (iteration_dir(tmp_path / "killed", 1) / "trajectory.csv").read_bytes() == whole
