"""The in-memory dataset (:class:`ImageData`) and synthetic ones for tests and smoke runs.

Every loader in :mod:`nslab.data.sources` ends in an :class:`ImageData`: uint8 image tensors, int64
labels, the class names and the :class:`~nslab.data.specs.DatasetSpec` that fixes normalisation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .specs import DatasetSpec, dataset_spec

__all__ = ["ImageData", "smoke_data", "synthetic_data", "synthetic_spec"]


@dataclass(frozen=True, eq=False)
class ImageData:
    """A dataset held in memory as uint8 image tensors.

    Attributes:
        spec: the dataset's fixed facts (name, class count, image size, variant, normalisation).
        classes: class names; label ``k`` is ``classes[k]``.
        train_x: (N_train, 3, H, W) uint8 training images, RGB.
        train_y: (N_train,) int64 labels in ``[0, K)``.
        test_x: (N_test, 3, H, W) uint8 test images.
        test_y: (N_test,) int64 labels.
        source: where the data came from (a path or a description), for logs.
    """

    spec: DatasetSpec
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str = ""

    def __post_init__(self) -> None:
        s = self.spec.image_size
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
                raise ValueError(f"{split} images must be uint8 (N, 3, {s}, {s}), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{split} labels must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if len(self.classes) != self.spec.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {self.spec.num_classes} classes")

    @property
    def num_train(self) -> int:
        """Number of training images."""
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test images."""
        return int(self.test_x.shape[0])

    def fingerprint(self) -> dict:
        """What identifies this data in an artifact key: name, split sizes and a hash of every byte.

        Two datasets with the same fingerprint hold the same images and labels in the same order (so a
        cached search or training run on one is valid for the other); the hash (BLAKE2b, 64 bits, over
        the uint8 images and int64 labels of both splits) is computed once per object, ~0.2 s for
        CIFAR-10.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.blake2b(digest_size=8)
            for t in (self.train_x, self.train_y, self.test_x, self.test_y):
                h.update(t.detach().cpu().contiguous().numpy().data)
            cached = {"name": self.spec.name, "num_train": self.num_train, "num_test": self.num_test,
                      "hash": h.hexdigest()}
            self.__dict__["_fingerprint"] = cached  # frozen dataclass: bypass __setattr__ for the cache
        return dict(cached)

    def subset(self, n: int, mode: str = "balanced", seed: int = 0) -> ImageData:
        """A copy whose training split keeps ``n`` images (the test split is untouched).

        Args:
            n: number of training images to keep (``1 <= n``; ``n >= N_train`` keeps everything).
            mode: ``"balanced"`` draws, with ``seed``, ``n // K`` images of every class (the remainder
                spread over the first classes); ``"first"`` keeps the first ``n`` in storage order, which
                for a class-sorted folder dataset means the first classes only.
            seed: random seed of ``"balanced"``.

        Raises:
            ValueError: for ``n < 1``, an unknown mode, or a class with too few images.
        """
        if n < 1:
            raise ValueError(f"subset size must be >= 1, got {n}")
        if n >= self.num_train:
            return self
        if mode == "first":
            idx = torch.arange(n)
        elif mode == "balanced":
            idx = _balanced_index(self.train_y, n, self.spec.num_classes, torch.Generator().manual_seed(seed))
        else:
            raise ValueError(f"unknown subset mode {mode!r}; accepted: first, balanced")
        return dataclasses.replace(self, train_x=self.train_x[idx].clone(), train_y=self.train_y[idx].clone(),
                                   source=f"{self.source} (subset {mode} {n})")

    def test_subset(self, n: int) -> ImageData:
        """A copy whose test split keeps the first ``n // K`` images of every class (storage order).

        Deterministic, so every run is evaluated on the same images, and class-balanced, so a class-sorted
        test folder still tests every class (its first ``n`` images would be one or two classes).

        Args:
            n: number of test images to keep (``1 <= n``; ``n >= N_test`` keeps everything); the remainder
                of ``n // K`` goes to the first classes.

        Raises:
            ValueError: for ``n < 1`` or a class with too few test images.
        """
        if n < 1:
            raise ValueError(f"test subset size must be >= 1, got {n}")
        if n >= self.num_test:
            return self
        idx = _balanced_index(self.test_y, n, self.spec.num_classes, None)
        return dataclasses.replace(self, test_x=self.test_x[idx].clone(), test_y=self.test_y[idx].clone(),
                                   source=f"{self.source} (test subset {n})")


def _balanced_index(y: torch.Tensor, n: int, k: int, gen: torch.Generator | None) -> torch.Tensor:
    """Sorted indices of ``n`` items of ``y``, ``n // k`` per class and the remainder over the first classes.

    Args:
        y: (N,) int64 labels in ``[0, k)``.
        n: number of indices to pick.
        k: number of classes.
        gen: draws each class's members at random; ``None`` takes the first ones in storage order.

    Returns:
        (n,) int64 indices into ``y``, ascending (so a subset keeps the storage order).

    Raises:
        ValueError: a class has fewer members than its share.
    """
    parts = []
    for c in range(k):
        members = torch.nonzero(y == c).flatten()
        want = n // k + (1 if c < n % k else 0)
        if want > len(members):
            raise ValueError(f"class {c} has {len(members)} images, {want} requested")
        pick = members[:want] if gen is None else members[torch.randperm(len(members), generator=gen)[:want]]
        parts.append(pick)
    return torch.sort(torch.cat(parts)).values


# --------------------------------------------------------------------------------------------------------
# synthetic data


def synthetic_spec(num_classes: int = 10, image_size: int = 32) -> DatasetSpec:
    """The :class:`DatasetSpec` of :func:`synthetic_data` (CIFAR variant up to 32 px, else TinyImageNet)."""
    variant = "cifar" if image_size <= 32 else "tiny"
    return DatasetSpec("synthetic", num_classes, image_size, variant, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def synthetic_data(
    num_classes: int = 10,
    train_per_class: int = 64,
    test_per_class: int = 32,
    image_size: int = 32,
    seed: int = 0,
    noise: float = 40.0,
) -> ImageData:
    """A small learnable image-classification task for tests and smoke runs (milliseconds to build).

    Class ``k`` has its own base colour and its own stripe pattern (orientation and frequency); every image
    adds a random phase to the stripes, a random brightness shift and Gaussian pixel noise, so a small CNN
    needs a few hundred steps, not one, to solve it, and augmentation does not destroy the signal.

    Args:
        num_classes: K.
        train_per_class: training images per class.
        test_per_class: test images per class.
        image_size: side of the square images, pixels.
        seed: the task (colours, patterns) and the samples are a pure function of the arguments.
        noise: std of the per-pixel Gaussian noise, in 0..255 units.

    Returns:
        An :class:`ImageData` with spec :func:`synthetic_spec` and classes ``"class0"...``.
    """
    rng = np.random.default_rng(seed)
    colours = rng.uniform(50, 205, size=(num_classes, 3))
    angles = rng.uniform(0, math.pi, size=num_classes)
    freqs = rng.uniform(1.5, 4.0, size=num_classes)
    yy, xx = np.meshgrid(np.arange(image_size), np.arange(image_size), indexing="ij")

    def make(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        n = len(labels)
        a, f = angles[labels][:, None, None], freqs[labels][:, None, None]
        phase = rng.uniform(0, 2 * math.pi, size=(n, 1, 1))
        proj = (np.cos(a) * xx + np.sin(a) * yy) * (2 * math.pi * f / image_size)
        stripes = 45.0 * np.sin(proj + phase)  # (n, H, W)
        img = colours[labels][:, :, None, None] + stripes[:, None] + rng.uniform(-25, 25, size=(n, 1, 1, 1))
        img = img + rng.normal(0, noise, size=img.shape)
        x = torch.from_numpy(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        return x, torch.from_numpy(labels.astype(np.int64))

    train_x, train_y = make(train_per_class)
    test_x, test_y = make(test_per_class)
    spec = synthetic_spec(num_classes, image_size)
    classes = tuple(f"class{k}" for k in range(num_classes))
    return ImageData(spec, classes, train_x, train_y, test_x, test_y, f"synthetic(seed={seed})")


def smoke_data(dataset: str = "cifar10", seed: int = 0) -> ImageData:
    """Synthetic data shaped like ``dataset`` (its class count and image size), for smoke runs.

    Args:
        dataset: a name of :data:`~nslab.data.specs.DATASETS`.
        seed: see :func:`synthetic_data`.

    Returns:
        About 640 training and 200 test images (at least 4 and 2 per class) carrying ``dataset``'s spec
        with the synthetic normalisation.

    Raises:
        ValueError: an unknown dataset name.
    """
    spec = dataset_spec(dataset)
    d = synthetic_data(
        num_classes=spec.num_classes,
        train_per_class=max(4, 640 // spec.num_classes),
        test_per_class=max(2, 200 // spec.num_classes),
        image_size=spec.image_size,
        seed=seed,
    )
    # The models are built for ``dataset``: carry its spec so class count and size checks line up.
    return dataclasses.replace(d, spec=dataclasses.replace(spec, mean=d.spec.mean, std=d.spec.std))
