"""The layers a per-layer latency table times (:class:`Op`); each network lists its own (``Architecture.ops``).

A network's forward pass is a sequence of a few kinds of layer: a convolution with its BatchNorm and
activation, a BatchNorm with its activation (PreAct-ResNet), a pooling, a residual addition, a linear
classifier. :mod:`nslab.scaling.latency_table` times each kind as a function of its widths and predicts a
network's latency as the sum over its ops; the ops' :meth:`Op.key` names the entries of its on-disk cache.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Op"]


@dataclass(frozen=True)
class Op:
    """One timed layer.

    Attributes:
        kind: ``"conv"`` (Conv2d, then BatchNorm and activation per ``post``), ``"bn"`` (BatchNorm, then
            activation per ``post``), ``"maxpool"`` (2x2), ``"avgpool"`` (global), ``"add"`` (residual
            sum of two maps), ``"linear"``.
        h: input spatial size (square), pixels; 1 for ``"linear"``.
        cin: input channels.
        cout: output channels (``cin`` for everything but ``"conv"`` and ``"linear"``).
        k: kernel size (conv).
        stride: stride (conv).
        depthwise: a depthwise conv (groups = cin = cout).
        bias: the conv has a bias.
        post: what follows: ``""``, ``"bn"``, ``"bn_relu"``, ``"bn_relu6"`` (conv) or ``""``, ``"relu"``
            (bn).
        fixed_in, fixed_out: the input / output channels are not widths (the image's 3 channels, the
            K classes): they are never interpolated.
    """

    kind: str
    h: int
    cin: int
    cout: int
    k: int = 1
    stride: int = 1
    depthwise: bool = False
    bias: bool = False
    post: str = ""
    fixed_in: bool = False
    fixed_out: bool = False

    def coords(self) -> tuple[int, ...]:
        """The widths this op's time varies with (one or two; none for a fully fixed op)."""
        if self.kind in ("conv", "linear") and not self.depthwise:
            return tuple(c for c, fixed in ((self.cin, self.fixed_in), (self.cout, self.fixed_out)) if not fixed)
        return (self.cin,)

    def at(self, coords: Sequence[int]) -> Op:
        """This op with its varying widths set to ``coords`` (as :meth:`coords` lists them)."""
        c = list(coords)
        if self.kind in ("conv", "linear") and not self.depthwise:
            cin = self.cin if self.fixed_in else c.pop(0)
            cout = self.cout if self.fixed_out else c.pop(0)
            return dataclasses.replace(self, cin=cin, cout=cout)
        return dataclasses.replace(self, cin=c[0], cout=c[0] if self.kind != "linear" else self.cout)

    def key(self) -> str:
        """A stable text key (the cache file's)."""
        return json.dumps(dataclasses.astuple(self), separators=(",", ":"))

    def module(self) -> nn.Module:
        """A fresh module computing this op (on the CPU, float32)."""
        if self.kind == "conv":
            layers: list[nn.Module] = [nn.Conv2d(self.cin, self.cout, self.k, self.stride, self.k // 2,
                                                 groups=self.cin if self.depthwise else 1, bias=self.bias)]
            if self.post.startswith("bn"):
                layers.append(nn.BatchNorm2d(self.cout))
            if self.post.endswith("relu"):
                layers.append(nn.ReLU(inplace=True))
            elif self.post.endswith("relu6"):
                layers.append(nn.ReLU6(inplace=True))
            return nn.Sequential(*layers)
        if self.kind == "bn":
            return nn.Sequential(nn.BatchNorm2d(self.cin), *([nn.ReLU()] if self.post == "relu" else []))
        if self.kind == "maxpool":
            return nn.MaxPool2d(2)
        if self.kind == "avgpool":
            return nn.AdaptiveAvgPool2d(1)
        if self.kind == "add":
            return _Add()
        if self.kind == "linear":
            return nn.Linear(self.cin, self.cout)
        raise ValueError(f"unknown op kind {self.kind!r}")

    def input_shape(self) -> tuple[int, ...]:
        """One sample's input shape."""
        return (self.cin,) if self.kind == "linear" else (self.cin, self.h, self.h)


class _Add(nn.Module):
    """``x + y`` for a stored second operand (a residual sum reads two maps and writes one)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("y", torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.y.shape != x.shape:
            self.y = torch.randn_like(x)
        return x + self.y
