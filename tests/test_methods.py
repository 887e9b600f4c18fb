"""The method registry: every scaling method once, meeting the same budgets."""

import dataclasses

import numpy as np
import pytest

from nslab.models import default_widths, param_count, uniform_widths
from nslab.scaling.methods import METHODS, Budget, Context, get_method, keep_ratio_for_budget, morphnet_base


@pytest.fixture(scope="module")
def authors():
    return Context.published("vgg11-cifar10")


def test_registry_names_and_errors():
    assert set(METHODS) == {"uniform", "li", "morphnet", "uniform_convcut", "neuralscale_it1", "neuralscale_last"}
    with pytest.raises(ValueError, match="unknown method 'magic'; accepted: uniform, li, morphnet"):
        get_method("magic")
    for name in ("neuralscale_last", "morphnet"):
        with pytest.raises(ValueError, match="needs an architecture-descent run"):
            get_method(name)(Context("vgg11", "cifar10"), Budget(10**6))


@pytest.mark.parametrize("ratio", [0.25, 0.75, 2.0])
def test_every_method_meets_the_papers_budget(authors, ratio):
    b = authors.budget(ratio)
    assert b.target == param_count("vgg11", uniform_widths("vgg11", ratio))
    for name, m in METHODS.items():
        if m.convcut or (m.trains == "li" and ratio > 1):
            continue  # VGG11 has no shortcuts; Li et al. prune, they cannot grow the network
        w = m(authors, b)
        p = param_count("vgg11", w, "cifar10", m.convcut)
        tol = 0 if name == "uniform" else 0.03  # uniform *is* the budget
        assert abs(p - b.target) <= tol * b.target, (name, w, p, b.target)
    assert get_method("uniform")(authors, b) == uniform_widths("vgg11", ratio)
    # NeuralScale iteration 1 / last solve the first / last law
    assert get_method("neuralscale_it1")(authors, b) != get_method("neuralscale_last")(authors, b)


def test_uniform_without_a_ratio_scales_the_start_network(authors):
    w = get_method("uniform")(authors, Budget(1_000_000))
    ratios = np.asarray(w) / np.asarray(default_widths("vgg11"))
    assert ratios.max() - ratios.min() < 0.05  # one global factor, up to rounding


def test_morphnet_keeps_half_of_the_start_network_not_of_the_default(authors):
    # from the law (published fits have no trajectory)
    assert sum(morphnet_base(authors)) == pytest.approx(0.5 * sum(default_widths("vgg11")), rel=0.01)
    small = dataclasses.replace(authors, start_ratio=0.5)
    assert sum(morphnet_base(small)) == pytest.approx(0.5 * sum(small.start), rel=0.01)
    # the network the search kept at the half point, when there is one: taken as it is
    kept = tuple(max(1, w // 2) for w in uniform_widths("vgg11", 0.125))
    ctx = Context("vgg11", "cifar10", start_ratio=0.125, laws=authors.laws, morphnet_widths=kept)
    assert morphnet_base(ctx) == list(kept)
    assert morphnet_base(dataclasses.replace(ctx, morphnet_widths=None)) == list(
        morphnet_base(dataclasses.replace(authors, start_ratio=0.125)))
    with pytest.raises(ValueError, match="morphnet_keep must be in"):
        morphnet_base(dataclasses.replace(ctx, morphnet_keep=0))


def test_li_keeps_one_ratio_of_every_layer():
    budget = Context("vgg11", "cifar10").budget(0.75).target
    q, widths, params = keep_ratio_for_budget("vgg11", budget)
    assert params == param_count("vgg11", widths) and abs(params - budget) / budget < 0.005
    assert widths == [max(1, round(q * w)) for w in default_widths("vgg11")]
    assert get_method("li")(Context("vgg11", "cifar10"), Budget(budget)) == widths
    with pytest.raises(ValueError, match="budget must lie between"):
        keep_ratio_for_budget("vgg11", 10 * budget)


def test_budgets_follow_the_scale_not_the_start_when_asked():
    narrow = Context("vgg11", "cifar10", start_ratio=0.25)  # budgets follow the narrower search ...
    assert narrow.budget(1.0).target == param_count("vgg11", uniform_widths("vgg11", 0.25))
    paper = dataclasses.replace(narrow, scale=1.0)  # ... unless the grid keeps the paper's budgets
    assert paper.budget(0.25).target == 579_786 and paper.start == uniform_widths("vgg11", 0.25)
    assert get_method("uniform")(paper, paper.budget(0.25)) == uniform_widths("vgg11", 0.25)


@pytest.mark.parametrize("ratio", [0.25, 1.0, 2.0])
def test_every_method_meets_a_macs_budget(authors, ratio):
    from nslab.models import macs

    b = authors.budget(ratio, "macs")
    assert b == Budget(macs("vgg11", uniform_widths("vgg11", ratio)), ratio, "macs")
    assert authors.budget(ratio) == Budget(param_count("vgg11", uniform_widths("vgg11", ratio)), ratio)
    for name, m in METHODS.items():
        if m.convcut or m.trains == "li":
            continue
        w = m(authors, b)
        tol = 0 if name == "uniform" else 1e-3
        assert abs(macs("vgg11", w) - b.target) <= tol * b.target, (name, w)
    assert get_method("uniform")(authors, b) == uniform_widths("vgg11", ratio)
    # NeuralScale spends the same MACs on far fewer parameters than for the same parameter count
    ns = get_method("neuralscale_last")
    assert param_count("vgg11", ns(authors, b)) < param_count("vgg11", ns(authors, authors.budget(ratio)))
    with pytest.raises(ValueError, match="parameter budgets only"):
        get_method("li")(authors, b)


def test_free_macs_budget_and_bad_metric(authors):
    from nslab.models import macs

    w = get_method("uniform")(authors, Budget(20_000_000, metric="macs"))
    assert abs(macs("vgg11", w) - 2e7) <= 2e4
    ratios = np.asarray(w) / np.asarray(default_widths("vgg11"))
    assert ratios.max() - ratios.min() < 0.05
    with pytest.raises(ValueError, match="unknown metric 'flops'; accepted"):
        Budget(10**6, metric="flops")
    with pytest.raises(ValueError, match="unknown metric"):
        authors.budget(0.5, "FLOPs")
