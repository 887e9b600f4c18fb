"""The shape metric: rank correlation and mean |log2| ratio against the authors' configurations."""

import math

import numpy as np
import pytest
from conftest import write_authors_run

from nslab.models import param_count, uniform_widths
from nslab.scaling import powerlaw, solver
from nslab.search.descent import load_run
from nslab.views import shape


def test_spearman_known_values():
    assert shape.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert shape.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert shape.spearman([3, 1, 2], [30, 5, 7]) == pytest.approx(1.0)  # monotone, not linear
    # ties by hand: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4); deviations (-1.5, 0, 0, 1.5) and
    # (-1.5, -0.5, 0.5, 1.5): covariance 4.5, sums of squares 4.5 and 5 -> 4.5 / sqrt(22.5) = sqrt(0.9)
    assert shape.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)); d = (0, -1, 1, 0, 0) -> 1 - 12 / 120
    assert shape.spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    assert math.isnan(shape.spearman([2, 2, 2], [1, 2, 3]))
    with pytest.raises(ValueError):
        shape.spearman([1, 2], [1, 2, 3])


def test_mean_abs_log2():
    assert shape.mean_abs_log2([2, 4], [1, 8]) == pytest.approx(1.0)
    assert shape.mean_abs_log2([5, 7, 9], [5, 7, 9]) == 0.0
    assert shape.mean_abs_log2([4, 1], [1, 1]) == pytest.approx(1.0)  # |log2 4| = 2 and 0
    with pytest.raises(ValueError):
        shape.mean_abs_log2([0, 1], [1, 1])


def test_meets_goal():
    assert shape.meets_goal({"spearman": 0.6, "mean_abs_log2": 0.5})
    assert not shape.meets_goal({"spearman": 0.59, "mean_abs_log2": 0.1})
    assert not shape.meets_goal({"spearman": 0.9, "mean_abs_log2": 0.51})
    assert not shape.meets_goal({"spearman": float("nan"), "mean_abs_log2": 0.1})


def _authors_run(root, ref_dir):
    return load_run(write_authors_run(root, ref_dir, "vgg11_cifar10_authors", pretrain_accuracy=80.5, seconds=12.0))


def test_agreement_of_the_authors_own_trajectory_is_close_to_one(tmp_path, ref_dir):
    run = _authors_run(tmp_path, ref_dir)
    rows = shape.agreement(run)
    assert len(rows) == 1
    row = rows[0]
    budget = param_count("vgg11", uniform_widths("vgg11", 0.25))  # the default network's, not start-scaled
    assert row["target_params"] == budget == 579_786
    assert abs(row["params"] - budget) / budget < 0.01 and abs(row["reference_params"] - budget) / budget < 0.01
    ref = solver.widths_for_budget(powerlaw.published_fit("vgg11-cifar10", 1)[0], "vgg11", "cifar10", budget)
    assert row["reference_widths"] == ref.widths and row["reference"] == "vgg11-cifar10"
    assert row["spearman"] >= 0.9 and row["mean_abs_log2"] < 0.2
    assert shape.meets_goal(row) and row["pretrain_accuracy"] == 80.5
    # the authors' iteration 15 has the same shape (rho 0.93, mean |log2| 0.15)
    last = shape.agreement(run, reference_iteration=15)[0]
    assert last["reference_iteration"] == 15 and last["spearman"] >= 0.9 and last["mean_abs_log2"] < 0.2
    assert last["reference_widths"] != row["reference_widths"] and last["widths"] == row["widths"]
    # a start ratio scales the budget as Context.budget does
    small = shape.agreement(run, start_ratio=0.5)[0]
    assert small["target_params"] == param_count("vgg11", uniform_widths("vgg11", 0.125))
    with pytest.raises(ValueError):
        shape.agreement(run, reference_name="resnet18-cifar10")


def test_published_configurations():
    budgets = {"r = 0.25": 579_786, "r = 2": 3.6e7}
    ref = shape.published_configurations("vgg11", "cifar10", budgets)
    assert list(ref) == list(budgets)
    assert list(ref["r = 0.25"]) == ["authors' iteration 1", "authors' iteration 15"]
    law = powerlaw.published_fit("vgg11-cifar10", 15)[0]
    assert ref["r = 2"]["authors' iteration 15"] == solver.widths_for_budget(law, "vgg11", "cifar10", 3.6e7).widths
    assert np.sum(ref["r = 2"]["authors' iteration 1"]) > np.sum(ref["r = 0.25"]["authors' iteration 1"])
    assert shape.published_configurations("resnet18", "cifar10", budgets) is None
    assert shape.published_name("vgg11", "cifar100") == "vgg11-cifar100"
