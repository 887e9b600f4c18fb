"""Any CNN as an Architecture (Architecture.from_module): traced groups, builds at any widths, exact counts.

torchvision networks (residual adds, depthwise convs, squeeze-and-excitation gates, concatenations, layer scales and
LayerNorms) are traced at 32x32, built at random width vectors below and above their defaults, and their compiled
parameter and MAC polynomials checked against the built network's ``sum(p.numel())`` and FlopCounterMode's total / 2,
exactly. The paper's three networks traced from nslab's own modules give the hand-written counts (under the
documented mapping of their width vectors), and bad input is a one-line error naming what is wrong.
"""

from __future__ import annotations

import random
import statistics
import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nslab
from nslab.models import Architecture, Gate, create_model, get_arch, register, unregister
from nslab.models.traced_arch import traced_network

TORCHVISION = ["resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "convnext_tiny"]
_CACHE: dict[str, Architecture] = {}


def traced(name: str) -> Architecture:
    if name not in _CACHE:
        _CACHE[name] = Architecture.from_module(f"torchvision:{name}", (3, 32, 32), name=f"tv_{name}")
    return _CACHE[name]


def measured(arch: Architecture, widths, k: int = 10) -> tuple[int, int]:
    """(parameters, MACs) of the built network, counted on the module: sum(numel) and FlopCounterMode / 2."""
    model = arch.build(list(widths), k, arch.variants[0], False).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, k)
    flops = fc.get_total_flops()
    assert flops % 2 == 0
    return sum(p.numel() for p in model.parameters()), flops // 2


def random_widths(arch: Architecture, rng: random.Random, low: float, high: float) -> list[int]:
    return [max(1, round(d * rng.uniform(low, high))) for d in arch.default_widths]


@pytest.mark.parametrize("name", TORCHVISION)
def test_counts_are_exact_below_and_above_the_defaults(name):
    arch = traced(name)
    rng = random.Random(name)
    for low, high in ((0.2, 1.0), (1.0, 1.8)):
        w = random_widths(arch, rng, low, high)
        assert measured(arch, w) == (arch.params(w, 10, "cifar", False), arch.macs(w, 10, "cifar", False, 32))
    # at the default widths and the factory's K the built network is the factory's network
    ref = torchvision_model(name)
    d = list(arch.default_widths)
    assert arch.params(d, 1000, "cifar", False) == sum(p.numel() for p in ref.parameters())


def torchvision_model(name: str) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None)


def test_groups_say_what_each_width_ties():
    arch = traced("resnet18")
    # stem + 4 residual streams, plus each BasicBlock's middle width (8 blocks)
    assert len(arch.groups) == 12 and arch.default_widths[:2] == (64, 64)
    stem = arch.groups[0]
    assert stem.name == "conv1" and ("conv1", "out", 1) in stem.members and ("layer1.1.conv2", "out", 1) in stem.members
    assert "layer1.0.conv2 out" in stem.layers
    last = max(arch.groups, key=lambda g: any(m[0] == "fc" for m in g.members))
    assert ("fc", "in", 1) in last.members and last.default == 512
    assert all(not any(o == "fc" and r == "out" for o, r, _ in g.members) for g in arch.groups)  # K is not a width
    mid = arch.groups[1]
    assert {m[0] for m in mid.members} == {"layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"}
    # a depthwise conv ties its input and output; an SE gate ties the squeeze conv's output into the block
    mb = traced("mobilenet_v2")
    dw = next(g for g in mb.groups if ("features.2.conv.1.0", "out", 1) in g.members)
    assert ("features.2.conv.0.0", "out", 1) in dw.members
    eff = traced("efficientnet_b0")
    se = next(g for g in eff.groups if ("features.1.0.block.1.fc2", "out", 1) in g.members)
    assert ("features.1.0.block.0.0", "out", 1) in se.members


def test_a_concatenation_sums_its_input_groups():
    arch = traced("densenet121")
    assert len(arch.groups) == 120  # stem, 58 dense layers x (bottleneck, growth), 3 transitions
    growth = next(g for g in arch.groups if g.name == "features.denseblock1.denselayer1.conv2")
    assert growth.default == 32
    consumers = {o for o, r, _ in growth.members if r == "in"}
    # the first layer's 32 new channels feed every later layer of block 1 and the transition after it
    assert {f"features.denseblock1.denselayer{i}.conv1" for i in range(2, 7)} | {"features.transition1.conv"} \
        <= consumers


def test_built_network_has_one_gate_per_group_and_registers():
    arch = traced("mobilenet_v2")
    register(arch)  # the registry's check: gates 0..L-1 and params() equal to the built count (meta build)
    try:
        w = nslab.uniform_widths(arch.name, 0.5)
        model = nslab.create_model(arch.name, w, "cifar100")
        assert sorted(m.index for m in model.modules() if isinstance(m, Gate)) == list(range(len(arch.groups)))
        assert nslab.param_count(arch.name, w, "cifar100") == sum(p.numel() for p in model.parameters())
        assert nslab.macs(arch.name, w, "cifar100") == arch.macs(w, 100, "cifar", False, 32)
        with pytest.raises(ValueError, match="no variant"):
            nslab.param_count(arch.name, w, "tinyimagenet")
        with pytest.raises(ValueError, match=f"expected {len(w)} widths"):
            nslab.param_count(arch.name, w[:-1])
        with pytest.raises(ValueError, match="positive integers"):
            nslab.create_model(arch.name, [0] + w[1:])
    finally:
        unregister(arch.name)


def test_a_count_takes_microseconds():
    arch = traced("resnet18")
    w = list(arch.default_widths)
    for _ in range(200):
        arch.params(w, 10, "cifar", False)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(200):
            arch.params(w, 10, "cifar", False)
            arch.macs(w, 10, "cifar", False, 32)
        times.append((time.perf_counter() - t) / 400)
    assert statistics.median(times) < 100e-6  # the goal is 50 us on an idle core (bench/trace_speed.py)


# ---- the paper's networks, traced from nslab's own modules --------------------------------------------------------

def paper_modules(arch: str) -> list[str]:
    """The module whose outputs each hand-written width sets, in width-vector order."""
    if arch == "vgg11":
        return [n for n, m in create_model("vgg11").named_modules() if isinstance(m, nn.Conv2d)]
    if arch == "resnet18":
        return ["conv1"] + [f"blocks.{b}.conv{i}" for b in range(8) for i in (1, 2)]
    return ["stem.0"] + [f"blocks.{b}.body.6" for b in range(17)] + ["head.0"]


def expansions() -> dict[str, tuple[int, float]]:
    """MobileNetV2's expansion convs: traced group name -> (hand width index of the block input, t)."""
    return {f"blocks.{b}.body.0": (b, 1 if b == 0 else 6) for b in range(17)}


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "mobilenetv2"])
def test_paper_networks_traced_give_the_hand_written_counts(arch):
    """Mapping: each hand-written width is the traced group holding its module's outputs. The traced vector is
    coarser where the default network ties widths (an identity shortcut ties a block's output to its input; the
    hand-written vector lists both, and a network built with them unequal grows a projection instead), and
    MobileNetV2's traced vector has one more group per block, the expansion width, which the hand-written network
    fixes at t x the block's input width."""
    hand = get_arch(arch)
    t = Architecture.from_module(lambda: create_model(arch), (3, 32, 32), name=f"traced_{arch}")
    index = {g.name: i for i, g in enumerate(t.groups)}
    owner = {o: i for i, g in enumerate(t.groups) for o, r, _ in g.members if r == "out"}
    of_hand = [owner[m] for m in paper_modules(arch)]
    extra = expansions() if arch == "mobilenetv2" else {}
    assert len(t.groups) == len(set(of_hand)) + len(extra)
    assert {"vgg11": 8, "resnet18": 12, "mobilenetv2": 26}[arch] == len(t.groups)
    assert [t.default_widths[g] for g in of_hand] == list(hand.default_widths)
    rng = random.Random(arch)
    for _ in range(3):
        # distinct widths per group, so that no block the default network gives a projection loses it
        tw = rng.sample(range(1, 700), len(t.groups))
        hw = [tw[g] for g in of_hand]
        for name, (b, e) in extra.items():
            tw[index[name]] = int(e * hw[b])
        for k in (10, 100):
            assert t.params(tw, k, "cifar", False) == hand.params(hw, k, "cifar", False)
            assert t.macs(tw, k, "cifar", False, 32) == hand.macs(hw, k, "cifar", False, 32)


# ---- bad input ----------------------------------------------------------------------------------------------------

class Shuffled(nn.Module):
    """conv -> channel shuffle -> conv -> pool -> linear: a shuffle ties channels across groups."""

    def __init__(self):
        super().__init__()
        self.c1, self.shuffle, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.ChannelShuffle(2), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.c2(self.shuffle(self.c1(x))).mean((2, 3)))


class Flat(nn.Module):
    """conv -> flatten -> linear sized for 64x64 inputs."""

    def __init__(self):
        super().__init__()
        self.c1, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 64 * 64, 10)

    def forward(self, x):
        return self.fc(self.c1(x).flatten(1))


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x):
        y = self.c1(x).flatten(2)
        return self.fc((y @ torch.softmax(y.transpose(1, 2) @ y, -1)).mean(2))


class AuxHead(nn.Module):
    """GoogLeNet-style: an auxiliary classifier that runs in training only."""

    def __init__(self):
        super().__init__()
        self.c1, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10)
        self.aux = nn.Sequential(nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 32 * 32, 10))

    def forward(self, x):
        y = self.c1(x)
        out = self.fc(y.mean((2, 3)))
        return (out, self.aux(y)) if self.training else out


def broken():
    raise RuntimeError("no weights here")


@pytest.mark.parametrize("factory, size, message", [
    (broken, (3, 32, 32), r"factory 'broken' failed: RuntimeError: no weights here"),
    ("torchvision:no_such_net", (3, 32, 32), r"factory 'torchvision:no_such_net' failed"),
    ("resnet18", (3, 32, 32), r"factory must be a callable or 'torchvision:NAME'"),
    ("no_such_package_xyz:make", (3, 32, 32), r"cannot import 'make' from 'no_such_package_xyz'"),
    (Flat, (3, 32, 32), r"cannot take an input of size \(3, 32, 32\)"),
    (Flat, (3, 48, 48), r"input_size must be \(C, H, H\) with H in \[32, 64\].*\(3, 48, 48\)"),
    (Shuffled, (3, 32, 32), r"op 'channel_shuffle' in module 'shuffle': a channel shuffle"),
    (SelfAttention, (3, 32, 32), r"op 'bmm' .*attention"),
    (AuxHead, (3, 32, 32), r"module\(s\) 'aux' hold parameters but never ran in an eval-mode forward"),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(10)), (3, 32, 32), r"cannot be resized"),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.MultiheadAttention(8, 2)), (3, 32, 32),
     r"module '1' \(MultiheadAttention\): parameter 'in_proj_weight'"),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3, groups=8)), (3, 32, 32),
     r"module '1' \(Conv2d\): a depthwise convolution with a channel multiplier \(groups = in = 8, out 16\)"),
])
def test_bad_input_is_a_one_line_error(factory, size, message):
    with pytest.raises(ValueError, match=message) as e:
        Architecture.from_module(factory, size)
    assert "\n" not in str(e.value)


def test_a_traced_network_at_64_pixels_and_wrong_calls():
    arch = Architecture.from_module(Flat, (3, 64, 64), name="flat64")
    assert arch.variants == ("tiny",) and arch.default_widths == (4,)
    assert arch.groups[0].members == (("c1", "out", 1), ("fc", "in", 64 * 64))
    model = arch.build([7], 200, "tiny", False)
    assert model.fc.in_features == 7 * 64 * 64 and model.fc.out_features == 200
    assert arch.params([7], 200, "tiny", False) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="expected 1 widths, got 2"):
        arch.build([3, 4], 10, "tiny", False)
    with pytest.raises(ValueError, match="traced for 64x64 images"):
        arch.build([3], 10, "cifar", False)
    with pytest.raises(ValueError, match="MACs at 32x32 are not compiled"):
        arch.macs([3], 10, "tiny", False, 32)


class Grouped(nn.Module):
    """GroupNorm, a grouped conv (4 fixed groups), a PReLU, a per-channel layer scale and a LayerNorm."""

    def __init__(self):
        super().__init__()
        self.c1, self.gn = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.c2, self.bn = nn.Conv2d(16, 24, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(24)
        self.act, self.scale = nn.PReLU(24), nn.Parameter(torch.full((24, 1, 1), 0.1))
        self.ln, self.fc = nn.LayerNorm(24), nn.Linear(24, 10)

    def forward(self, x):
        y = self.scale * self.act(self.bn(self.c2(torch.relu(self.gn(self.c1(x))))))
        return self.fc(self.ln(y.mean((2, 3))))


def test_grouped_layers_keep_their_group_count():
    arch = Architecture.from_module(Grouped, (3, 32, 32), name="grouped")
    assert arch.default_widths == (16, 24)
    assert [g.layers.endswith("(widths: multiples of 4)") for g in arch.groups] == [True, True]
    assert {("scale", "param", 1), ("act.weight", "param", 1), ("ln", "norm", 1)} <= set(arch.groups[1].members)
    for w in ([4, 8], [8, 4], [32, 44]):
        assert measured(arch, w, 7) == (arch.params(w, 7, "cifar", False), arch.macs(w, 7, "cifar", False, 32))
    model = arch.build([32, 44], 7, "cifar", False)
    assert model.c2.groups == 4 and model.gn.num_groups == 4 and model.scale.shape == (44, 1, 1)
    assert model.act.weight.shape == (44,)
    assert bool((model.scale == 0.1).all())  # a constant initialisation stays that constant
    torch.manual_seed(3)
    again = arch.build([32, 44], 7, "cifar", False)
    torch.manual_seed(3)
    same = arch.build([32, 44], 7, "cifar", False)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), same.state_dict().values()))
    assert not torch.equal(again.c2.weight, model.c2.weight)  # fresh draws follow torch's global RNG
    with pytest.raises(ValueError, match="width 6 of group 'c1' must be a multiple of 4"):
        arch.build([6, 8], 7, "cifar", False)


@pytest.mark.parametrize("name", ["resnext50_32x4d", "regnet_y_400mf"])
def test_torchvision_grouped_networks(name):
    arch = Architecture.from_module(f"torchvision:{name}", (3, 32, 32))
    steps = [g.multiple for g in traced_network(arch).groups]
    assert max(steps) > 1
    rng = random.Random(name)
    w = [max(m, round(d * rng.uniform(0.3, 1.6)) // m * m) for d, m in zip(arch.default_widths, steps)]
    assert measured(arch, w) == (arch.params(w, 10, "cifar", False), arch.macs(w, 10, "cifar", False, 32))
    assert traced_network(get_arch("vgg11")) is None


def test_timm_factory_when_timm_is_installed():
    pytest.importorskip("timm")
    arch = Architecture.from_module("timm:resnet18", (3, 32, 32))
    assert len(arch.groups) == 12
    w = [d // 2 + 3 for d in arch.default_widths]
    assert measured(arch, w) == (arch.params(w, 10, "cifar", False), arch.macs(w, 10, "cifar", False, 32))


def partial_residual():
    """A ReXNet-style partial residual: the shortcut is added to the first channels of a wider output only."""

    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 12, 1), nn.Linear(12, 10)

        def forward(self, x):
            a = self.c1(x)
            b = self.c2(a)
            b = torch.cat([b[:, :8] + a, b[:, 8:]], 1)
            return self.fc(b.mean((2, 3)))

    return Partial()


def test_a_channel_slice_is_refused():
    with pytest.raises(ValueError, match=r"op 'slice' in module '<top level> \(Partial\)' takes channels 0:8 of 12"):
        Architecture.from_module(partial_residual)


def sequential_toy() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(24, 10))


def test_a_traced_network_goes_through_prune_fit_and_solve():
    from nslab.config import PruneSettings
    from nslab.data import synthetic_data
    from nslab.search.prune import prune

    register(Architecture.from_module(sequential_toy, name="seqtoy"))
    try:
        data = synthetic_data(train_per_class=8, test_per_class=2)
        s = PruneSettings(channels_per_step=2, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05,
                          stop_fraction=0.3)
        res = prune("seqtoy", data, s, widths=[16, 24], seed=0, progress=False)
        assert res.widths.shape[1] == 2 and res.params.tolist() == [nslab.param_count("seqtoy", r)
                                                                    for r in res.widths.tolist()]
        law = nslab.fit_power_law(res.widths, "seqtoy", "cifar10")
        budget = nslab.param_count("seqtoy", [8, 12])
        sol = nslab.widths_for_budget(law, "seqtoy", "cifar10", budget, metric="params")
        assert sol.params == nslab.param_count("seqtoy", sol.widths) and abs(sol.rel_error) < 0.05
    finally:
        unregister("seqtoy")


def test_fixed_groups_are_not_widths_and_counts_stay_exact():
    from nslab.models.traced_arch import fixed_groups

    full = traced("resnet18")
    arch = Architecture.from_module("torchvision:resnet18", (3, 32, 32), name="tv_r18_fixed", ignored=["layer4"])
    fixed = fixed_groups(arch)
    # layer4's stream and its two block-internal widths keep 512 (layer3's stream, which layer4 only reads, does not)
    assert [g.default for g in fixed] == [512, 512, 512] and len(arch.groups) == len(full.groups) - 3
    assert all(any(o.startswith("layer4.") and r != "in" for o, r, _ in g.members) for g in fixed)
    assert "fixed (not searched): " in arch.description and fixed_groups(full) == ()
    names = [g.name for g in full.groups]
    rng = random.Random("fixed")
    for low, high in ((0.2, 1.0), (1.0, 1.8)):
        w = random_widths(arch, rng, low, high)
        assert measured(arch, w) == (arch.params(w, 10, "cifar", False), arch.macs(w, 10, "cifar", False, 32))
        wf = list(full.default_widths)
        for g, x in zip(arch.groups, w):
            wf[names.index(g.name)] = x
        assert arch.params(w, 10, "cifar", False) == full.params(wf, 10, "cifar", False)
    model = arch.build(list(arch.default_widths), 10, "cifar", False)
    assert sorted({m.index for m in model.modules() if isinstance(m, Gate)}) == list(range(len(arch.groups)))
    with pytest.raises(ValueError, match="expected 9 widths"):
        arch.build(list(full.default_widths), 10, "cifar", False)


def test_a_factory_string_is_taken_wherever_a_name_is_and_names_files_without_its_colon():
    from nslab.config import Setting
    from nslab.models import ARCHS, measured_counts, param_count
    from nslab.views import network

    name = "nslab.models.zoo:cifar_resnet18"
    ARCHS.pop(name, None)  # as in a fresh grid worker: nothing traced yet
    try:
        a = get_arch(name)
        assert a.name == name and get_arch(name) is a and len(a.groups) == 12
        w = [8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]
        assert param_count(name, w, "cifar10") == 176402 == sum(p.numel() for p in create_model(name, w).parameters())
        rows = network.count_rows(name, "cifar10", vectors=2, seed=1)
        assert len(rows) == 3 and all(r["exact"] for r in rows)
        assert [r["entry"] for r in network.group_rows(name)] == list(range(12))
        assert Setting(name, "cifar10", "cifar10", (0.125,)).slug == "nslab.models.zoo-cifar_resnet18_cifar10"
    finally:
        ARCHS.pop(name, None)
    assert measured_counts("vgg11", [8] * 8) == (nslab.param_count("vgg11", [8] * 8), nslab.macs("vgg11", [8] * 8))
    with pytest.raises(ValueError, match="unknown architecture 'nope'; accepted: vgg11"):
        get_arch("nope")


def test_a_latency_budget_on_a_traced_network_is_measured_along_the_law_and_its_error_reported():
    import numpy as np

    from nslab.scaling.path_latency import latency_model, measure_path
    from nslab.scaling.powerlaw import PowerLaw
    from nslab.scaling.solver import widths_for_budget

    a = register(Architecture.from_module("torchvision:resnet18", (3, 32, 32), name="tv_latency_r18"))
    try:
        d = np.array(a.default_widths, float)
        beta = np.linspace(0.4, 0.8, len(d))
        law = PowerLaw(tuple(d / nslab.param_count(a.name, None, "cifar10") ** beta), tuple(beta))
        path = measure_path(law, a.name, "cifar10", points=4, low=0.05, high=0.2, warmup=1, repeat=3)
        assert len(path.ms) == 4 and list(path.macs) == sorted(path.macs) and min(path.ms) > 0
        assert len(path.loo_errors()) == 2 and all(e >= 0 for e in path.loo_errors())
        # through the measured points (where timing noise did not make the curve dip)
        top = int(np.argmax(path.ms))
        assert path.predict(path.widths[top]) == pytest.approx(path.ms[top], rel=1e-9)
        # between the law's smallest measured point and the curve's top: feasible whatever the timing noise (a
        # first point timed slower than the last made the raw endpoints' mean fall below the model's floor)
        target = float(np.sqrt(path.predict(path.widths[0]) * max(path.ms)))
        s = widths_for_budget(law, a.name, "cifar10", target, metric="latency", latency=path)
        assert s.metric == "latency" and path.predict(s.widths) == pytest.approx(s.achieved)
        assert min(path.ms) * 0.5 < s.achieved < max(path.ms) * 2  # within the measured range (noise makes steps)
        rep = path.report(s.widths)
        assert rep["latency_model"] == "path" and rep["points"] == 4 and rep["measured_ms"] > 0
        assert rep["rel_error"] == pytest.approx(abs(rep["predicted_ms"] / rep["measured_ms"] - 1))
        with pytest.raises(ValueError, match="latency measured on tv_latency_r18 cifar10"):
            path.predictor("vgg11", "cifar10")
        assert not hasattr(latency_model(law, "vgg11", "cifar10"), "report")  # a paper network: its layer table
        with pytest.raises(ValueError, match="points >= 3"):
            measure_path(law, a.name, "cifar10", points=2)
    finally:
        unregister(a.name)


def test_the_trace_build_serves_every_meta_build():
    calls = []

    def factory():  # computes with a tensor while it builds (as torchvision's RegNets): no meta build of its own
        calls.append(int(torch.tensor([8]).item()))
        return nn.Sequential(nn.Conv2d(3, calls[-1], 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 10))

    arch = Architecture.from_module(factory, (3, 32, 32))  # traces, then checks the counts on a meta build
    assert calls == [8]
    with torch.device("meta"):  # as a shrink's target and the channel map are built
        meta = arch.build([5], 10, "cifar", False)
    assert calls == [8] and sum(p.numel() for p in meta.parameters()) == arch.params([5], 10, "cifar", False)
    model = arch.build([5], 10, "cifar", False)  # a real build calls the factory: fresh weights
    assert calls == [8, 8] and model[0].out_channels == 5 and model[0].weight.device.type == "cpu"


def test_the_trace_builds_its_copy_without_random_draws_and_puts_them_back():
    # the trace reads only shapes, a graph and counts of its copy: torch.nn.init's draws are skipped while the
    # factory builds it (most of a large constructor's time), and restored afterwards, on an error too
    before, seen = nn.init.kaiming_uniform_, []

    def factory():
        seen.append(nn.init.kaiming_uniform_)
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 10))

    def broken():
        seen.append(nn.init.kaiming_uniform_)
        raise RuntimeError("no")

    a = Architecture.from_module(factory)
    assert seen[0] is not before and nn.init.kaiming_uniform_ is before
    with pytest.raises(ValueError, match="factory .* failed: RuntimeError: no"):
        Architecture.from_module(broken)
    assert seen[-1] is not before and nn.init.kaiming_uniform_ is before
    torch.manual_seed(0)
    w = a.build([8], 10, "cifar", False)[0].weight  # a build draws as the factory does
    torch.manual_seed(0)
    assert torch.equal(w, nn.Conv2d(3, 8, 3).weight) and seen[-1] is before
