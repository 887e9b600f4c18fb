"""A user's own small CNN, named to nslab as a factory string ``usernet:small_cnn`` (tests/test_cli.py).

Not a test module: the CLI imports it by name, as it would import a user's ``package.module:function``.
"""

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
