import dataclasses
import zlib

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nslab.data import DATASETS, dataset_spec
from nslab.models import (
    ARCHS,
    Architecture,
    Gate,
    WidthGroup,
    create_model,
    default_widths,
    get_arch,
    macs,
    macs_counter,
    param_count,
    param_counter,
    register,
    uniform_widths,
    unregister,
)

# Every registered network, on every dataset of its variants, with and without convcut where it applies.
VARIANTS = [
    (name, dataset, convcut)
    for name, a in ARCHS.items()
    for dataset, spec in DATASETS.items()
    if spec.variant in a.variants
    for convcut in ((False, True) if a.has_shortcuts else (False,))
]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "arch,dataset,expected",
    [("vgg11", "cifar10", 9_231_114), ("vgg11", "cifar100", 9_277_284),
     ("resnet18", "cifar100", 11_218_340), ("resnet18", "tinyimagenet", 11_273_736),
     ("mobilenetv2", "cifar100", 2_448_700), ("mobilenetv2", "tinyimagenet", 2_576_800)],
)
def test_default_counts(arch, dataset, expected):
    assert param_count(arch, None, dataset) == expected
    assert n_params(create_model(arch, None, dataset)) == expected


@pytest.mark.parametrize(
    "arch,dataset,ratios,expected_m",
    [("vgg11", "cifar10", (0.25, 0.75, 2.0), (0.58, 5.20, 36.89)),
     ("mobilenetv2", "cifar100", (0.25, 0.75, 2.0), (0.20, 1.42, 9.30)),
     ("resnet18", "tinyimagenet", (0.25, 0.75), (0.73, 6.36)),
     ("resnet18", "cifar100", (0.25, 0.75, 2.0), (0.71, 6.32, 44.75))],
)
def test_uniform_counts_match_paper_tables(arch, dataset, ratios, expected_m):
    got = [round(param_count(arch, uniform_widths(arch, r), dataset) / 1e6, 2) for r in ratios]
    assert got == list(expected_m)


def test_uniform_widths_truncate():
    assert uniform_widths("vgg11", 0.3) == [int(w * 0.3) for w in default_widths("vgg11")]
    assert uniform_widths("vgg11", 0.25)[0] == 16


@pytest.mark.parametrize("arch,dataset,convcut", VARIANTS)
def test_param_count_equals_model(arch, dataset, convcut):
    rng = np.random.default_rng(hash((arch, dataset, convcut)) % 2**32)
    n = len(default_widths(arch))
    cases = [rng.integers(1, 24, n).tolist() for _ in range(3)]
    cases.append([7] * n)  # equal widths: identity shortcuts appear where stride is 1
    for widths in cases:
        assert param_count(arch, widths, dataset, convcut) == n_params(create_model(arch, widths, dataset, convcut))


@pytest.mark.parametrize("arch,dataset,convcut", VARIANTS)
def test_forward_shapes(arch, dataset, convcut):
    spec = dataset_spec(dataset)
    n = len(default_widths(arch))
    model = create_model(arch, [4] * n, dataset, convcut).eval()
    assert model(torch.randn(2, 3, spec.image_size, spec.image_size)).shape == (2, spec.num_classes)


def test_shortcut_kinds():
    # Identity where stride 1 and widths agree, projection otherwise; convcut forces projections.
    m = create_model("resnet18", None, "cifar10")
    assert [b.shortcut is not None for b in m.blocks] == [False, False, True, False, True, False, True, False]
    tiny = create_model("resnet18", None, "tinyimagenet")
    assert tiny.blocks[0].shortcut is not None
    m = create_model("mobilenetv2", None, "cifar100")
    ident = [isinstance(b.shortcut, torch.nn.Identity) for b in m.blocks]
    assert ident == [False, False, True, False, True, True, False, True, True, True, False, True, True,
                     False, True, True, False]
    assert not any(isinstance(b.shortcut, torch.nn.Identity)
                   for b in create_model("mobilenetv2", None, "cifar100", convcut=True).blocks)


@pytest.mark.parametrize("arch,dataset,convcut", VARIANTS)
def test_gates_cover_every_width(arch, dataset, convcut):
    gates = [m.index for m in create_model(arch, None, dataset, convcut).modules() if isinstance(m, Gate)]
    assert sorted(gates) == list(range(len(default_widths(arch))))


@pytest.mark.parametrize(
    "call,match",
    [(lambda: create_model("vgg16"), "unknown architecture 'vgg16'"),
     (lambda: create_model("vgg11", [64] * 7), "expected 8 widths, got 7"),
     (lambda: create_model("vgg11", [64] * 7 + [0]), "positive"),
     (lambda: create_model("vgg11", [64] * 7 + [2.5]), "integers"),
     (lambda: param_count("resnet18", [1] * 16, "cifar10"), "expected 17 widths"),
     (lambda: macs("mobilenetv2", [1] * 18, "cifar10"), "expected 19 widths"),
     (lambda: macs("vgg11", None, "tinyimagenet"), "no variant"),
     (lambda: macs_counter("vgg11", "cifar10", convcut=True), "no shortcuts"),
     (lambda: create_model("vgg11", None, "tinyimagenet"), "no variant"),
     (lambda: create_model("vgg11", None, "imagenet"), "unknown dataset 'imagenet'"),
     (lambda: create_model("vgg11", None, "cifar10", convcut=True), "no shortcuts"),
     (lambda: uniform_widths("vgg11", 0.001), "no channel"),
     (lambda: uniform_widths("vgg11", -1), "positive")],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- multiply-accumulates ---------------------------------------------------------------------------------


def flop_counter_macs(model: torch.nn.Module, dataset: str) -> int:
    """FlopCounterMode's total for one random image of the dataset's size, halved (it counts 2 flops per MAC)."""
    size = dataset_spec(dataset).image_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, size, size))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


@pytest.mark.parametrize("arch,dataset,convcut", VARIANTS)
def test_macs_equals_flop_counter(arch, dataset, convcut):
    rng = np.random.default_rng(zlib.crc32(f"{arch}/{dataset}/{convcut}".encode()))
    d = np.array(default_widths(arch))
    cases = [None] + [rng.integers(1, 2 * d + 1).tolist() for _ in range(3)]  # defaults, then 1..2x default
    count = macs_counter(arch, dataset, convcut)
    for widths in cases:
        expected = flop_counter_macs(create_model(arch, widths, dataset, convcut), dataset)
        assert macs(arch, widths, dataset, convcut) == expected
        assert count(default_widths(arch) if widths is None else widths) == expected


@pytest.mark.parametrize(
    "arch,dataset,convcut,expected",
    [("vgg11", "cifar10", False, 152_769_536), ("vgg11", "cifar100", False, 152_815_616),
     ("resnet18", "cifar10", False, 555_422_720), ("resnet18", "tinyimagenet", False, 565_022_720),
     ("resnet18", "tinyimagenet", True, 581_799_936), ("mobilenetv2", "cifar10", False, 26_578_944),
     ("mobilenetv2", "tinyimagenet", False, 70_426_112), ("mobilenetv2", "tinyimagenet", True, 72_826_368)],
)
def test_default_macs(arch, dataset, convcut, expected):
    assert macs(arch, None, dataset, convcut) == expected


def test_vgg11_quarter_width_macs():
    # The project's measurement: VGG11 at uniform r=0.25 costs 9.9M multiply-accumulates per CIFAR-10 image.
    widths = uniform_widths("vgg11", 0.25)
    assert macs("vgg11", widths, "cifar10") == 9_880_832
    assert round(macs("vgg11", widths, "cifar10") / 1e6, 1) == 9.9
    # MACs scale as r^2 except the first conv's (3 input channels) and the classifier's (r): a bit over 1/16.
    assert 15 < macs("vgg11", None, "cifar10") / macs("vgg11", widths, "cifar10") < 16


@pytest.mark.parametrize("arch,dataset,convcut", VARIANTS)
def test_macs_grow_with_widths(arch, dataset, convcut):
    count = macs_counter(arch, dataset, convcut)
    got = [count(uniform_widths(arch, r)) for r in (0.125, 0.25, 0.5, 1.0, 2.0)]
    assert got == sorted(set(got))
    base = [8] * len(default_widths(arch))
    for i in range(len(base)):
        assert count(base[:i] + [base[i] + 1] + base[i + 1:]) > count(base)
    # Without a model: a fast closure, as cheap as the parameter counter.
    assert param_counter(arch, dataset, convcut)(base) == param_count(arch, base, dataset, convcut)


# --- the Architecture objects and the registry --------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_architecture_describes_its_width_vector(arch):
    a = get_arch(arch)
    assert a.name == arch and len(a.groups) == len(a.default_widths) == len(default_widths(arch))
    assert list(a.default_widths) == default_widths(arch) and len(set(a.width_names)) == len(a.groups)
    assert a.shrinkable <= set(range(len(a.groups))) and a.variants
    spec = dataset_spec(next(d for d, s in DATASETS.items() if s.variant in a.variants))
    assert a.ops is not None and a.ops(list(a.default_widths), spec, False)  # every paper network has a latency model


def test_paper_networks_shrink_what_they_can_remove_exactly():
    assert get_arch("vgg11").shrinkable == set(range(8))
    assert get_arch("resnet18").shrinkable == set(range(1, 17, 2))  # the middle widths; the stream is masked
    assert get_arch("mobilenetv2").shrinkable == {18}  # the head; block widths set the next expansion


def test_a_bad_architecture_fails_when_it_is_made_or_registered():
    vgg = get_arch("vgg11")
    with pytest.raises(ValueError, match=r"shrinkable indices \[8\] are outside 0\.\.7"):
        dataclasses.replace(vgg, name="vgg_bad", shrinkable={0, 8})
    with pytest.raises(ValueError, match="subset of"):
        dataclasses.replace(vgg, name="vgg_bad", variants=("imagenet",))
    with pytest.raises(ValueError, match="unique"):
        dataclasses.replace(vgg, name="vgg_bad", groups=(WidthGroup("a", 4), WidthGroup("a", 4)))
    with pytest.raises(ValueError, match="positive integers"):
        dataclasses.replace(vgg, name="vgg_bad", groups=(WidthGroup("a", 0),))
    with pytest.raises(ValueError, match="already registered"):
        register(vgg)
    with pytest.raises(ValueError, match=r"params\(\) gives 0 at the default widths \(convcut=False\)"):
        register(dataclasses.replace(vgg, name="vgg_bad", params=lambda *args: 0))
    with pytest.raises(ValueError, match="expected 8 widths"):  # one group short of the builder's 8 gates
        register(dataclasses.replace(vgg, name="vgg_bad", groups=vgg.groups[:-1], shrinkable=range(7)))
    with pytest.raises(ValueError, match=r"Gate indices are \[\]; need exactly one Gate per width group, 0\.\.7"):
        register(dataclasses.replace(vgg, name="vgg_bad", build=lambda *args: torch.nn.Linear(3, 10)))
    with pytest.raises(ValueError, match="Architecture"):
        register("vgg_bad")
    assert "vgg_bad" not in ARCHS


@pytest.mark.parametrize("arch", list(ARCHS))
def test_register_and_unregister(arch):
    # A copy under another name passes the registration check (a meta build: gates and params) and is usable.
    a = register(dataclasses.replace(get_arch(arch), name=f"{arch}_copy"))
    widths = [4] * len(a.groups)
    try:
        assert isinstance(a, Architecture) and list(ARCHS)[-1] == f"{arch}_copy"
        assert param_count(f"{arch}_copy", widths) == param_count(arch, widths)
        assert n_params(create_model(f"{arch}_copy", widths)) == param_count(arch, widths)
    finally:
        assert unregister(f"{arch}_copy") is a
    with pytest.raises(ValueError, match=f"unknown architecture '{arch}_copy'"):
        create_model(f"{arch}_copy")
