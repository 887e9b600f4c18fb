"""The notebooks' conclusion cells: sentences whose numbers come from the results they are given."""

import dataclasses

import pytest
from conftest import write_authors_run

from nslab.config import preset
from nslab.search.descent import load_run
from nslab.views import conclusions, explorer, scope, tables


def _row(method, ratio, accs, iteration=None):
    recs = [{"method": method, "ratio": ratio, "acc": a, "params": 1000, "seed": s, "iteration": iteration}
            for s, a in enumerate(accs)]
    return tables.summarize(recs)[0]


def test_difference_and_its_spread_come_from_the_seeds():
    summary = [_row("uniform", 0.25, [80.0, 82.0]), _row("neuralscale_last", 0.25, [83.0, 84.0], iteration=2)]
    d = conclusions.difference(summary, "neuralscale_last", "uniform", 0.25)
    assert d["diff"] == pytest.approx(2.5) and d["spread"] == pytest.approx((1.0 ** 2 + 0.5 ** 2) ** 0.5)
    assert conclusions.difference(summary, "morphnet", "uniform", 0.25) is None
    text = conclusions.benchmark([(type("S", (), {"arch": "vgg11", "dataset": "cifar10", "ratios": (0.25,)}),
                                   [], summary)])
    assert ("NeuralScale (Iteration = 2) − Uniform Scale (Baseline): +2.50 ± 1.12 points over 2 seed(s) at "
            "r = 0.25") in text
    assert text._repr_markdown_().startswith("- vgg11 cifar10")


def test_one_seed_says_there_is_no_spread():
    summary = [_row("uniform", 0.25, [80.0]), _row("morphnet", 0.25, [79.0])]
    text = conclusions.convcut(summary, "resnet18", "cifar10")
    assert "−1.00 points" not in text and "-1.00 points over 1 seed(s)" in text and "no spread" in text


def test_a_study_scale_setting_says_it_exercises_the_code_path_before_what_it_measured():
    cpu = preset("cpu")
    summary = [dict(_row("uniform", 0.25, [40.9]), arch="resnet18"), _row("neuralscale_it1", 0.25, [38.9])]
    text = conclusions.benchmark([(cpu.benchmark[1], [], summary)], p=cpu)  # Table 2's resnet18 row
    first, second = text.splitlines()
    assert first.startswith(f"- resnet18 cifar10: {scope.MARKER} (4 epochs on 5,000 training images, 1 seed: ")
    assert cpu.benchmark[1].exercise in first and "neither confirms nor refutes the paper's finding" in first
    assert "-2.00 points over 1 seed(s) at r = 0.25 (38.90% vs 40.90%)" in second and "no spread" in second
    # Table 1's setting tests the paper's finding; without the preset nothing is said either
    assert scope.MARKER not in conclusions.benchmark([(cpu.benchmark[0], [], summary)], p=cpu)
    assert scope.MARKER not in conclusions.benchmark([(cpu.benchmark[1], [], summary)])
    rows = [dict(_row("neuralscale_last", 0.25, [52.5]), pretrain_epochs=1), _row("uniform", 0.25, [53.2])]
    for conclude, s in ((conclusions.pretraining, cpu.pretrain[0]), (conclusions.convcut, cpu.convcut[1])):
        text = conclude(rows, s.arch, s.dataset, exercise=scope.exercise(cpu, [s]))
        assert text.startswith(f"- {s.arch} {s.dataset}: {scope.MARKER}") and "53.20%" in text
        assert scope.MARKER not in conclude(rows, s.arch, s.dataset)
    assert conclusions.convcut([], "x", "y", exercise="e").splitlines() == [
        "- x y: e. What these runs measured is reported below; at this scale it neither confirms nor refutes the "
        "paper's finding.", "- No runs to compare."]


def test_pretraining_names_the_best_and_worst_epochs():
    rows = [dict(_row("neuralscale_last", 0.25, [a]), pretrain_epochs=pe)
            for pe, a in ((0, 70.0), (2, 75.0), (5, 74.0))]
    text = conclusions.pretraining(rows + [_row("uniform", 0.25, [72.0])], "vgg11", "cifar10")
    assert ("P_e = 2 is best at 75.00%, P_e = 0 worst at 70.00% (spread 5.00 points over 3 values; "
            "uniform 72.00%)") in text


def test_budget_conclusion_reads_the_ratio_table():
    fit = explorer.published("vgg11-cifar10", 15)
    rows, _ = explorer.ratio_table(fit, "cifar10", [0.25, 2.0])
    text = conclusions.budget(rows, "vgg11", "cifar10", 0.25)
    ns = next(r for r in rows if r["method"] == "neuralscale" and r["ratio"] == 0.25)
    assert f"{ns['target_params']:,} parameters" in text and str(ns["widths"]) in text
    assert "multiply-accumulates" in text
    assert "No configuration" in conclusions.budget(rows, "vgg11", "cifar10", 0.5)


def test_pruning_and_descent_conclusions_from_a_run(tmp_path, ref_dir):
    run = load_run(write_authors_run(tmp_path, ref_dir, "vgg11_cifar10_authors", pretrain_accuracy=80.5))
    it = run.iterations[0]
    text = conclusions.pruning(it)
    assert f"recorded {len(it.params)} rows" in text and "80.5%" in text
    text = conclusions.descent(run, [])
    assert "1 descent iteration(s) of vgg11 on cifar10" in text and str(it.generated.widths) in text
    agree = [{"iteration": 1, "reference_iteration": 1, "ratio": 0.25, "spearman": 0.9, "mean_abs_log2": 0.2}]
    assert "Goal at iteration 1" in conclusions.descent(run, agree) and "met." in conclusions.descent(run, agree)
    # a longer descent: how much it still moves, and how far it came towards the authors' final shape
    more = dataclasses.replace(run, iterations=(it, dataclasses.replace(it, index=2, change=0.057),
                                                dataclasses.replace(it, index=3, change=0.029)))
    agree = [{"iteration": k, "reference_iteration": 15, "ratio": 0.25, "spearman": rho, "mean_abs_log2": d}
             for k, rho, d in ((1, 0.38, 0.71), (3, 0.74, 0.35))]
    text = conclusions.descent(more, agree)
    assert "Over the last 2 iteration(s) it stayed between 2.9% and 5.7%" in text
    assert "Spearman ρ went from 0.38 (iteration 1) to 0.74 (iteration 3)" in text and "from 0.71 to 0.35" in text


def test_equal_compute_gives_a_verdict_from_the_spread():
    uni = dict(_row("uniform", 0.25, [80.0, 81.0]), budget="macs", macs=10e6, params=580_000)
    win = dict(_row("neuralscale_last", 0.25, [83.0, 84.0]), budget="macs", macs=10e6, params=200_000)
    text = conclusions.equal_compute([uni, win])
    assert "At uniform's MACs (r = 0.25)" in text and "0.34× its parameters" in text
    assert "NeuralScale still wins (+3.00 points ± 0.71)" in text
    tie = dict(win, acc_mean=80.8)
    assert "neither wins nor loses" in conclusions.equal_compute([uni, tie])
