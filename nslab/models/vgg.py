"""VGG11 with BatchNorm (CIFAR variant), built from its 8 conv widths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import DatasetSpec
from .architecture import Architecture, WidthGroup
from .common import Gate, check_widths, conv_bn_count
from .ops import Op

DEFAULT_WIDTHS = [64, 128, 256, 256, 512, 512, 512, 512]
# Max-pool after conv layers 1, 2, 4, 6, 8 (1-based): 32x32 -> 1x1 before the head.
_POOL_AFTER = {0, 1, 3, 5, 7}


class VGG(nn.Module):
    """VGG11-BN: conv3x3(bias) -> BN -> ReLU -> Gate per layer; Linear(w_8, K) head.

    Input: (N, 3, 32, 32) float images. Output: (N, K) logits.
    """

    def __init__(self, widths: Sequence[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), Gate(i)]
            if i in _POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)
        self._init()

    def _init(self) -> None:
        # The released initialisation: Kaiming (fan_out) convs, BN gamma 0.5, small-normal head.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def build(widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> VGG:
    if variant != "cifar":
        raise ValueError("vgg11 exists only for 32x32 CIFAR datasets (cifar10, cifar100)")
    if convcut:
        raise ValueError("vgg11 has no shortcuts; convcut applies to resnet18 and mobilenetv2")
    return VGG(check_widths("vgg11", widths, len(DEFAULT_WIDTHS)), num_classes)


def count(widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> int:
    total, cin = 0, 3
    for w in widths:
        total += conv_bn_count(cin, w, 3, bias=True)
        cin = w
    return total + cin * num_classes + num_classes


def macs(widths: Sequence[int], num_classes: int, variant: str, convcut: bool, image_size: int) -> int:
    """Conv and linear multiply-accumulates for one ``image_size`` x ``image_size`` image (see registry.macs)."""
    total, cin, h = 0, 3, image_size
    for i, w in enumerate(widths):
        total += h * h * 9 * cin * w  # 3x3, stride 1, padding 1: the size is kept
        if i in _POOL_AFTER:
            h //= 2
        cin = w
    return total + cin * num_classes


def ops(widths: Sequence[int], spec: DatasetSpec, convcut: bool) -> list[Op]:
    """The layers of one forward pass, as a latency table times them (see :class:`~nslab.models.Op`)."""
    out, cin, h = [], 3, spec.image_size
    for i, c in enumerate(widths):
        out.append(Op("conv", h, cin, c, 3, bias=True, post="bn_relu", fixed_in=i == 0))
        if i in _POOL_AFTER:
            out.append(Op("maxpool", h, c, c))
            h //= 2
        cin = c
    return [*out, Op("linear", 1, cin, spec.num_classes, fixed_out=True)]


ARCH = Architecture(
    "vgg11",
    groups=tuple(WidthGroup(f"conv{i + 1}", w, f"features: conv {i + 1}'s outputs, its BatchNorm, the next conv's "
                            "inputs (the head's after conv 8)") for i, w in enumerate(DEFAULT_WIDTHS)),
    variants=("cifar",),
    has_shortcuts=False,
    build=build,
    params=count,
    macs=macs,
    # All 8 shrink exactly: a gate feeds only the next conv (or the head).
    shrinkable=frozenset(range(len(DEFAULT_WIDTHS))),
    ops=ops,
    sgd_solver=(50.0, 2000, None),  # the release's: (lr, steps, tol)
    description="VGG11 with BatchNorm, CIFAR variant (8 conv widths)",
)
