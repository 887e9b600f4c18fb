"""Honest tables: no run at chance, MACs and training time in every row, the paper's numbers only beside the
same setting, latency relative to uniform, the last iteration named by its number, captions that say what ran."""

import dataclasses
from types import SimpleNamespace

import pytest

from nslab.config import Setting, preset, resolve
from nslab.models import macs, uniform_widths
from nslab.paths import Paths
from nslab.runs import studies
from nslab.runs.specs import settings_for
from nslab.views import scope, tables


def record(method="uniform", arch="vgg11", dataset="cifar10", ratio=0.25, seed=0, acc=80.0, **kw):
    return {"method": method, "arch": arch, "dataset": dataset, "ratio": ratio, "seed": seed, "acc": acc,
            "params": 579_000, "widths": uniform_widths(arch, ratio), "convcut": False, "latency_ms": 2.0,
            "train_seconds": 120.0, "device": "cpu", **kw}


# --- chance -----------------------------------------------------------------------------------------------


def test_a_run_within_the_margin_of_chance_stops_with_what_to_change():
    ok = [record(acc=13.01), record(dataset="cifar100", acc=4.5, seed=3)]  # chance 10% / 1%
    tables.check_chance(ok, 3.0)
    with pytest.raises(ValueError) as e:
        tables.check_chance(ok + [record(method="morphnet", seed=1, acc=13.0)], 3.0)
    msg = str(e.value)
    assert "vgg11 cifar10" in msg and "morphnet" in msg and "seed 1" in msg and "13.00%" in msg
    assert "chance 10.00% with 10 classes" in msg
    assert "epochs" in msg and "train_subset" in msg and "chance_margin=None" in msg  # what to change
    assert "seed 3" not in msg and "1 trained run(s)" in msg  # only the run at chance is named
    with pytest.raises(ValueError, match="within 3 points"):
        tables.check_chance([record(acc=8.0)], 3.0)  # below chance counts too
    tables.check_chance([record(acc=8.0)], None)  # the check switched off


def test_presets_set_the_chance_margin_and_what_they_leave_out():
    assert preset("smoke").chance_margin is None
    assert preset("cpu").chance_margin == preset("paper").chance_margin == 3.0
    cpu = preset("cpu")
    assert "li" not in cpu.methods and dict(cpu.excluded)["li"].startswith("Li et al. train the full-width")
    assert "li" in preset("smoke").methods and "li" in preset("paper").methods and not preset("paper").excluded


def test_train_runs_checks_cached_records_too(monkeypatch, tmp_path):
    monkeypatch.setattr(studies, "load_data", lambda p, s, paths: SimpleNamespace(spec=None))
    monkeypatch.setattr(studies.ResultsStore, "ensure", lambda self, specs, compute, **kw: [record(acc=10.5)])
    s = preset("cpu").benchmark[0]
    paths = Paths(tmp_path / "f", tmp_path / "r", None)
    with pytest.raises(ValueError, match="seed 0: best test accuracy 10.50%"):
        studies.train_runs(preset("cpu"), s, [], paths, progress=False)
    assert studies.train_runs(preset("smoke"), s, [], paths, progress=False)[0]["acc"] == 10.5


# --- summaries and comparison rows ------------------------------------------------------------------------


def test_summarize_carries_the_setting_macs_and_training_time():
    w = uniform_widths("vgg11", 0.25)
    recs = [record(seed=0, train_seconds=60.0), record(seed=1, train_seconds=180.0, macs=1_000_000),
            record(method="neuralscale_last", iteration=2)]
    s = tables.summarize(recs)
    assert (s[0]["arch"], s[0]["dataset"]) == ("vgg11", "cifar10") and "iteration" not in s[0]
    assert s[0]["macs"] == pytest.approx((macs("vgg11", w, "cifar10") + 1_000_000) / 2)  # computed | stored
    assert s[0]["train_seconds"] == pytest.approx(120.0)
    assert s[1]["iteration"] == 2
    r18 = uniform_widths("resnet18", 0.25)
    conv = tables.summarize([record(method="uniform_convcut", arch="resnet18", convcut=True, trained_widths=r18)])
    assert conv[0]["macs"] == macs("resnet18", r18, "cifar10", True) != macs("resnet18", r18, "cifar10")
    row = tables.comparison_table(s)[0]
    assert row["macs_m"] == round(s[0]["macs"] / 1e6, 3) and row["train_min"] == 2.0
    assert {"macs_m", "train_min"} <= set(tables.TABLE_COLUMNS)
    cols = tables.TABLE_COLUMNS
    assert cols.index("macs_m") == cols.index("paper_params_m") + 1
    assert cols.index("train_min") > cols.index("accuracy")


def test_the_paper_stands_only_beside_its_own_setting():
    paper = tables.paper_results(table=2, arch="resnet18", dataset="cifar100")
    tiny = tables.summarize([record(arch="resnet18", dataset="cifar10", params=40_000, acc=40.0)])
    row = tables.comparison_table(tiny, paper)[0]
    assert row["paper_params_m"] is None and row["paper_latency_ms"] is None and row["paper_accuracy"] == ""
    assert row["paper_latency_x"] is None
    assert row["paper_setting"] == "resnet18 cifar100, 0.71M params, 68.10 ± 0.40%"
    # the same arch and dataset, but not the paper's parameter count (> 5% off): not compared either
    small = tables.summarize([record(arch="resnet18", dataset="cifar100", params=640_000)])
    assert tables.comparison_table(small, paper)[0]["paper_accuracy"] == ""
    near = tables.summarize([record(arch="resnet18", dataset="cifar100", params=690_000)])
    assert tables.comparison_table(near, paper, epochs=300)[0]["paper_accuracy"] == "68.10 ± 0.40"
    # the arch and dataset passed in win over the rows'
    assert tables.comparison_table(near, paper, dataset="cifar10", epochs=300)[0]["paper_accuracy"] == ""


def test_the_papers_accuracy_stands_only_beside_a_run_as_long_as_the_papers():
    paper = tables.paper_results(table=1, arch="vgg11", dataset="cifar10")
    summary = tables.summarize([record(params=579_000, acc=52.5)])  # the paper's setting and parameter count
    full = tables.comparison_table(summary, paper, epochs=300)[0]
    assert full["paper_accuracy"] == "88.18 ± 0.16" and full["accuracy"] == "52.50"
    for epochs in (4, 8, None):  # shorter than the paper's 300, or not known
        row = tables.comparison_table(summary, paper, epochs=epochs)[0]
        assert row["paper_accuracy"] == "" and row["accuracy"] == "52.50"
        assert row["paper_setting"] == "vgg11 cifar10, 0.58M params, 88.18 ± 0.16%"  # still named, with its accuracy
        assert row["paper_params_m"] == 0.58 and row["paper_latency_ms"] == full["paper_latency_ms"] == 1.29
    assert (scope.paper_epochs("cifar10"), scope.paper_epochs("cifar100"), scope.paper_epochs("tinyimagenet")) == (
        300, 300, 150)
    # Table 1 through paper_table: the cpu profile trains it for 8 epochs, the paper profile for the paper's 300
    done = [(preset("cpu").benchmark[0], [], summary)]
    assert scope.run_epochs(preset("cpu"), done[0][0]) == 8
    assert [r["paper_accuracy"] for r in tables.paper_table(done, 1, p=preset("cpu"))] == [""]
    assert [r["paper_accuracy"] for r in tables.paper_table(done, 1, p=preset("paper"))] == ["88.18 ± 0.16"]
    assert tables.paper_table(done, 1)[0]["paper_accuracy"] == ""  # no preset: the runs' length is not known


def test_paper_table_pairs_no_run_with_another_datasets_row():
    s = preset("cpu").benchmark[1]  # resnet18 on cifar10 standing in for the paper's cifar100
    summary = tables.summarize([record(arch=s.arch, dataset=s.dataset, params=710_000)])
    rows = tables.paper_table([(s, [], summary)], 2)
    assert rows[0]["setting"] == "resnet18 cifar10" and rows[0]["paper_accuracy"] == ""
    assert rows[0]["paper_setting"].startswith("resnet18 cifar100, 0.71M params")


def test_latency_relative_to_uniform_on_the_same_machine_and_in_the_paper():
    recs = [record(latency_ms=2.0), record(method="neuralscale_last", latency_ms=5.0, iteration=15),
            record(method="uniform", ratio=0.75, params=5_200_000, latency_ms=8.0)]
    rows = tables.comparison_table(tables.summarize(recs),
                                   tables.paper_results(table=1, arch="vgg11", dataset="cifar10"))
    assert [r["latency_x"] for r in rows] == [1.0, 2.5, 1.0]
    assert rows[1]["paper_latency_x"] == pytest.approx(round(2.94 / 1.29, 3))  # the paper's own uniform
    other = tables.latency_ratios([{"method": "uniform", "ratio": 0.25, "latency_ms": 2.0, "device": "cpu"},
                                   {"method": "morphnet", "ratio": 0.25, "latency_ms": 3.0, "device": "cuda"}])
    assert other[1]["latency_x"] is None  # another machine's uniform is no baseline


def test_the_last_iteration_is_named_by_its_number():
    assert tables.label("neuralscale_last", 1) == "NeuralScale (Iteration = 1)"
    s = tables.summarize([record(method="neuralscale_last", iteration=3)])
    assert tables.comparison_table(s)[0]["label"] == "NeuralScale (Iteration = 3)"
    assert tables.series_labels(s)["neuralscale_last"] == "NeuralScale (Iteration = 3)"


def test_caption_says_what_ran_and_what_was_left_out():
    cpu = preset("cpu")
    s = cpu.benchmark[0]
    epochs, images = cpu.recipe_for(s, "cifar").epochs, cpu.recipe_for(s, "cifar").subset
    cap = tables.caption(cpu, "Table 1: x", [s], table=1)
    n = f"{images:,}" if images else "all"
    assert cap.startswith(f"Table 1: x (cpu profile: vgg11 cifar10, {epochs} epochs on {n} training images)")
    assert "Left out: Li et al. (L1 pruning, fine-tuned): Li et al. train the full-width network" in cap
    assert "Left out" not in tables.caption(cpu, "Table 5: x", cpu.convcut[:1], table=5)  # no Li in Table 5
    assert f"Accuracies after {epochs} epochs, not the paper's 300: compare the order" in cap
    assert "the paper's accuracies are in paper_setting only" in cap and scope.MARKER not in cap
    assert "not the paper's" not in tables.caption(preset("paper"), "t", preset("paper").benchmark[:1])
    smoke = preset("smoke")
    assert "synthetic training images" in tables.caption(smoke, "t", smoke.benchmark[:1])
    assert "(paper: cifar100)" in tables.caption(smoke, "t", smoke.benchmark[1:])


def test_study_scale_captions_and_titles_say_they_exercise_the_code_path():
    cpu = preset("cpu")
    study = [cpu.benchmark[1], *cpu.pretrain, *cpu.convcut]  # Table 2's resnet18 row, Tables 3-6
    assert all(s.exercise and "epochs, images and seeds" in s.exercise for s in study)
    assert cpu.benchmark[0].exercise is None and cpu.descent.exercise is None  # Table 1 tests the paper's finding
    for s in study:
        r = settings_for(cpu, s).recipe
        why = f"{scope.MARKER} ({r.epochs} epochs on {r.subset:,} training images, 1 seed: {s.exercise})"
        assert r.epochs < 300 and len(s.seeds) == 1 and not s.extra_seeds
        cap = tables.caption(cpu, f"Table {s.table}: x", [s], table=s.table)
        assert cap.startswith(f"Table {s.table}: x: {why} (cpu profile: {s.arch} {s.dataset}")
        assert "the paper's accuracies are in paper_setting only" in cap and "compare the order" not in cap
        assert scope.figure_title(cpu, "Figure 6: y", [s]) == f"Figure 6: y: {why}"
    assert scope.figure_title(cpu, "Figure 4: y", cpu.benchmark[:1]) == "Figure 4: y"
    smoke = preset("smoke")  # synthetic: every setting exercises the code path
    assert f"{scope.MARKER} (1 epoch on 64 synthetic training images, 1-2 seeds: {scope.SYNTHETIC})" in (
        tables.caption(smoke, "Table 1: x", smoke.benchmark[:1], table=1))
    assert scope.exercise(preset("paper"), preset("paper").benchmark) == ""


def test_the_exercise_reason_is_no_part_of_any_key():
    s = preset("cpu").pretrain[0]
    bare = dataclasses.replace(s, exercise=None)
    assert "exercise" not in resolve(bare) and resolve(s)["exercise"] == s.exercise  # omit_default
    assert settings_for(preset("cpu"), s) == settings_for(preset("cpu"), bare)
    assert "exercise" not in resolve(Setting("vgg11", "cifar10", "cifar10", (0.25,)))


# --- the grid: one network is not run twice ---------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 2])
def test_last_iteration_runs_beside_iteration_1_only_after_more_than_one(monkeypatch, tmp_path, iterations):
    seen = []
    run = SimpleNamespace(iterations=(None,) * iterations)
    monkeypatch.setattr(studies, "load_data", lambda p, s, paths: None)
    monkeypatch.setattr(studies, "run_specs", lambda p, s, run, methods, *a: seen.append(tuple(methods)) or [])
    monkeypatch.setattr(studies, "train_runs", lambda *a, **k: [])
    monkeypatch.setattr(studies, "search", lambda *a, **k: run)
    p = dataclasses.replace(preset("smoke"), study_iterations=iterations)
    paths = Paths(tmp_path / "f", tmp_path / "r", None)
    studies.benchmark(p, p.benchmark[0], paths, progress=False)
    studies.convcut_study(p, p.convcut[0], paths, progress=False)
    studies.benchmark(p, p.benchmark[0], paths, methods=("neuralscale_last",), run=run, progress=False)
    last = [("neuralscale_last" in m) for m in seen]
    assert last == ([False, False, True] if iterations == 1 else [True, True, True])
    assert all("neuralscale_it1" in m for m in seen[:2])
