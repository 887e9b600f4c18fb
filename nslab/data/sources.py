"""Loaders: a data root on disk -> :class:`~nslab.data.images.ImageData`.

:func:`load_dataset` detects the layout under the root (see :data:`ACCEPTED_LAYOUTS`):

- any ImageFolder tree ``ROOT/train/<class>/...`` + ``ROOT/test/<class>/...`` (or ``val/``);
- CIFAR-10/100 as torchvision's ``cifar-10-batches-py`` / ``cifar-100-python`` pickles, downloaded into
  the root when missing and ``download=True``;
- the official ``tiny-imagenet-200`` folder or zip (validation images regrouped by class).

Folder and TinyImageNet images are decoded once and cached (:mod:`nslab.data.cache`); the CIFAR pickles
already hold uint8 arrays and are read directly.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..paths import default_cache_dir, resolve_data_root
from .cache import ImageSource, Split, cache_path, decode_splits
from .images import ImageData, synthetic_data
from .specs import CIFAR10_CLASSES, DATASETS, DatasetSpec

__all__ = ["ACCEPTED_LAYOUTS", "IMAGE_EXTENSIONS", "DatasetLayoutError", "load_dataset"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File endings read as images in folder datasets (torchvision's ImageFolder list, case-insensitive)."""

_TINY_ZIP = "tiny-imagenet-200.zip"
_TINY_DIR = "tiny-imagenet-200"
_TV_CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py"), "cifar100": ("CIFAR100", "cifar-100-python")}
"""torchvision's dataset class and extracted folder name of each CIFAR dataset."""

ACCEPTED_LAYOUTS = (
    "accepted layouts under a data root:\n"
    "  - ImageFolder: ROOT/train/<class>/<image> and ROOT/test/<class>/<image> (or ROOT/val/<class>/...);\n"
    "  - CIFAR (cifar10/cifar100): torchvision's ROOT/cifar-10-batches-py or ROOT/cifar-100-python "
    "(downloaded there when download=True);\n"
    "  - TinyImageNet: ROOT/tiny-imagenet-200/ (wnids.txt, train/<wnid>/images/, val/images + "
    "val/val_annotations.txt), ROOT itself being that folder, or ROOT/tiny-imagenet-200.zip"
)


class DatasetLayoutError(FileNotFoundError):
    """A data root that holds no dataset layout nslab can read; the message names the path and layouts."""


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    tiny_test_per_class: int | None = 25,
    progress: bool = True,
) -> ImageData:
    """Load dataset ``name`` from a data root into memory.

    The layout under the root is detected (see ``ACCEPTED_LAYOUTS``): an ImageFolder tree is used for any
    dataset name (``--dataset cifar10 --data-root /path/cifar10`` with ``train/<class>/*.jpg`` loads as
    CIFAR-10 with torchvision's class order); torchvision's CIFAR pickles for ``cifar10``/``cifar100``
    (downloaded into the root when absent and ``download`` is true); the official TinyImageNet folder or
    zip for ``tinyimagenet``. Folder and TinyImageNet images are decoded once and cached.

    Args:
        name: ``"cifar10"``, ``"cifar100"``, ``"tinyimagenet"`` or ``"synthetic"`` (ignores the root).
        data_root: see :func:`~nslab.paths.resolve_data_root`.
        download: let torchvision download CIFAR into the root when it is not there.
        cache_dir: where decoded folder datasets are cached (``<dir>/decoded/*.pt``); default
            :func:`~nslab.paths.default_cache_dir`. Pass ``False``-like ``""`` to disable the cache.
        tiny_test_per_class: TinyImageNet test images per class taken from the official validation set:
            25 (the paper) or ``None`` for all 50.
        progress: show a tqdm bar while decoding.

    Returns:
        The dataset as an :class:`ImageData`.

    Raises:
        ValueError: unknown dataset name.
        DatasetLayoutError: the root holds no readable layout (the message names the path and the
            accepted layouts), class folders do not match the dataset, or the download failed.
    """
    if name == "synthetic":
        return synthetic_data()
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join([*DATASETS, 'synthetic'])}")
    spec = DATASETS[name]
    root = resolve_data_root(data_root)
    cdir = default_cache_dir() if cache_dir is None else (Path(cache_dir) if cache_dir else None)
    if root.exists() and not root.is_dir() and not (name == "tinyimagenet" and zipfile.is_zipfile(root)):
        raise DatasetLayoutError(f"data root {root} is a file, not a folder.\n{ACCEPTED_LAYOUTS}")

    # detection order matters: a TinyImageNet folder also has a train/ of class folders
    if name == "tinyimagenet":
        loc = _tiny_location(root) if root.exists() else None
        if loc is not None:
            return _load_tiny_official(spec, loc, tiny_test_per_class, cdir, progress)
    if root.is_dir() and _folder_layout(root) is not None:
        return _load_image_folder(spec, root, cdir, progress)
    if name in _TV_CIFAR:
        data = _load_cifar(spec, root, download)
        if data is not None:
            return data
    what = "does not exist" if not root.exists() else "holds no readable layout for " + repr(name)
    hint = "" if name not in _TV_CIFAR or download else " (download=False)"
    raise DatasetLayoutError(f"data root {root} {what}{hint}.\n{ACCEPTED_LAYOUTS}")


def _image_data(spec: DatasetSpec, blob: dict, source: str) -> ImageData:
    """The :class:`ImageData` of a decoded (or cached) dict of :func:`~nslab.data.cache.decode_splits`."""
    return ImageData(
        spec, tuple(blob["classes"]), blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], source
    )


# --------------------------------------------------------------------------------------------------------
# ImageFolder trees


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_dirs(split_dir: Path) -> list[str]:
    """Names of the (non-hidden) sub-folders of ``split_dir``, in directory-listing order."""
    return [d.name for d in os.scandir(split_dir) if d.is_dir() and not d.name.startswith(".")]


def _order_classes(names: Sequence[str], spec: DatasetSpec) -> list[str]:
    """Label order of folder class names: torchvision's order for CIFAR-10 names, numeric order for
    all-digit names, else sorted (what torchvision's ImageFolder does)."""
    if spec.name == "cifar10" and set(names) == set(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    if all(n.isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _folder_layout(root: Path) -> tuple[Path, Path] | None:
    """``(train_dir, test_dir)`` when ``root`` is an ImageFolder tree, else None."""
    train = root / "train"
    if not train.is_dir() or not _class_dirs(train):
        return None
    for name in ("test", "val"):
        test = root / name
        if test.is_dir() and _class_dirs(test):
            return train, test
    return None


def _folder_split(source: ImageSource, split_dir: Path, classes: Sequence[str]) -> Split:
    """The image files of ``split_dir`` (a child of ``source``'s folder), class by class in label order.

    A class folder missing from the split contributes nothing (a test split may lack classes).
    """
    rels: list[str] = []
    labels: list[int] = []
    for label, c in enumerate(classes):
        if not (split_dir / c).is_dir():
            continue
        files = [r for r in source.list(f"{split_dir.name}/{c}/") if _is_image(r)]
        rels += files
        labels += [label] * len(files)
    return rels, labels


def _load_image_folder(spec: DatasetSpec, root: Path, cache_dir: Path | None, progress: bool) -> ImageData:
    """Load the ImageFolder tree at ``root`` (see :func:`_folder_layout`) as dataset ``spec``.

    Raises:
        DatasetLayoutError: the class folders do not match ``spec``, or a split holds no image files.
        ValueError: an undecodable image or one of the wrong size.
    """
    train_dir, test_dir = _folder_layout(root)  # type: ignore[misc]
    classes = _order_classes(_class_dirs(train_dir), spec)
    if len(classes) != spec.num_classes:
        raise DatasetLayoutError(
            f"{train_dir} has {len(classes)} class folders; dataset {spec.name!r} has {spec.num_classes}"
        )
    unknown = sorted(set(_class_dirs(test_dir)) - set(classes))
    if unknown:
        raise DatasetLayoutError(f"{test_dir} has class folders missing from {train_dir}: {unknown[:5]}")
    source = ImageSource(root)
    train = _folder_split(source, train_dir, classes)
    test = _folder_split(source, test_dir, classes)
    for split_dir, (rels, _) in ((train_dir, train), (test_dir, test)):
        if not rels:
            raise DatasetLayoutError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}")
    cache = cache_path(cache_dir, f"folder-{spec.name}", root, "") if cache_dir else None
    descs = (f"decode {train_dir}", f"decode {test_dir}")
    blob = decode_splits(source, train, test, list(classes), spec.image_size, descs, cache, progress)
    return _image_data(spec, blob, str(root))


# --------------------------------------------------------------------------------------------------------
# CIFAR through torchvision's files


def _cifar_root(spec: DatasetSpec, root: Path) -> Path | None:
    """The torchvision root for ``spec`` under ``root`` (``root`` itself may be the extracted folder)."""
    folder = _TV_CIFAR[spec.name][1]
    if (root / folder).is_dir():
        return root
    if root.name == folder and root.is_dir():
        return root.parent
    return None


def _load_cifar(spec: DatasetSpec, root: Path, download: bool) -> ImageData | None:
    """CIFAR from torchvision's pickles under ``root``, downloaded there first when absent and ``download``.

    Returns:
        The dataset, or ``None`` when the pickles are absent and ``download`` is false.

    Raises:
        DatasetLayoutError: the download failed (the message names the root and the cause).
    """
    tv_root = _cifar_root(spec, root) if root.exists() else None
    if tv_root is not None:
        return _read_cifar_pickles(spec, tv_root)
    if not download:
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _download_cifar(spec, root)
    except (OSError, RuntimeError) as e:  # no network, no permission, a corrupt archive, ...
        raise DatasetLayoutError(
            f"{spec.name}: no dataset found under {root} and the download into it failed ({e}).\n{ACCEPTED_LAYOUTS}"
        ) from e
    return _read_cifar_pickles(spec, root)


def _read_cifar_pickles(spec: DatasetSpec, tv_root: Path) -> ImageData:
    """Read torchvision's extracted CIFAR python pickles (the official on-disk format).

    Read directly rather than through ``torchvision.datasets.CIFAR10``, whose constructor re-hashes the
    170 MB archive contents on every load (integrity is checked by torchvision when it downloads).
    """
    folder = tv_root / _TV_CIFAR[spec.name][1]
    if spec.name == "cifar10":
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        meta_file, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        train_files, test_files = ["train"], ["test"]
        meta_file, label_key, names_key = "meta", "fine_labels", "fine_label_names"

    def load(name: str) -> dict:
        path = folder / name
        if not path.is_file():
            raise DatasetLayoutError(f"{spec.name}: missing {path} (torchvision's CIFAR layout).\n{ACCEPTED_LAYOUTS}")
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")  # noqa: S301 -- the dataset's own format
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}

    def split(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [load(f) for f in files]
        data = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])
        labels = np.concatenate([np.asarray(p[label_key], dtype=np.int64) for p in parts])
        return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)

    train_x, train_y = split(train_files)
    test_x, test_y = split(test_files)
    classes = tuple(c.decode() if isinstance(c, bytes) else c for c in load(meta_file)[names_key])
    return ImageData(spec, classes, train_x, train_y, test_x, test_y, str(folder))


def _download_cifar(spec: DatasetSpec, root: Path) -> None:
    """Download and extract ``spec``'s archive into ``root`` (torchvision checks its MD5)."""
    import torchvision

    cls = getattr(torchvision.datasets, _TV_CIFAR[spec.name][0])
    cls(root=str(root), train=True, download=True)


# --------------------------------------------------------------------------------------------------------
# the official TinyImageNet folder or zip


def _tiny_location(root: Path) -> Path | None:
    """The official TinyImageNet folder or zip at or under ``root``."""
    for cand in (root, root / _TINY_DIR):
        if (cand / "wnids.txt").is_file() and (cand / "val" / "val_annotations.txt").is_file():
            return cand
    for cand in (root, root / _TINY_ZIP):
        if cand.is_file() and zipfile.is_zipfile(cand):
            return cand
    return None


def _natural_key(s: str) -> list:
    """Sort key that orders the digit runs of ``s`` numerically (``val_2`` before ``val_10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _tiny_prefix(source: ImageSource, location: Path) -> str:
    """The path prefix of the dataset's files in ``source``: ``"tiny-imagenet-200/"`` in the official zip.

    Raises:
        DatasetLayoutError: a zip without ``wnids.txt`` where expected.
    """
    prefix = ""
    if source.is_zip:  # the official zip nests everything under tiny-imagenet-200/
        tops = {n.split("/", 1)[0] for n in source.list() if "/" in n}
        if _TINY_DIR in tops:
            prefix = f"{_TINY_DIR}/"
        try:
            source.read(f"{prefix}wnids.txt")
        except KeyError:
            raise DatasetLayoutError(f"{location} is a zip without {prefix}wnids.txt.\n{ACCEPTED_LAYOUTS}") from None
    return prefix


def _tiny_train(source: ImageSource, prefix: str, index: dict[str, int], location: Path) -> Split:
    """The training images ``train/<wnid>/images/*``, labelled by ``index[wnid]``, in file-path order.

    Raises:
        DatasetLayoutError: an image in a class folder that ``wnids.txt`` does not list.
    """
    rels: list[str] = []
    labels: list[int] = []
    for r in source.list(f"{prefix}train/"):
        if not _is_image(r):
            continue
        wnid = r[len(prefix) :].split("/")[1]
        if wnid not in index:
            raise DatasetLayoutError(f"{location}: {r} is in a class folder not listed in wnids.txt")
        rels.append(r)
        labels.append(index[wnid])
    return rels, labels


def _tiny_val(source: ImageSource, prefix: str, classes: Sequence[str], per_class: int | None) -> Split:
    """The test split: the official validation set regrouped by class, ``per_class`` images each (``None``: all).

    The release moved the first 25 images per class (in directory-listing order, which is
    filesystem-dependent) to val/ and tested on the other 25; we take a deterministic 25 per class in
    file-name order (val_0, val_1, ...), or all 50.
    """
    by_class: dict[str, list[str]] = {}
    for line in source.read(f"{prefix}val/val_annotations.txt").decode().splitlines():
        parts = line.split("\t")  # file name, wnid, bounding box
        if len(parts) >= 2:
            by_class.setdefault(parts[1], []).append(parts[0])
    rels: list[str] = []
    labels: list[int] = []
    for label, wnid in enumerate(classes):
        names = sorted(by_class.get(wnid, []), key=_natural_key)
        if per_class is not None:
            names = names[:per_class]
        rels += [f"{prefix}val/images/{n}" for n in names]
        labels += [label] * len(names)
    return rels, labels


def _load_tiny_official(
    spec: DatasetSpec, location: Path, test_per_class: int | None, cache_dir: Path | None, progress: bool
) -> ImageData:
    """Load the official TinyImageNet folder or zip at ``location`` (see :func:`_tiny_location`).

    Raises:
        DatasetLayoutError: a zip without ``wnids.txt``, unlisted class folders, or an empty split.
    """
    source = ImageSource(location)
    prefix = _tiny_prefix(source, location)
    wnids = source.read(f"{prefix}wnids.txt").decode().split()
    # The release trains with ImageFolder on train/, whose label order is the sorted folder names.
    classes = sorted(wnids)
    train = _tiny_train(source, prefix, {w: k for k, w in enumerate(classes)}, location)
    test = _tiny_val(source, prefix, classes, test_per_class)
    if not train[0] or not test[0]:
        raise DatasetLayoutError(f"{location}: no training or validation images found.\n{ACCEPTED_LAYOUTS}")
    opts = f"test_per_class={test_per_class}"
    cache = cache_path(cache_dir, "tinyimagenet", location, opts) if cache_dir else None
    descs = ("decode tiny train", "decode tiny val")
    blob = decode_splits(source, train, test, classes, spec.image_size, descs, cache, progress)
    return _image_data(spec, blob, str(location))
