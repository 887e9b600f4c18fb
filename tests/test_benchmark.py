"""The grid of a preset: every artifact is keyed by everything that changes it, both ways.

Change nothing and a rerun reuses every search, training run and latency record; change any setting that
changes a result (search, recipe, test subset, latency protocol, data) and nothing old is reused.
"""

import dataclasses
import importlib

import pytest

import nslab.search.descent as descent
from nslab.config import LatencySettings, PruneSettings, SearchSettings, Setting, preset
from nslab.data import synthetic_data
from nslab.paths import Paths
from nslab.runs import studies

train_module = importlib.import_module("nslab.train")  # the module; nslab.train is also the function
SETTING = Setting("vgg11", "cifar10", "cifar10", (0.25,), seeds=(0,))
PRESET = dataclasses.replace(
    preset("smoke"),
    search=SearchSettings(PruneSettings(channels_per_step=8, batches_per_step=1, batch_size=16, pretrain_epochs=0,
                                        lr=0.05), iterations=1, synthetic=True, start_ratio=0.125, threads=1),
    epochs=1, train_subset=32, latency=LatencySettings(2, 0, 1), descent=SETTING, benchmark=(SETTING,),
)


class Counter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


@pytest.fixture
def counted(monkeypatch):
    prunes, trains = Counter(descent.prune), Counter(train_module.train)
    monkeypatch.setattr(descent, "prune", prunes)
    monkeypatch.setattr(train_module, "train", trains)
    data = {"seed": 0}
    monkeypatch.setattr(studies, "load_data",
                        lambda p, s, paths: synthetic_data(train_per_class=16, test_per_class=4, seed=data["seed"]))
    return prunes, trains, data


def test_searches_are_reused_exactly_when_nothing_changed(tmp_path, counted):
    prunes, _, data = counted
    paths = Paths(tmp_path / "fig", tmp_path / "res", None)
    run = studies.search(PRESET, SETTING, paths, progress=False)
    assert prunes.calls == 1
    assert studies.search(PRESET, SETTING, paths, progress=False).run_dir == run.run_dir
    assert prunes.calls == 1  # nothing changed: reused
    other = dataclasses.replace(PRESET, search=dataclasses.replace(
        PRESET.search, prune=dataclasses.replace(PRESET.search.prune, channels_per_step=6)))
    assert studies.search(other, SETTING, paths, progress=False).run_dir != run.run_dir
    assert prunes.calls == 2  # a search setting changed: searched anew
    data["seed"] = 1
    assert studies.search(PRESET, SETTING, paths, progress=False).run_dir != run.run_dir
    assert prunes.calls == 3  # other data: searched anew
    assert studies.search(PRESET, SETTING, paths, pretrain_epochs=1, progress=False).run_dir.name.startswith(
        "vgg11_cifar10_pe1_")


def test_training_runs_and_latency_records_are_keyed_by_everything(tmp_path, counted):
    _, trains, data = counted
    paths = Paths(tmp_path / "fig", tmp_path / "res", None)

    def runs(p, setting=SETTING):
        before = trains.calls
        _, recs = studies.benchmark(p, setting, paths, methods=("uniform",), progress=False)
        assert len(recs) == 1 and recs[0]["latency_ms"] > 0
        return trains.calls - before

    assert runs(PRESET) == 1
    assert runs(PRESET) == 0  # nothing changed: the record (accuracy and latency) is reused
    assert runs(dataclasses.replace(PRESET, epochs=2)) == 1  # the recipe
    assert runs(PRESET, dataclasses.replace(SETTING, test_subset=20)) == 1  # the test images
    assert runs(dataclasses.replace(PRESET, latency=LatencySettings(3, 0, 1))) == 1  # the latency protocol
    data["seed"] = 1
    assert runs(PRESET) == 1  # the data
    data["seed"] = 0
    assert runs(PRESET) == 0  # and back: still cached


def test_methods_share_one_search_and_meet_the_budget(tmp_path, counted):
    prunes, _, _ = counted
    paths = Paths(tmp_path / "fig", tmp_path / "res", None)
    run = studies.search(PRESET, SETTING, paths, progress=False)
    data = studies.load_data(PRESET, SETTING, paths)
    specs = studies.run_specs(PRESET, SETTING, run, ("uniform", "morphnet", "neuralscale_it1", "li"), data)
    assert [s.method for s in specs] == ["uniform", "morphnet", "neuralscale_it1", "li"]
    assert [s.ratio for s in specs] == [0.25, 0.25, 0.25, 0.75]  # Li et al. prune to the 0.75 budget
    ctx = studies.context(PRESET, SETTING, run)
    assert ctx.start_ratio == 0.125 and prunes.calls == 1
    from nslab.models import param_count

    for s in specs:
        target = ctx.budget(s.ratio).params
        assert abs(param_count("vgg11", list(s.widths)) - target) / target < 0.03
