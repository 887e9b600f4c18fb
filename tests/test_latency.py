"""nslab.scaling.latency: the measurement protocol (modes, threads, shapes), not the speed of this machine."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from nslab.scaling.latency import measure_latency


class Counting(nn.Module):
    """Records the batch shape, grad mode and training flag of every call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 2)
        self.calls = []

    def forward(self, x):
        self.calls.append((tuple(x.shape), torch.is_grad_enabled(), self.training, torch.get_num_threads()))
        return self.lin(x.flatten(1))


def test_cpu_protocol_and_restored_state():
    m = Counting().train()
    threads = torch.get_num_threads()
    mean, std = measure_latency(m, (3, 2, 2), "cpu", batch=7, warmup=3, repeat=5, threads=1)
    assert len(m.calls) == 8
    assert {c[0] for c in m.calls} == {(7, 3, 2, 2)}
    assert not any(c[1] for c in m.calls) and not any(c[2] for c in m.calls)  # no_grad, eval mode
    assert {c[3] for c in m.calls} == {1}
    assert m.training and torch.get_num_threads() == threads
    assert math.isfinite(mean) and mean > 0 and 0 <= std < math.inf


def test_mode_and_threads_restored_after_an_error():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    m = Boom().train()
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(m, (3, 4, 4), "cpu", threads=1)
    assert m.training and torch.get_num_threads() == threads


def test_bad_arguments():
    m = Counting()
    with pytest.raises(ValueError, match="one sample's shape"):
        measure_latency(m, (100, 3, 2, 2))
    with pytest.raises(ValueError, match="repeat >= 1"):
        measure_latency(m, (3, 2, 2), repeat=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_a_device_copy_and_events():
    m = Counting()
    mean, std = measure_latency(m, (3, 2, 2), "cuda", batch=4, warmup=2, repeat=3)
    assert next(m.parameters()).device.type == "cpu"  # the argument was not moved
    assert mean > 0 and std >= 0


# --- the per-layer lookup table (nslab.scaling.latency_table) ----------------------------------------------------

import numpy as np  # noqa: E402

from nslab.data import DATASETS, dataset_spec  # noqa: E402
from nslab.models import ARCHS, create_model, default_widths, uniform_widths  # noqa: E402
from nslab.scaling.latency_table import LatencyTable, Op, grid_weights, network_ops  # noqa: E402
from nslab.scaling.methods import METHODS, Context, get_method  # noqa: E402
from nslab.scaling.powerlaw import published_fit  # noqa: E402
from nslab.scaling.solver import scale_widths, widths_for_budget  # noqa: E402


def bilinear_ms(op: Op) -> float:
    """A made-up device on which every op costs a bilinear function of its widths (interpolation is exact)."""
    k = {"conv": 3e-6 * op.k * op.k * op.h * op.h, "linear": 1e-6}.get(op.kind, 1e-7 * op.h * op.h)
    per_channel = op.depthwise or op.kind not in ("conv", "linear")  # cost linear in its one width
    return 0.01 + 1e-4 * op.cin + 2e-4 * op.cout + k * (op.cin if per_channel else op.cin * op.cout)


def fake_table(tmp_path, **kw):
    calls = []

    def timer(op):
        calls.append(op)
        return bilinear_ms(op)

    return LatencyTable(cache_dir=tmp_path, timer=timer, progress=False, **kw), calls


# Every registered network with a latency model, on each of its variants (with convcut where it applies).
OPS_VARIANTS = [
    (name, dataset, convcut)
    for name, a in ARCHS.items() if a.ops is not None
    for dataset, spec in DATASETS.items() if spec.variant in a.variants
    for convcut in ((False, True) if a.has_shortcuts else (False,))
]


@pytest.mark.parametrize("arch,dataset,convcut", OPS_VARIANTS)
def test_network_ops_are_the_models_layers(arch, dataset, convcut):
    rng = np.random.default_rng(0)
    widths = [int(w) for w in rng.integers(3, 12, len(default_widths(arch)))]
    widths[2] = widths[1]  # equal neighbours: somewhere a block has no projection
    seen = []

    def hook(mod, inputs, _):
        x = inputs[0]
        if isinstance(mod, nn.Conv2d):
            seen.append(("conv", x.shape[-1], mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0],
                         mod.groups > 1, mod.bias is not None))
        else:
            seen.append(("linear", 1, mod.in_features, mod.out_features, 1, 1, False, True))

    model = create_model(arch, widths, dataset, convcut).eval()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    size = dataset_spec(dataset).image_size
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    ops = network_ops(arch, widths, dataset, convcut)
    listed = [(o.kind, o.h, o.cin, o.cout, o.k, o.stride, o.depthwise, o.bias if o.kind == "conv" else True)
              for o in ops if o.kind in ("conv", "linear")]
    assert sorted(listed) == sorted(seen)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(o.post.startswith("bn") or o.kind == "bn" for o in ops) == n_bn


def test_grid_is_exact_to_16_then_8_points_per_octave():
    assert grid_weights(16) == ((16, 1.0),) and grid_weights(72) == ((72, 1.0),)
    assert grid_weights(17) == ((16, 0.5), (18, 0.5))
    (lo, a), (hi, b) = grid_weights(100)
    assert (lo, hi) == (96, 104) and a + b == 1 and lo * a + hi * b == pytest.approx(100)
    points = sorted({g for w in range(17, 2048) for g, _ in grid_weights(w)})
    assert len([p for p in points if 256 <= p < 512]) == 8


def test_predictions_interpolate_exactly_and_time_each_entry_once(tmp_path):
    table, calls = fake_table(tmp_path)
    widths = [37, 70, 130, 129, 250, 260, 300, 515]  # off the grid almost everywhere
    exact = sum(bilinear_ms(op) for op in network_ops("vgg11", widths))
    assert table.predict("vgg11", widths) == pytest.approx(exact, rel=1e-12)
    n = len(calls)
    assert n == len({op for op in calls}) and 14 <= n <= 2 + 7 * 4 + 5 * 2 + 2  # grid corners only, each once
    table.predict("vgg11", widths)
    assert len(calls) == n  # cached in memory ...
    again, calls2 = fake_table(tmp_path)
    assert again.predict("vgg11", widths) == pytest.approx(exact, rel=1e-12) and calls2 == []  # ... and on disk
    other, calls3 = fake_table(tmp_path, batch=8)  # other settings: another file
    other.predict("vgg11", widths)
    assert len(calls3) == n and other.path != table.path
    readonly = LatencyTable(cache_dir=tmp_path, timer=bilinear_ms, measure=False)
    with pytest.raises(ValueError, match="lacks .* entries"):
        readonly.predict("vgg11", [3] * 8)


def test_cache_file_keeps_its_settings(tmp_path):
    table, _ = fake_table(tmp_path)
    table.predict("vgg11", [4] * 8)
    d = json.loads(table.path.read_text())
    assert d["settings"]["batch"] == 1 and d["settings"]["torch"] == torch.__version__ and d["entries"]
    d["settings"]["batch"] = 2
    table.path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="other settings"):
        fake_table(tmp_path)
    with pytest.raises(ValueError, match="unknown dtype 'float64'; accepted"):
        LatencyTable(dtype="float64")


def test_real_timing_of_a_tiny_network(tmp_path):
    table = LatencyTable(cache_dir=tmp_path, warmup=0, repeat=2, min_ms=1, progress=False)
    ms = table.predict("vgg11", [2] * 8)
    ops = [k for k in table.entries if not k.startswith('["calibration"')]
    assert 0 < ms < 1000 and table.measured == len(ops) > 0
    factor = table.calibration("vgg11")  # one end-to-end timing of uniform r = 0.5, over the layer sum
    assert 0.2 < factor < 5 and len(table.entries) == len(ops) + 1
    assert ms == pytest.approx(table.layer_sum("vgg11", [2] * 8) * factor)
    raw = LatencyTable(cache_dir=tmp_path, warmup=0, repeat=2, min_ms=1, calibrate=False, measure=False)
    assert raw.predict("vgg11", [2] * 8) == table.layer_sum("vgg11", [2] * 8)  # same file, no factor
    assert table.settings["timer"] == "measured" and table.settings["threads"] == 1 and table.path.exists()


def test_latency_budget_in_the_solver_and_methods(tmp_path):
    table, calls = fake_table(tmp_path)
    law = published_fit("vgg11-cifar10", 15)[0]
    budget = table.predict("vgg11", uniform_widths("vgg11", 0.5))
    s = widths_for_budget(law, "vgg11", "cifar10", budget, metric="latency", latency=table)
    assert s.metric == "latency" and s.target == budget and s.latency_ms == table.predict("vgg11", s.widths)
    assert s.rel_error == pytest.approx((s.latency_ms - budget) / budget) and abs(s.rel_error) < 5e-3
    assert len(calls) < 400  # a few cells per layer, not every width the bisection visits
    with pytest.raises(ValueError, match=r"latency budget 0\.001 ms is below the smallest .* range [\d.]+ ms \.\."):
        widths_for_budget(law, "vgg11", "cifar10", 0.001, metric="latency", latency=table)
    with pytest.raises(ValueError, match="latency budget 1e\\+06 ms is beyond .* 4,096 channels"):
        widths_for_budget(law, "vgg11", "cifar10", 1e6, metric="latency", latency=table)
    s = scale_widths(default_widths("vgg11"), "vgg11", "cifar10", budget, metric="latency", latency=table)
    assert abs(s.rel_error) < 0.02
    ctx = Context.published("vgg11-cifar10", (1, 15))
    ctx = Context(ctx.arch, ctx.dataset, laws=ctx.laws, latency=table)
    b = ctx.budget(0.5, "latency")
    assert b.target == budget and b.metric == "latency"
    assert get_method("uniform")(ctx, b) == uniform_widths("vgg11", 0.5)
    for name in ("neuralscale_it1", "neuralscale_last", "morphnet"):
        w = METHODS[name](ctx, b)
        assert abs(table.predict("vgg11", w) - budget) / budget < 0.02, name


def test_op_keys_stay_those_of_the_cache_files():
    # The on-disk table is keyed by Op.key(): moving Op (into nslab.models) must not change a key.
    assert Op("conv", 32, 3, 64, 3, bias=True, post="bn_relu", fixed_in=True).key() == \
        '["conv",32,3,64,3,1,false,true,"bn_relu",true,false]'
    assert Op("add", 8, 16, 16).key() == '["add",8,16,16,1,1,false,false,"",false,false]'


def test_an_architecture_without_ops_has_no_latency_model(tmp_path):
    import dataclasses

    from nslab.models import get_arch, register, unregister

    register(dataclasses.replace(get_arch("vgg11"), name="vgg11_no_ops", ops=None))
    try:
        with pytest.raises(ValueError, match="no latency model for architecture 'vgg11_no_ops'"):
            fake_table(tmp_path)[0].predict("vgg11_no_ops", [4] * 8)
    finally:
        unregister("vgg11_no_ops")
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        network_ops("resnet50", [4] * 8)
