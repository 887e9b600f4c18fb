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
from nslab.runs import specs, studies

train_module = importlib.import_module("nslab.runs.train")  # the module; nslab.train is also the function
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
    monkeypatch.setattr(specs.DataSource, "load",
                        lambda self: synthetic_data(train_per_class=16, test_per_class=4, seed=data["seed"]))
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
        target = ctx.budget(s.ratio).target
        assert abs(param_count("vgg11", list(s.widths)) - target) / target < 0.03


# --------------------------------------------------------------------------------------------------------
# one resolution of a preset, and latency measured alone on a shared device


def test_a_preset_resolves_a_setting_once_with_one_precedence():
    p = dataclasses.replace(preset("cpu"), prune_by_variant=(("cifar", (("batch_size", 99), ("lr", 0.03))),))
    s = Setting("vgg11", "cifar10", "cifar10", (0.25,), prune=(("lr", 0.07),), search=(("train_subset", 100),),
                start_ratio=0.5, epochs=3, train_subset=200)
    t = p.resolve(s, "cifar", pretrain_epochs=4, iterations=3)
    # the call > the setting > the preset's by-variant overrides > the preset > the stage defaults
    assert (t.search.prune.pretrain_epochs, t.search.iterations) == (4, 3)
    assert (t.search.prune.lr, t.search.train_subset, t.search.start_ratio) == (0.07, 100, 0.5)
    assert t.search.prune.batch_size == 99 and t.search.prune.channels_per_step == 4  # by variant; the preset's
    assert t.search.prune.weight_decay == PruneSettings().weight_decay  # a stage default
    assert (t.recipe.epochs, t.recipe.subset) == (3, 200)  # the setting's, over the preset's 8 and the recipe's 18
    plain = p.resolve(Setting("vgg11", "cifar10", "cifar10", (0.25,)), "cifar")
    assert (plain.recipe.epochs, plain.search.prune.pretrain_epochs) == (8, 2)
    assert p.resolve(s, "tiny").search.prune.batch_size == p.search.prune.batch_size  # other variant: none
    # the pipeline's one call site looks the variant up; config itself is told it
    assert studies.settings_for(p, s, 4, 3) == t
    with pytest.raises(ValueError, match="variant"):
        p.resolve(s)


def test_config_imports_nothing_else_of_nslab():
    import ast
    from pathlib import Path

    root = Path(studies.__file__).resolve().parents[1] / "config"
    outside = []
    for f in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level > 1 or (node.module or "").startswith("nslab")):
                outside.append(f"{f.name}: {'.' * node.level}{node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith("nslab") for a in node.names):
                outside.append(f"{f.name}: {[a.name for a in node.names]}")
    assert not outside, outside


def test_a_shared_device_measures_latency_alone_under_a_key_of_its_protocol(tmp_path, counted):
    _, trains, _ = counted
    paths = Paths(tmp_path / "fig", tmp_path / "res", None)
    alone = specs.LATENCY_PROTOCOL
    shared = dataclasses.replace(PRESET, resources=dataclasses.replace(PRESET.resources, gpus=0.25))
    # one task per device: the run's own timing, as ever (keys and records of the cpu and smoke profiles stay)
    _, (own,) = studies.benchmark(PRESET, SETTING, paths, methods=("uniform",), progress=False)
    assert own["latency_ms"] > 0 and "latency_protocol" not in own
    # four tasks per GPU: the run's record is the same run (same key: reused), its latency the alone pass's
    calls = trains.calls
    _, (rec,) = studies.benchmark(shared, SETTING, paths, methods=("uniform",), progress=False)
    assert trains.calls == calls and rec["key"] == own["key"]
    key = specs.latency_key(shared, "vgg11", "cifar10", tuple(rec["widths"]), False, specs.device_kind())
    kept = specs.read_latency(paths.results, key)
    assert rec["latency_protocol"] == alone == kept["protocol"] and rec["latency_ms"] == kept["latency_ms"] > 0
    assert studies.benchmark(shared, SETTING, paths, methods=("uniform",), progress=False)[1][0] == rec  # cached
    # the key holds the protocol, the latency settings and the device kind
    other = dataclasses.replace(shared, latency=LatencySettings(3, 0, 1))
    keys = {key, specs.latency_key(other, "vgg11", "cifar10", tuple(rec["widths"]), False, specs.device_kind()),
            specs.latency_key(shared, "vgg11", "cifar10", tuple(rec["widths"]), False, "cuda")}
    assert len(keys) == 3
