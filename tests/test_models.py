import zlib

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nslab.models import (
    ARCHS,
    create_model,
    default_widths,
    macs,
    macs_counter,
    param_count,
    param_counter,
    uniform_widths,
)

VARIANTS = [
    ("vgg11", "cifar10", False), ("vgg11", "cifar100", False),
    ("resnet18", "cifar10", False), ("resnet18", "cifar100", False), ("resnet18", "tinyimagenet", False),
    ("resnet18", "cifar100", True), ("resnet18", "tinyimagenet", True),
    ("mobilenetv2", "cifar10", False), ("mobilenetv2", "cifar100", False),
    ("mobilenetv2", "tinyimagenet", False), ("mobilenetv2", "cifar100", True),
    ("mobilenetv2", "tinyimagenet", True),
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
    size = 64 if dataset == "tinyimagenet" else 32
    n = len(default_widths(arch))
    model = create_model(arch, [4] * n, dataset, convcut).eval()
    k = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200}[dataset]
    assert model(torch.randn(2, 3, size, size)).shape == (2, k)


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


def test_gates_cover_every_width():
    from nslab.models import Gate

    for arch in ARCHS:
        gates = [m.index for m in create_model(arch, None, "cifar10").modules() if isinstance(m, Gate)]
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
    size = 64 if dataset == "tinyimagenet" else 32
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
