"""Budget metrics as registered objects: a new exact metric solves through the unchanged solver."""

import numpy as np
import pytest
from test_budget_metrics import law_for

from nslab.models import ARCHS, default_widths, macs, macs_counter, param_count, param_counter, uniform_widths
from nslab.scaling import pathscan
from nslab.scaling.methods import METHODS, Budget, Context
from nslab.scaling.metrics import LATENCY, MACS, METRICS, PARAMS, Metric, get_metric, register_metric
from nslab.scaling.powerlaw import published_fit
from nslab.scaling.solver import Scaled, counter, scale_widths, widths_for_budget
from nslab.views import explorer


def params_and_macs(arch, dataset, convcut=False, **_context):
    """A made-up exact count that grows with every width: parameters + 2 x MACs of one image."""
    p, m = param_counter(arch, dataset, convcut), macs_counter(arch, dataset, convcut)
    return lambda w: p(w) + 2 * m(w)


TOY = Metric("toy", "toy-units", params_and_macs, short="toys", description="params + 2 MACs")


def toy_count(arch, widths, dataset="cifar10"):
    return param_count(arch, widths, dataset) + 2 * macs(arch, widths, dataset)


@pytest.fixture
def toy():
    register_metric(TOY)
    try:
        yield TOY
    finally:
        METRICS.pop(TOY.name)


def test_the_registry_and_its_errors(toy):
    assert list(METRICS)[:3] == ["params", "macs", "latency"] and METRICS["toy"] is toy
    assert get_metric("macs") is MACS and get_metric(LATENCY) is LATENCY and get_metric(toy) is toy
    with pytest.raises(ValueError, match="unknown metric 'flops'; accepted: 'params', 'macs', 'latency', 'toy'"):
        get_metric("flops")
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric("toy", "other units", params_and_macs))
    with pytest.raises(ValueError, match="takes a Metric"):
        register_metric("toy")
    assert (PARAMS.unit, MACS.unit, LATENCY.unit) == ("parameters", "MACs", "ms")
    assert (toy.short, toy.label, toy.exact, toy.field) == ("toys", "toy", True, None)


def test_readouts_are_the_explorers():
    assert PARAMS.readout(9_231_114) == "9.23M params" and MACS.readout(51_100_000) == "51.1M MACs"
    assert LATENCY.readout(2.0) == "2 ms" and LATENCY.readout(12.345) == "12.3 ms"
    assert PARAMS.figure(9_231_114) == "9,231,114" and LATENCY.figure(0.24071) == "0.2407 ms"


@pytest.mark.parametrize("arch,dataset", [("vgg11", "cifar10"), ("resnet18", "cifar100"), ("mobilenetv2", "cifar10")])
def test_a_registered_toy_metric_solves_without_touching_the_solver(toy, arch, dataset):
    for seed in range(2):
        law = law_for(arch, dataset, seed)
        for r in (0.25, 0.5, 1.0, 1.5):
            budget = toy_count(arch, uniform_widths(arch, r), dataset)
            for metric in (toy, "toy"):  # the object itself, or its registered name
                s = widths_for_budget(law, arch, dataset, budget, metric=metric)
                assert s.metric == "toy" and s.target == budget and s.value == toy_count(arch, s.widths, dataset)
                assert s.achieved == s.value and s.rel_error == (s.value - budget) / budget
                assert s.params == param_count(arch, s.widths, dataset) and s.macs == macs(arch, s.widths, dataset)
                # the tolerance the solver meets for parameters and MACs (tests/test_budget_metrics.py)
                assert abs(s.rel_error) <= 1e-3, (seed, r, s)


def test_the_toy_metric_gets_the_path_scans_guarantee_where_it_is_not_monotone():
    # ResNet18's switchable projections make params + 2 MACs drop where a block's widths meet
    arch, dataset = "resnet18", "cifar100"
    law = law_for(arch, dataset, 0, (14, 16))
    centre = param_count(arch, None, dataset)
    log_tau = np.linspace(np.log(centre) - 0.15, np.log(centre) + 0.15, 100_001)
    w = np.maximum(1, np.rint(np.array(law.alpha)[:, None] * np.exp(np.outer(law.beta, log_tau)))).astype(int)
    w = w[:, np.r_[True, (np.diff(w, axis=1) != 0).any(axis=0)]]
    count = params_and_macs(arch, dataset)
    counts = np.array([count(col) for col in w.T.tolist()])
    assert (np.diff(counts) < 0).any()  # not monotone along the path
    t0 = toy_count(arch, None, dataset)
    for budget in np.linspace(0.98 * t0, 1.02 * t0, 9).astype(int):
        s = widths_for_budget(law, arch, dataset, int(budget), metric=TOY)  # unregistered: the object suffices
        assert abs(s.value - budget) <= np.abs(counts - budget).min(), budget


def test_out_of_range_budgets_name_the_metric_and_its_unit(toy):
    law = published_fit("vgg11-cifar10", 15)[0]
    smallest = toy_count("vgg11", [1] * 8)
    with pytest.raises(ValueError, match=rf"toy budget 10 is below the smallest .* range {smallest:,} \.\. "
                                         r"[\d.e+]+ toy-units for vgg11 cifar10"):
        widths_for_budget(law, "vgg11", "cifar10", 10, metric=toy)
    with pytest.raises(ValueError, match=r"toy budget 1e\+30 is beyond what this law can reach.* toy-units"):
        widths_for_budget(law, "vgg11", "cifar10", 1e30, metric="toy")
    with pytest.raises(ValueError, match=r"positive number of toy-units \(toy\)"):
        widths_for_budget(law, "vgg11", "cifar10", -1, metric=toy)
    with pytest.raises(ValueError, match="parameter budgets only"):
        widths_for_budget(law, "vgg11", "cifar10", 1e7, method="sgd", metric=toy)


def test_scale_widths_methods_and_explorer_take_the_toy_metric(toy):
    target = toy_count("vgg11", uniform_widths("vgg11", 0.5))
    s = scale_widths(default_widths("vgg11"), "vgg11", "cifar10", target, metric=toy)
    assert s.widths == uniform_widths("vgg11", 0.5) and s.rel_error == 0
    ctx = Context.published("vgg11-cifar10", (1, 15))
    b = ctx.budget(0.5, toy)
    assert b == Budget(target, 0.5, toy) and b.target == target and counter("vgg11", "cifar10", metric="toy")(
        uniform_widths("vgg11", 0.5)) == target
    for name in ("uniform", "morphnet", "neuralscale_it1", "neuralscale_last"):
        w = METHODS[name](ctx, Budget(target, None, "toy"))
        assert abs(toy_count("vgg11", w) - target) <= 1e-3 * target, name
    fit = explorer.published("vgg11-cifar10", 15)
    configs = explorer.configurations(fit, "cifar10", target, metric="toy")
    assert all(c.metric == "toy" and abs(c.rel_error) <= 1e-3 for c in configs.values())
    assert explorer.readout("vgg11", "cifar10", target, toy).startswith(f"{explorer.human(target)} toys, ")
    box = explorer.explorer_widget({fit.name: fit}, fit=fit.name)
    assert [v for _, v in box.children[2].options] == ["params", "macs", "latency", "toy"]  # the registry's


def test_budget_holds_the_target_not_params_and_scaled_reads_any_metric():
    b = Budget(1000, metric=MACS)
    assert b.target == 1000 and not hasattr(b, "params")
    with pytest.raises(ValueError, match="unknown metric"):
        Budget(1000, metric="flops")
    assert Scaled([1], 10, 11, 0.1, "macs", 12).achieved == 12
    assert Scaled([1], 10, 11, 0.1, "toy", 12, value=13).achieved == 13


def test_the_path_scan_takes_exact_metrics_only():
    assert pathscan.shortcuts("resnet18", "cifar10", False, MACS) is not None
    assert pathscan.shortcuts("vgg11", "cifar10", False, TOY) is None  # VGG11 has no switchable shortcut
    with pytest.raises(ValueError, match="needs an exact count; metric 'latency' is measured"):
        pathscan.shortcuts("resnet18", "cifar10", False, "latency")


@pytest.mark.parametrize("metric", [m for m in METRICS.values() if m.exact], ids=lambda m: m.name)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_exact_metric_solves_on_every_architecture(arch, metric):
    # over the registries, not hand lists: a network or metric registered later is covered by this test
    dataset = "cifar10"
    target = metric.counter(arch, dataset)(uniform_widths(arch, 0.5))
    s = widths_for_budget(law_for(arch, dataset, 0), arch, dataset, target, metric=metric)
    assert s.metric == metric.name and abs(s.rel_error) < 1e-3
    assert metric.counter(arch, dataset)(s.widths) == pytest.approx(target, rel=1e-3)
    assert isinstance(metric.readout(target), str) and metric.readout(target)
