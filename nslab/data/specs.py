"""Dataset names and their fixed facts (classes, image size, normalisation, CIFAR-10's class order).

One table shared by the model registry (number of classes, CIFAR vs TinyImageNet variant) and the data
pipeline (image size, normalisation), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CIFAR10_CLASSES", "DATASETS", "DatasetSpec", "dataset_spec"]


@dataclass(frozen=True)
class DatasetSpec:
    """Fixed facts of a dataset.

    Attributes:
        name: registry name.
        num_classes: K, the classifier's output size.
        image_size: side of the square input images, pixels.
        variant: ``"cifar"`` (32x32 architectures) or ``"tiny"`` (64x64 TinyImageNet architectures).
        mean: per-channel normalisation mean (RGB, in [0, 1] units).
        std: per-channel normalisation std (RGB, in [0, 1] units).
    """

    name: str
    num_classes: int
    image_size: int
    variant: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Normalisation constants are the ones of the authors' release, taken from the scripts that trained the
# reported networks (ratio_swipe.py / imagenet_ratio_swipe.py): CIFAR-10 uses mean (125.3, 123.0, 113.9)/255
# and std (63.0, 62.1, 66.7)/255; CIFAR-100 reuses the well-known CIFAR-10 constants (0.4914, ...) /
# (0.2023, ...) -- not CIFAR-100's own statistics. (The release's pruning script architecture_descent.py
# normalises CIFAR-10 with the CIFAR-100 pair below; the difference is a per-channel affine map that the
# first BatchNorm absorbs.)
DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10",
        10,
        32,
        "cifar",
        (125.3 / 255, 123.0 / 255, 113.9 / 255),
        (63.0 / 255, 62.1 / 255, 66.7 / 255),
    ),
    "cifar100": DatasetSpec("cifar100", 100, 32, "cifar", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "tinyimagenet": DatasetSpec(
        "tinyimagenet", 200, 64, "tiny", (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
    ),
}

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""torchvision's CIFAR-10 class order (label index = position)."""


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``.

    Args:
        name: a key of :data:`DATASETS` (``"cifar10"``, ``"cifar100"``, ``"tinyimagenet"``).

    Raises:
        ValueError: an unknown name (or not a string); the message lists the accepted names.
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}") from None
