"""MobileNetV2 with 19 widths: stem, the 17 bottleneck outputs, and the final 1x1 conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import DatasetSpec
from .architecture import Architecture, WidthGroup
from .common import Gate, check_widths, conv_bn_count
from .ops import Op

# (expansion t, default output width c, blocks n) per stage.
_STAGES = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
_STAGE_STRIDES = {"cifar": (1, 2, 2, 2, 1, 2, 1), "tiny": (1, 2, 2, 2, 2, 2, 1)}
DEFAULT_WIDTHS = [32] + [c for _, c, n in _STAGES for _ in range(n)] + [1280]


def _block_plan(widths: Sequence[int], variant: str, convcut: bool):
    """Yield ``(cin, hidden, cout, stride, conv_shortcut)`` for the 17 bottlenecks, in forward order."""
    cin, b = widths[0], 0
    for stage, (t, _, n) in enumerate(_STAGES):
        for i in range(n):
            stride = _STAGE_STRIDES[variant][stage] if i == 0 else 1
            cout = widths[1 + b]
            yield cin, t * cin, cout, stride, convcut or stride != 1 or cin != cout
            cin, b = cout, b + 1


class ReLU6Gate(Gate):
    """The gate of the stem or the head, placed after their ReLU6.

    The release gates these two right after the BatchNorm, before the ReLU6. Masking is the same at either
    place (ReLU6(0) = 0), and so is the Taylor-FO gradient except where the BatchNorm output is >= 6 (ReLU6
    passes no gradient there): :class:`nslab.search.criteria.TaylorFO` with ``relu6_gates="before"`` leaves those
    positions out and so reads this gate exactly as the release reads its own. (It stays after the ReLU6
    so that searches cached with the earlier reading keep meaning what they meant.)
    """

    clamp_max = 6.0  # the activation's upper bound: where z == 6 the pre-activation gradient is zero


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups), nn.BatchNorm2d(cout)]


class Bottleneck(nn.Module):
    """1x1 expand -> BN -> ReLU6 -> 3x3 depthwise(s) -> BN -> ReLU6 -> 1x1 project -> BN, plus shortcut.

    The shortcut is the identity, or 1x1 conv(s) -> BN when ``conv_shortcut``. No activation after the
    sum; the gate marks the block's output channels.
    """

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, conv_shortcut: bool, gate_idx: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, hidden, 1),
            nn.ReLU6(inplace=True),
            *_conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU6(inplace=True),
            *_conv_bn(hidden, cout, 1),
        )
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if conv_shortcut else nn.Identity()
        self.gate = Gate(gate_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.body(x) + self.shortcut(x))


class MobileNetV2(nn.Module):
    """MobileNetV2 (CIFAR: stem stride 1). Input (N, 3, H, W); output (N, K)."""

    def __init__(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, widths[0], 3), nn.ReLU6(inplace=True), ReLU6Gate(0))
        self.blocks = nn.Sequential(
            *[
                Bottleneck(cin, hid, cout, s, conv, 1 + b)
                for b, (cin, hid, cout, s, conv) in enumerate(_block_plan(widths, variant, convcut))
            ]
        )
        self.head = nn.Sequential(
            *_conv_bn(widths[-2], widths[-1], 1), nn.ReLU6(inplace=True), ReLU6Gate(len(widths) - 1)
        )
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.blocks(self.stem(x)))
        out = self.classifier(nn.functional.adaptive_avg_pool2d(out, 1))
        return torch.flatten(out, 1)


def build(widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> MobileNetV2:
    return MobileNetV2(check_widths("mobilenetv2", widths, len(DEFAULT_WIDTHS)), num_classes, variant, convcut)


def count(widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> int:
    total = conv_bn_count(3, widths[0], 3, bias=True)
    for cin, hid, cout, _, conv in _block_plan(widths, variant, convcut):
        total += conv_bn_count(cin, hid, 1, True) + conv_bn_count(hid, hid, 3, True, groups=hid)
        total += conv_bn_count(hid, cout, 1, True) + (conv_bn_count(cin, cout, 1, True) if conv else 0)
    total += conv_bn_count(widths[-2], widths[-1], 1, bias=True)
    return total + widths[-1] * num_classes + num_classes


def macs(widths: Sequence[int], num_classes: int, variant: str, convcut: bool, image_size: int) -> int:
    """Conv and linear multiply-accumulates for one ``image_size`` x ``image_size`` image (see registry.macs)."""
    h = image_size  # the stem keeps the size
    total = h * h * 27 * widths[0]
    for cin, hid, cout, stride, conv in _block_plan(widths, variant, convcut):
        ho = (h - 1) // stride + 1  # the depthwise 3x3 (pad 1) and the 1x1 shortcut share this output size
        total += h * h * cin * hid + ho * ho * (9 * hid + hid * cout + (cin * cout if conv else 0))
        h = ho
    total += h * h * widths[-2] * widths[-1]
    return total + widths[-1] * num_classes  # the classifier: a 1x1 conv on the pooled 1x1 map


def ops(widths: Sequence[int], spec: DatasetSpec, convcut: bool) -> list[Op]:
    """The layers of one forward pass, as a latency table times them (see :class:`~nslab.models.Op`)."""
    w, k, h = widths, spec.num_classes, spec.image_size
    out = [Op("conv", h, 3, w[0], 3, bias=True, post="bn_relu6", fixed_in=True)]
    for cin, hid, cout, stride, conv in _block_plan(w, spec.variant, convcut):
        ho = (h - 1) // stride + 1
        # The expansion's width is 6 * cin (1 * cin in the first block): it moves with cin.
        out += [Op("conv", h, cin, hid, 1, bias=True, post="bn_relu6"),
                Op("conv", h, hid, hid, 3, stride, depthwise=True, bias=True, post="bn_relu6"),
                Op("conv", ho, hid, cout, 1, bias=True, post="bn")]
        if conv:
            out.append(Op("conv", h, cin, cout, 1, stride, bias=True, post="bn"))
        out.append(Op("add", ho, cout, cout))
        h = ho
    return [*out, Op("conv", h, w[-2], w[-1], 1, bias=True, post="bn_relu6"), Op("avgpool", h, w[-1], w[-1]),
            Op("conv", 1, w[-1], k, 1, bias=True, fixed_out=True)]


ARCH = Architecture(
    "mobilenetv2",
    groups=(WidthGroup("stem", DEFAULT_WIDTHS[0], "the stem conv's outputs; block 1's input (and its expansion)"),
            *(WidthGroup(f"block{b + 1}", w, f"blocks.{b}: the projection's and shortcut's outputs; the next "
                         "block's input, which sets its expansion width (t x this)")
              for b, w in enumerate(DEFAULT_WIDTHS[1:-1])),
            WidthGroup("head", DEFAULT_WIDTHS[-1], "the final 1x1 conv's outputs; the classifier's inputs")),
    variants=("cifar", "tiny"),
    has_shortcuts=True,
    build=build,
    params=count,
    macs=macs,
    # Only the head width (index 18) shrinks exactly. The stem and block outputs are masked: a block's hidden width
    # is tied to t x its input width, so removing an input channel removes hidden channels that are not tied to it.
    shrinkable=frozenset({len(DEFAULT_WIDTHS) - 1}),
    ops=ops,
    sgd_solver=(1.0, None, 0.0005),  # the release's: (lr, steps, tol)
    description="MobileNetV2 (19 widths: the stem, the 17 bottleneck outputs, the final 1x1 conv)",
)
