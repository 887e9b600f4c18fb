"""Factories of networks nslab traces but does not hand-write: torchvision backbones adapted to small images.

Each is a no-argument-capable ``package.module:function`` factory for :meth:`nslab.Architecture.from_module`
(e.g. ``"nslab.models.zoo:cifar_resnet18"``): the network at its default widths, which the traced architecture
then builds at any others.
"""

from __future__ import annotations

from torch import nn

__all__ = ["cifar_resnet18"]


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet18 adapted to 32x32 images, as CIFAR ResNets are: a 3x3 stride-1 stem conv and no
    max-pool (the ImageNet stem's 7x7 stride-2 conv and max-pool would leave 8x8 maps after the stem).

    Args:
        num_classes: K (the traced architecture resizes the classifier to the dataset's K anyway).

    Returns:
        The network (default widths 64, 128, 256, 512 as torchvision's; 11.2M parameters at K = 10).
    """
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
