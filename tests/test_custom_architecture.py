"""Adding a network is registering one Architecture: a toy CNN defined here goes through every stage of nslab.

The toy is declared in this file only (no change to nslab) and registered for the module's tests: its exact
counts are proved against the built model, then it is pruned (Algorithm 1) and searched (Algorithm 4), its
trajectory fitted (Algorithm 2), solved for parameter and MAC budgets (Algorithm 3), trained, timed by the
per-layer latency table (and solved for a latency budget), and priced by the planner's throughput probe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nslab
from nslab.config import PruneSettings, SearchSettings
from nslab.data import DatasetSpec, synthetic_data
from nslab.models import ARCHS, Architecture, Gate, Op, WidthGroup, register, unregister
from nslab.scaling.latency_table import LatencyTable, network_ops
from nslab.search.prune import prune, shrinkable_layers

NAME = "toycnn"
DEFAULTS = (12, 16, 24)  # three conv widths


class ToyCNN(nn.Module):
    """conv3x3 -> BN -> ReLU -> Gate (-> 2x2 max-pool after the first two); global average pool; Linear head."""

    def __init__(self, widths: Sequence[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), Gate(i)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def build(widths, num_classes, variant, convcut):
    return ToyCNN(widths, num_classes)


def params(widths, num_classes, variant, convcut):
    total, cin = 0, 3
    for w in widths:
        total += 9 * cin * w + w + 2 * w  # conv weight and bias, BN affine
        cin = w
    return total + cin * num_classes + num_classes


def macs(widths, num_classes, variant, convcut, image_size):
    total, cin, h = 0, 3, image_size
    for i, w in enumerate(widths):
        total += h * h * 9 * cin * w
        if i < len(widths) - 1:
            h //= 2
        cin = w
    return total + cin * num_classes


def ops(widths, spec: DatasetSpec, convcut):
    out, cin, h = [], 3, spec.image_size
    for i, w in enumerate(widths):
        out.append(Op("conv", h, cin, w, 3, bias=True, post="bn_relu", fixed_in=i == 0))
        if i < len(widths) - 1:
            out.append(Op("maxpool", h, w, w))
            h //= 2
        cin = w
    return [*out, Op("avgpool", h, cin, cin), Op("linear", 1, cin, spec.num_classes, fixed_out=True)]


TOY = Architecture(
    NAME,
    groups=tuple(WidthGroup(f"conv{i + 1}", w, f"conv {i + 1}'s outputs") for i, w in enumerate(DEFAULTS)),
    variants=("cifar",),
    has_shortcuts=False,
    build=build,
    params=params,
    macs=macs,
    shrinkable=frozenset(range(len(DEFAULTS))),  # a gate feeds only the next conv (or the head)
    ops=ops,
    description="a three-layer CNN declared by a test",
)


@pytest.fixture(scope="module", autouse=True)
def toy():
    register(TOY)
    yield TOY
    unregister(NAME)


@pytest.fixture(scope="module")
def data():
    return synthetic_data(train_per_class=16, test_per_class=4)


def test_registered_like_the_paper_networks(toy):
    assert NAME in ARCHS and nslab.default_widths(NAME) == list(DEFAULTS)
    assert nslab.uniform_widths(NAME, 0.5) == [6, 8, 12]
    assert shrinkable_layers(NAME) == {0, 1, 2}
    with pytest.raises(ValueError, match="no variant"):
        nslab.create_model(NAME, None, "tinyimagenet")
    with pytest.raises(ValueError, match="expected 3 widths"):
        nslab.param_count(NAME, [4, 4])


@pytest.mark.parametrize("widths", [None, [1, 1, 1], [5, 9, 2], [30, 7, 19]])
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_exact_params_and_macs(widths, dataset):
    model = nslab.create_model(NAME, widths, dataset).eval()
    assert nslab.param_count(NAME, widths, dataset) == sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    assert nslab.macs(NAME, widths, dataset) == counter.get_total_flops() // 2


def test_prune_fit_and_solve(data):
    s = PruneSettings(channels_per_step=2, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05,
                      stop_fraction=0.3)
    res = prune(NAME, data, s, widths=[16, 24, 32], seed=0, progress=False)
    w, p = res.widths, res.params
    assert len(w) >= 6 and w.shape[1] == 3 and (np.diff(p) < 0).all()
    assert p.tolist() == [nslab.param_count(NAME, row) for row in w.tolist()]
    # every entry shrinks: the returned network is physically the final widths
    assert sum(q.numel() for q in res.model.parameters()) == nslab.param_count(NAME, res.final_widths)

    law = nslab.fit_power_law(w, NAME, "cifar10")
    assert len(law.alpha) == 3
    budget = nslab.param_count(NAME, [10, 14, 20])
    by_params = nslab.widths_for_budget(law, NAME, "cifar10", budget, metric="params")
    assert by_params.params == nslab.param_count(NAME, by_params.widths) and abs(by_params.rel_error) < 0.05
    target = nslab.macs(NAME, [10, 14, 20])
    by_macs = nslab.widths_for_budget(law, NAME, "cifar10", target, metric="macs")
    assert by_macs.macs == nslab.macs(NAME, by_macs.widths) and abs(by_macs.rel_error) < 0.05


def test_architecture_descent(tmp_path, data):
    search = SearchSettings(
        PruneSettings(channels_per_step=2, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05,
                      stop_fraction=0.3),
        iterations=2, synthetic=True, start_ratio=1.0,
    )
    run = nslab.architecture_descent(NAME, "cifar10", data, search, tmp_path / "run", progress=False)
    assert [it.index for it in run.iterations] == [1, 2]
    budget = nslab.param_count(NAME, list(DEFAULTS))
    second = run.iterations[1]
    assert len(second.start) == 3 and second.law.alpha
    assert abs(nslab.param_count(NAME, list(second.start)) - budget) / budget < 0.05  # same budget, new shape


def test_train_one_epoch(data):
    from nslab.runs.train import recipe, seed_everything, train

    seed_everything(0)
    model = nslab.create_model(NAME, [8, 8, 8], data.spec)
    h = train(model, data, dataclasses.replace(recipe("smoke", "synthetic"), epochs=1, batch_size=32),
              device="cpu", progress=False)
    assert len(h) == 1 and np.isfinite(h.records[0].train_loss)


def bilinear_ms(op: Op) -> float:
    """A made-up device: every op costs a bilinear function of its widths (so interpolation is exact)."""
    one_width = op.depthwise or op.kind not in ("conv", "linear")  # pools: linear in their one width
    return 0.01 + 1e-4 * op.cin + 2e-4 * op.cout + 1e-6 * op.h * op.h * (op.cin if one_width else op.cin * op.cout)


def test_latency_table(tmp_path):
    table = LatencyTable(cache_dir=tmp_path, timer=bilinear_ms, progress=False)
    widths = [20, 37, 70]  # off the 8-per-octave grid
    exact = sum(bilinear_ms(op) for op in network_ops(NAME, widths))
    assert table.predict(NAME, widths) == pytest.approx(exact, rel=1e-12)
    law = nslab.fit_power_law(np.array([[24 - r, 32 - r, 40 - r] for r in range(8)]), NAME, "cifar10")
    budget = table.predict(NAME, [12, 16, 24])
    s = nslab.widths_for_budget(law, NAME, "cifar10", budget, metric="latency", latency=table)
    assert s.latency_ms == table.predict(NAME, s.widths) and abs(s.rel_error) < 0.05
    # measured for real (a few tiny layers, then one end-to-end timing for the calibration)
    real = LatencyTable(cache_dir=tmp_path, warmup=0, repeat=2, min_ms=1, progress=False)
    ms = real.predict(NAME, [4, 4, 4])
    assert 0 < ms < 1000 and real.measured > 0 and real.calibration(NAME) > 0


def test_planner_throughput_probe():
    from nslab.runs.plan import probe_throughput

    configs = [(nslab.macs(NAME, w), tuple(w), "cifar10", False, 16) for w in ([4, 4, 4], [8, 12, 16], [16, 24, 32])]
    fit = probe_throughput({NAME: configs}, "cpu", seconds_per_point=0.02)[NAME]
    assert fit["a"] >= 0 and fit["b"] >= 0 and len(fit["points"]) == 3
    assert all(s > 0 for _, s in fit["points"])
