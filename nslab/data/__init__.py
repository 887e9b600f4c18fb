"""Datasets as uint8 tensors in memory, and batches built on the training device.

Every dataset kind ends up as one :class:`ImageData`: ``(N, 3, H, W)`` uint8 train/test tensors, int64
labels, the class names and the :class:`DatasetSpec` that fixes normalisation. Modules:

- :mod:`~nslab.data.specs`: dataset names and their fixed facts (:data:`DATASETS`, :func:`dataset_spec`);
- :mod:`~nslab.data.images`: :class:`ImageData` and :func:`synthetic_data`, a small learnable task for tests
  (:func:`smoke_data`: one shaped like a real dataset);
- :mod:`~nslab.data.sources`: :func:`load_dataset` for CIFAR-10/100 (torchvision's pickles, downloaded
  when missing), the official TinyImageNet folder or zip, and any ImageFolder tree;
- :mod:`~nslab.data.cache`: folder datasets decoded once and cached on disk, so the next load takes seconds;
- :mod:`~nslab.data.augment`: RandomCrop + flip (+ rotation for TinyImageNet), distributed exactly like
  the torchvision transforms of the authors' release, and normalisation, as batched tensor ops;
- :mod:`~nslab.data.batches`: :class:`DeviceBatches`, a split moved to the training device once and
  sampled, augmented and normalised there.

Where the data lives is decided by :func:`~nslab.paths.resolve_data_root`, re-exported here.
"""

from ..paths import default_cache_dir, resolve_data_root
from .augment import crop_flip, crop_rotate_flip, normalize
from .batches import DeviceBatches
from .images import ImageData, smoke_data, synthetic_data, synthetic_spec
from .sources import ACCEPTED_LAYOUTS, IMAGE_EXTENSIONS, DatasetLayoutError, load_dataset
from .specs import CIFAR10_CLASSES, DATASETS, DatasetSpec, dataset_spec

__all__ = [
    "ACCEPTED_LAYOUTS",
    "CIFAR10_CLASSES",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "DatasetLayoutError",
    "DatasetSpec",
    "DeviceBatches",
    "ImageData",
    "crop_flip",
    "crop_rotate_flip",
    "dataset_spec",
    "default_cache_dir",
    "load_dataset",
    "normalize",
    "resolve_data_root",
    "smoke_data",
    "synthetic_data",
    "synthetic_spec",
]
