"""Algorithm 4: architecture descent over a run directory (tiny synthetic runs), profiles, resume."""

import json

import numpy as np
import pytest

import nslab.descent as descent
from nslab import io
from nslab.cli import main as cli_main
from nslab.data import synthetic_data
from nslab.descent import PROFILES, SearchProfile, architecture_descent, get_profile, iteration_dir, law_from_run
from nslab.models import param_count, uniform_widths
from nslab.prune import PruneSettings

TINY = SearchProfile(
    "tiny",
    PruneSettings(channels_per_step=8, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05),
    iterations=2,
    synthetic=True,
    start_ratio=0.125,
)


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


def test_descent_writes_every_artifact(tmp_path, data, capsys):
    run = tmp_path / "run"
    live = {}  # iteration -> the last trajectory a live plot was sent
    res = architecture_descent(
        "vgg11", "cifar10", data, iterations=2, profile=TINY, run_dir=run, progress=False,
        on_row=lambda k, w, p: live.__setitem__(k, w),
    )
    assert [s["iteration"] for s in res.iterations] == [1, 2]
    assert sorted(live) == [1, 2]
    budget = param_count("vgg11", uniform_widths("vgg11", 0.125))
    for k, s in enumerate(res.iterations, start=1):
        it = iteration_dir(run, k)
        header = (it / "trajectory.csv").read_text().splitlines()[0]
        assert header == "w1,w2,w3,w4,w5,w6,w7,w8,params"
        traj = io.read_trajectory(it / "trajectory.csv")
        assert len(traj) == s["fit"]["rows"] >= 6
        np.testing.assert_array_equal(live[k], traj)
        fit = io.read_json(it / "fit.json")
        assert fit["arch"] == "vgg11" and len(fit["beta"]) == 8
        gen = io.read_json(it / "widths.json")
        assert gen["params"] == param_count("vgg11", gen["widths"])
        assert abs(gen["params"] - budget) / budget < 0.02
        assert np.isfinite(s["change_from_previous"])
    # Iteration 2 starts from the widths iteration 1 generated.
    assert res.iterations[1]["start_widths"] == res.iterations[0]["generated"]["widths"]
    settings = io.read_json(run / "settings.json")
    assert settings["profile"] == "tiny" and settings["prune"]["channels_per_step"] == 8
    assert len(io.read_json(run / "descent.json")) == 2
    # The generate path of the CLI uses the run's fit directly.
    law, arch, dataset, convcut = law_from_run(run, 2)
    assert (arch, dataset, convcut) == ("vgg11", "cifar10", False) and all(b > 0 for b in law.beta)
    assert cli_main(["generate", "--run", str(run), "--iteration", "1", "--budget", str(budget)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["widths"] == res.iterations[0]["generated"]["widths"]


def test_descent_resumes_without_redoing_finished_iterations(tmp_path, data, monkeypatch):
    run = tmp_path / "run"
    interrupted = CountingPrune(fail_on=2)
    monkeypatch.setattr(descent, "prune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        architecture_descent(
            "vgg11", "cifar10", data, iterations=2, profile=TINY, run_dir=run, progress=False
        )
    assert (iteration_dir(run, 1) / "summary.json").exists()
    assert not (iteration_dir(run, 2) / "summary.json").exists()
    stamp = (iteration_dir(run, 1) / "summary.json").stat().st_mtime_ns
    first = io.read_json(iteration_dir(run, 1) / "summary.json")

    resumed = CountingPrune()
    monkeypatch.setattr(descent, "prune", resumed)
    res = architecture_descent(
        "vgg11", "cifar10", data, iterations=2, profile=TINY, run_dir=run, progress=False
    )
    assert resumed.calls == 1  # only the interrupted iteration 2 ran
    assert (iteration_dir(run, 1) / "summary.json").stat().st_mtime_ns == stamp
    assert res.iterations[0] == first and len(res.iterations) == 2

    again = CountingPrune()
    monkeypatch.setattr(descent, "prune", again)
    architecture_descent("vgg11", "cifar10", data, iterations=2, profile=TINY, run_dir=run, progress=False)
    assert again.calls == 0  # a finished run does nothing
    res = architecture_descent(
        "vgg11", "cifar10", data, iterations=3, profile=TINY, run_dir=run, progress=False
    )
    assert again.calls == 1 and len(res.iterations) == 3  # raising --iterations continues


def test_descent_refuses_a_run_dir_of_other_settings(tmp_path, data, monkeypatch):
    run = tmp_path / "run"
    calls = CountingPrune()
    monkeypatch.setattr(descent, "prune", calls)
    architecture_descent("vgg11", "cifar10", data, iterations=1, profile=TINY, run_dir=run, progress=False)
    before = (run / "settings.json").read_text()
    with pytest.raises(ValueError, match="different settings.*pretrain_epochs|prune"):
        architecture_descent(
            "vgg11",
            "cifar10",
            data,
            iterations=1,
            profile=TINY,
            run_dir=run,
            pretrain_epochs=3,
            progress=False,
        )
    assert (run / "settings.json").read_text() == before  # nothing written over
    assert calls.calls == 1


def test_profiles_and_bad_input():
    assert set(PROFILES) == {"paper", "cpu", "smoke"}
    p = get_profile("paper").prune
    assert (p.channels_per_step, p.batches_per_step, p.batch_size, p.pretrain_epochs) == (10, 50, 256, 10)
    assert (p.pretrain_lr, p.lr, p.lr_decay, p.momentum, p.weight_decay, p.stop_fraction) == (
        0.1,
        0.01,
        1.5,
        0.5,
        5e-4,
        0.05,
    )
    assert get_profile("paper").iterations == 15
    with pytest.raises(ValueError, match="unknown search profile 'gpu'; accepted: paper, cpu, smoke"):
        get_profile("gpu")
    with pytest.raises(ValueError, match="iterations must be an integer >= 1, got 0"):
        architecture_descent("vgg11", "cifar10", None, iterations=0, profile=TINY, run_dir="unused")
    with pytest.raises(ValueError, match="needs a dataset"):
        architecture_descent("vgg11", "cifar10", None, iterations=1, profile="cpu", run_dir="unused")
    with pytest.raises(ValueError, match="is not a search run directory"):
        law_from_run("no/such/run", 1)
