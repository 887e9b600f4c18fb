"""PreAct-ResNet18 with 17 independent widths (stem + both convs of each of 8 BasicBlocks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DatasetSpec
from .architecture import Architecture, WidthGroup
from .common import Gate, check_widths
from .ops import Op

DEFAULT_WIDTHS = [64] + [64] * 4 + [128] * 4 + [256] * 4 + [512] * 4
_LAYER_STRIDES = {"cifar": (1, 2, 2, 2), "tiny": (2, 2, 2, 2)}


def _block_plan(widths: Sequence[int], variant: str, convcut: bool):
    """Yield ``(cin, mid, cout, stride, projection)`` for the 8 blocks, in forward order."""
    cin = widths[0]
    for b in range(8):
        stride = _LAYER_STRIDES[variant][b // 2] if b % 2 == 0 else 1
        mid, cout = widths[1 + 2 * b], widths[2 + 2 * b]
        yield cin, mid, cout, stride, convcut or stride != 1 or cin != cout
        cin = cout


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv3x3(s) -> BN -> ReLU -> conv3x3, plus a shortcut.

    The shortcut is a 1x1 conv (no bias, no BN) of the pre-activated input when ``projection``,
    else the raw input. Gates sit after each BN: ``gate_in`` marks the block's input channels,
    ``gate_mid`` its middle channels.
    """

    def __init__(self, cin: int, mid: int, cout: int, stride: int, projection: bool, gate_idx: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.gate_in = Gate(gate_idx)
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.gate_mid = Gate(gate_idx + 1)
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gate_in(F.relu(self.bn1(x)))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.gate_mid(F.relu(self.bn2(out))))
        return out + short


class PreActResNet18(nn.Module):
    """PreAct-ResNet18. Input (N, 3, 32, 32) for CIFAR, (N, 3, 64, 64) for TinyImageNet; output (N, K)."""

    def __init__(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.blocks = nn.Sequential(
            *[
                PreActBlock(cin, mid, cout, s, proj, 2 * b)
                for b, (cin, mid, cout, s, proj) in enumerate(_block_plan(widths, variant, convcut))
            ]
        )
        self.bn = nn.BatchNorm2d(widths[-1])
        self.gate = Gate(len(widths) - 1)
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No ReLU after the final BN: as in the authors' release.
        out = self.gate(self.bn(self.blocks(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def build(widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> PreActResNet18:
    return PreActResNet18(check_widths("resnet18", widths, len(DEFAULT_WIDTHS)), num_classes, variant, convcut)


def count(widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> int:
    total = 27 * widths[0]
    for cin, mid, cout, _, proj in _block_plan(widths, variant, convcut):
        total += 2 * cin + 9 * cin * mid + 2 * mid + 9 * mid * cout + (cin * cout if proj else 0)
    return total + 2 * widths[-1] + widths[-1] * num_classes + num_classes


def macs(widths: Sequence[int], num_classes: int, variant: str, convcut: bool, image_size: int) -> int:
    """Conv and linear multiply-accumulates for one ``image_size`` x ``image_size`` image (see registry.macs)."""
    h = image_size  # the stem keeps the size
    total = h * h * 27 * widths[0]
    for cin, mid, cout, stride, proj in _block_plan(widths, variant, convcut):
        h = (h - 1) // stride + 1  # conv1 (3x3, pad 1) and the 1x1 shortcut share this output size
        total += h * h * (9 * cin * mid + 9 * mid * cout + (cin * cout if proj else 0))
    return total + widths[-1] * num_classes


def ops(widths: Sequence[int], spec: DatasetSpec, convcut: bool) -> list[Op]:
    """The layers of one forward pass, as a latency table times them (see :class:`~nslab.models.Op`)."""
    w, k, h = widths, spec.num_classes, spec.image_size
    out = [Op("conv", h, 3, w[0], 3, fixed_in=True)]
    for cin, mid, cout, stride, proj in _block_plan(w, spec.variant, convcut):
        ho = (h - 1) // stride + 1
        out.append(Op("bn", h, cin, cin, post="relu"))
        if proj:
            out.append(Op("conv", h, cin, cout, 1, stride))
        out += [Op("conv", h, cin, mid, 3, stride), Op("bn", ho, mid, mid, post="relu"),
                Op("conv", ho, mid, cout, 3), Op("add", ho, cout, cout)]
        h = ho
    return [*out, Op("bn", h, w[-1], w[-1]), Op("avgpool", h, w[-1], w[-1]), Op("linear", 1, w[-1], k, fixed_out=True)]


def _groups() -> tuple[WidthGroup, ...]:
    out = [WidthGroup("stem", DEFAULT_WIDTHS[0], "conv1's outputs: the residual stream into block 1")]
    for b in range(8):
        out += [WidthGroup(f"block{b + 1}.mid", DEFAULT_WIDTHS[1 + 2 * b],
                           f"blocks.{b}: conv1's outputs, bn2, gate_mid, conv2's inputs"),
                WidthGroup(f"block{b + 1}.out", DEFAULT_WIDTHS[2 + 2 * b],
                           f"blocks.{b}: conv2's (and the shortcut's) outputs: the residual stream out of the block")]
    return tuple(out)


ARCH = Architecture(
    "resnet18",
    groups=_groups(),
    variants=("cifar", "tiny"),
    has_shortcuts=True,
    build=build,
    params=count,
    macs=macs,
    # The 8 middle widths (odd indices: conv1 -> bn2 -> gate_mid -> conv2) shrink exactly. The residual stream
    # widths (even indices) are masked instead: PreAct blocks take an identity shortcut from the raw input but a
    # projection from relu(bn1(x)), so a block whose identity shortcut would turn into a projection after removing
    # a channel cannot reproduce the identity on the raw input.
    shrinkable=frozenset(range(1, len(DEFAULT_WIDTHS), 2)),
    ops=ops,
    sgd_solver=(1.0, None, 0.009),  # the release's: (lr, steps, tol)
    description="PreAct-ResNet18 (17 widths: the stem, both convs of each of 8 BasicBlocks)",
)
