"""A user's own small CNN, named to nslab as a factory string ``usernet:small_cnn`` (tests/test_cli.py).

Not a test module: the CLI imports it by name, as it would import a user's ``package.module:function``.
"""

import torch
from torch import nn


class SmallNet(nn.Module):
    """stem conv -> a residual block (its output added to the stem's) -> a head conv -> pool -> linear.

    Three coupled channel groups: the stem's width (tied to the block's second conv by the residual add), the
    block's middle width, the head's width. (N, 3, 32, 32) images -> (N, 10) logits.
    """

    def __init__(self, stem: int = 64, mid: int = 128, head: int = 128, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(stem, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                   nn.Conv2d(mid, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(stem, head, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(head), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(head, classes)

    def forward(self, x):
        y = self.stem(x)
        return self.fc(self.head(nn.functional.relu(y + self.block(y))))


def small_cnn() -> nn.Module:
    """The factory: :class:`SmallNet` at its default widths (64, 128, 128)."""
    return SmallNet()


def needs_an_argument(depth):
    """A factory nslab cannot call (it calls factories with no arguments): the error names it."""
    return SmallNet()


class Flat64(nn.Module):
    """conv -> flatten -> a Linear sized for 64x64 images: it cannot take CIFAR's 32x32."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 64 * 64, 10)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


class ChannelsLast(nn.Module):
    """A ConvNeXt-style block on a conv stem: depthwise conv, then channels-last (N, H, W, C) LayerNorm and a
    Linear MLP (4x expansion), a per-channel layer scale, back to (N, C, H, W), added to the stem's output.

    Two coupled groups: the stream (stem, depthwise conv, LayerNorm, the MLP's output, the layer scale) and the
    MLP's hidden width, whose gate sits on a Linear output: its channels are the *last* dimension.
    """

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.dw = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width)
        self.up, self.act, self.down = nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        self.scale = nn.Parameter(torch.full((width,), 0.5))
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.down(self.act(self.up(self.norm(self.dw(x).permute(0, 2, 3, 1))))) * self.scale
        return self.fc((x + y.permute(0, 3, 1, 2)).mean((2, 3)))
