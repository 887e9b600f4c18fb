"""Datasets as uint8 tensors in memory, and batches built on the training device.

Every dataset kind ends up as one :class:`ImageData`: ``(N, 3, H, W)`` uint8 train/test tensors, int64
labels, the class names and the :class:`~nslab.datasets.DatasetSpec` that fixes normalisation.
Sources:

- CIFAR-10/100 through torchvision (its ``cifar-10-batches-py`` / ``cifar-100-python`` pickles,
  downloaded into the data root when missing and ``download=True``);
- the official ``tiny-imagenet-200`` folder or zip (validation images regrouped by class);
- any ImageFolder tree ``ROOT/train/<class>/...`` + ``ROOT/test/<class>/...`` (or ``val/``), decoded
  once and cached on disk so the next load takes seconds;
- :func:`synthetic_data`, a small learnable task for tests.

:class:`DeviceBatches` moves a split to the training device once and does sampling, augmentation
(RandomCrop + flip, plus rotation for TinyImageNet, distributed exactly like the torchvision transforms
of the authors' release) and normalisation as batched tensor ops there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DATASETS, DatasetSpec
from .io import atomic_write

__all__ = [
    "CIFAR10_CLASSES",
    "DatasetLayoutError",
    "DeviceBatches",
    "ImageData",
    "crop_flip",
    "crop_rotate_flip",
    "default_cache_dir",
    "load_dataset",
    "normalize",
    "resolve_data_root",
    "synthetic_data",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""torchvision's CIFAR-10 class order (label index = position)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File endings read as images in folder datasets (torchvision's ImageFolder list, case-insensitive)."""

_CACHE_FORMAT = 1  # bump when the decoded-cache content changes
_TINY_ZIP = "tiny-imagenet-200.zip"
_TINY_DIR = "tiny-imagenet-200"

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


# --------------------------------------------------------------------------------------------------------
# paths


def default_cache_dir() -> Path:
    """nslab's cache directory: ``$NSLAB_CACHE``, else ``$XDG_CACHE_HOME/nslab``, else ``~/.cache/nslab``."""
    if os.environ.get("NSLAB_CACHE"):
        return Path(os.environ["NSLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nslab"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root to use: ``data_root`` if given, else ``$NSLAB_DATA``, else ``<cache dir>/data``."""
    if data_root is not None:
        return Path(data_root).expanduser()
    if os.environ.get("NSLAB_DATA"):
        return Path(os.environ["NSLAB_DATA"]).expanduser()
    return default_cache_dir() / "data"


# --------------------------------------------------------------------------------------------------------
# the in-memory dataset


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
    """Sorted indices of ``n`` items of ``y``: ``n // k`` per class, the remainder over the first classes;
    drawn with ``gen``, or the first ones in storage order when ``gen`` is ``None``."""
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


# --------------------------------------------------------------------------------------------------------
# file sources (a folder or a zip) and decoding


class _Source:
    """Read-only access to the files of a folder or of a zip archive by relative POSIX path."""

    def __init__(self, path: Path):
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        if self._zip is not None:
            self._names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
            self._sizes = {i.filename: i.file_size for i in self._zip.infolist()}

    def list(self, prefix: str = "") -> list[str]:
        """All file paths under ``prefix`` (a folder path ending in '/', or ''), sorted."""
        if self._zip is not None:
            return [n for n in self._names if n.startswith(prefix)]
        base = self.path / prefix if prefix else self.path
        out = []
        for dirpath, _, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.path).as_posix()
            out.extend(f if rel == "." else f"{rel}/{f}" for f in files)
        return sorted(out)

    def read(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(rel)
        return (self.path / rel).read_bytes()

    def size(self, rel: str) -> int:
        if self._zip is not None:
            return self._sizes[rel]
        return (self.path / rel).stat().st_size

    def fingerprint(self, rels: Sequence[str]) -> str:
        """A hash of the file names and sizes (a zip: also its own size and mtime)."""
        h = hashlib.sha1()
        if self._zip is not None:
            st = self.path.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        for r in rels:
            h.update(f"{r}:{self.size(r)}\n".encode())
        return h.hexdigest()


def _decode_one(data: bytes, name: str, size: int) -> torch.Tensor:
    """Decode one image file's bytes to a (3, size, size) uint8 RGB tensor (PIL; greyscale/CMYK converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.array(im.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot decode image {name}: {e}") from e
    if arr.shape != (size, size, 3):
        raise ValueError(f"image {name} is {arr.shape[:2]} pixels; this dataset needs {size}x{size}")
    return torch.from_numpy(arr).permute(2, 0, 1)


def _decode_files(source: _Source, rels: Sequence[str], size: int, desc: str, progress: bool) -> torch.Tensor:
    """Decode ``rels`` into one (N, 3, size, size) uint8 tensor, chunked over a small thread pool."""
    from tqdm.auto import tqdm

    out = torch.empty((len(rels), 3, size, size), dtype=torch.uint8)
    chunk = 512

    def work(start: int) -> int:
        names = rels[start : start + chunk]
        for i, name in enumerate(names):
            out[start + i] = _decode_one(source.read(name), name, size)
        return len(names)

    bar = tqdm(total=len(rels), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if source._zip is not None:
            # one ZipFile handle is not safe to share across threads: read and decode sequentially
            for start in range(0, len(rels), chunk):
                bar.update(work(start))
        else:
            # file reads and PIL's decoder release the GIL, so a few threads overlap I/O and decoding
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                for n in pool.map(work, range(0, len(rels), chunk)):
                    bar.update(n)
    finally:
        bar.close()
    return out


def _cache_path(cache_dir: Path, kind: str, source: Path, options: str) -> Path:
    key = hashlib.sha1(f"{_CACHE_FORMAT}|{kind}|{source.resolve()}|{options}".encode()).hexdigest()[:16]
    return cache_dir / "decoded" / f"{kind}-{source.resolve().name}-{key}.pt"


def _load_or_decode(cache_file: Path | None, fingerprint: str, build: Callable[[], dict]) -> dict:
    """Return the decoded dict from ``cache_file`` when its fingerprint matches, else build and store it."""
    if cache_file is not None and cache_file.exists():
        try:
            blob = torch.load(cache_file, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
            blob = None  # a truncated or foreign file: decode again and overwrite it
        if isinstance(blob, dict) and blob.get("fingerprint") == fingerprint:
            return blob
    blob = build()
    blob["fingerprint"] = fingerprint
    if cache_file is not None:
        try:
            atomic_write(cache_file, lambda p: torch.save(blob, p))
        except OSError:  # a read-only cache directory only costs the next load a re-decode
            pass
    return blob


# --------------------------------------------------------------------------------------------------------
# layouts


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_dirs(split_dir: Path) -> list[str]:
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


def _load_image_folder(spec: DatasetSpec, root: Path, cache_dir: Path | None, progress: bool) -> ImageData:
    train_dir, test_dir = _folder_layout(root)  # type: ignore[misc]
    classes = _order_classes(_class_dirs(train_dir), spec)
    if len(classes) != spec.num_classes:
        raise DatasetLayoutError(
            f"{train_dir} has {len(classes)} class folders; dataset {spec.name!r} has {spec.num_classes}"
        )
    unknown = sorted(set(_class_dirs(test_dir)) - set(classes))
    if unknown:
        raise DatasetLayoutError(f"{test_dir} has class folders missing from {train_dir}: {unknown[:5]}")
    source = _Source(root)
    index = {c: k for k, c in enumerate(classes)}

    def listing(split_dir: Path) -> tuple[list[str], list[int]]:
        rels, labels = [], []
        for c in classes:
            if not (split_dir / c).is_dir():
                continue
            prefix = f"{split_dir.name}/{c}/"
            files = [r for r in source.list(prefix) if _is_image(r)]
            rels += files
            labels += [index[c]] * len(files)
        return rels, labels

    train_rels, train_labels = listing(train_dir)
    test_rels, test_labels = listing(test_dir)
    for split_dir, rels in ((train_dir, train_rels), (test_dir, test_rels)):
        if not rels:
            raise DatasetLayoutError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}")
    fingerprint = source.fingerprint(train_rels + test_rels)

    def build() -> dict:
        return {
            "train_x": _decode_files(source, train_rels, spec.image_size, f"decode {train_dir}", progress),
            "test_x": _decode_files(source, test_rels, spec.image_size, f"decode {test_dir}", progress),
            "train_y": torch.tensor(train_labels, dtype=torch.int64),
            "test_y": torch.tensor(test_labels, dtype=torch.int64),
            "classes": list(classes),
        }

    cache = _cache_path(cache_dir, f"folder-{spec.name}", root, "") if cache_dir else None
    blob = _load_or_decode(cache, fingerprint, build)
    return ImageData(
        spec,
        tuple(blob["classes"]),
        blob["train_x"],
        blob["train_y"],
        blob["test_x"],
        blob["test_y"],
        str(root),
    )


_TV_CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py"), "cifar100": ("CIFAR100", "cifar-100-python")}


def _cifar_root(spec: DatasetSpec, root: Path) -> Path | None:
    """The torchvision root for ``spec`` under ``root`` (``root`` itself may be the extracted folder)."""
    folder = _TV_CIFAR[spec.name][1]
    if (root / folder).is_dir():
        return root
    if root.name == folder and root.is_dir():
        return root.parent
    return None


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
    import torchvision

    cls = getattr(torchvision.datasets, _TV_CIFAR[spec.name][0])
    cls(root=str(root), train=True, download=True)


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
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _load_tiny_official(
    spec: DatasetSpec, location: Path, test_per_class: int | None, cache_dir: Path | None, progress: bool
) -> ImageData:
    source = _Source(location)
    prefix = ""
    if source._zip is not None:  # the official zip nests everything under tiny-imagenet-200/
        tops = {n.split("/", 1)[0] for n in source.list() if "/" in n}
        if _TINY_DIR in tops:
            prefix = f"{_TINY_DIR}/"
        try:
            source.read(f"{prefix}wnids.txt")
        except KeyError:
            raise DatasetLayoutError(f"{location} is a zip without {prefix}wnids.txt.\n{ACCEPTED_LAYOUTS}") from None
    wnids = source.read(f"{prefix}wnids.txt").decode().split()
    # The release trains with ImageFolder on train/, whose label order is the sorted folder names.
    classes = sorted(wnids)
    index = {w: k for k, w in enumerate(classes)}

    train_rels, train_labels = [], []
    files = [r for r in source.list(f"{prefix}train/") if _is_image(r)]
    for r in files:
        wnid = r[len(prefix) :].split("/")[1]
        if wnid not in index:
            raise DatasetLayoutError(f"{location}: {r} is in a class folder not listed in wnids.txt")
        train_rels.append(r)
        train_labels.append(index[wnid])

    # Test split: the official validation set regrouped by class. The release moved the first 25 images
    # per class (in directory-listing order, which is filesystem-dependent) to val/ and tested on the
    # other 25; we take a deterministic 25 per class in file-name order (val_0, val_1, ...), or all 50.
    ann = source.read(f"{prefix}val/val_annotations.txt").decode().splitlines()
    by_class: dict[str, list[str]] = {}
    for line in ann:
        parts = line.split("\t")
        if len(parts) >= 2:
            by_class.setdefault(parts[1], []).append(parts[0])
    test_rels, test_labels = [], []
    for wnid in classes:
        names = sorted(by_class.get(wnid, []), key=_natural_key)
        if test_per_class is not None:
            names = names[:test_per_class]
        test_rels += [f"{prefix}val/images/{n}" for n in names]
        test_labels += [index[wnid]] * len(names)
    if not train_rels or not test_rels:
        raise DatasetLayoutError(f"{location}: no training or validation images found.\n{ACCEPTED_LAYOUTS}")
    fingerprint = source.fingerprint(train_rels + test_rels)

    def build() -> dict:
        return {
            "train_x": _decode_files(source, train_rels, spec.image_size, "decode tiny train", progress),
            "test_x": _decode_files(source, test_rels, spec.image_size, "decode tiny val", progress),
            "train_y": torch.tensor(train_labels, dtype=torch.int64),
            "test_y": torch.tensor(test_labels, dtype=torch.int64),
            "classes": classes,
        }

    opts = f"test_per_class={test_per_class}"
    cache = _cache_path(cache_dir, "tinyimagenet", location, opts) if cache_dir else None
    blob = _load_or_decode(cache, fingerprint, build)
    return ImageData(
        spec, tuple(blob["classes"]), blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"],
        str(location),
    )  # fmt: skip


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
        data_root: see :func:`resolve_data_root`.
        download: let torchvision download CIFAR into the root when it is not there.
        cache_dir: where decoded folder datasets are cached (``<dir>/decoded/*.pt``); default
            :func:`default_cache_dir`. Pass ``False``-like ``""`` to disable the cache.
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

    if name == "tinyimagenet":
        loc = _tiny_location(root) if root.exists() else None
        if loc is not None:
            return _load_tiny_official(spec, loc, tiny_test_per_class, cdir, progress)
    if root.is_dir() and _folder_layout(root) is not None:
        return _load_image_folder(spec, root, cdir, progress)
    if name in _TV_CIFAR:
        tv_root = _cifar_root(spec, root) if root.exists() else None
        if tv_root is not None:
            return _read_cifar_pickles(spec, tv_root)
        if download:
            try:
                root.mkdir(parents=True, exist_ok=True)
                _download_cifar(spec, root)
            except (OSError, RuntimeError) as e:  # no network, no permission, a corrupt archive, ...
                raise DatasetLayoutError(
                    f"{name}: no dataset found under {root} and the download into it failed ({e}).\n{ACCEPTED_LAYOUTS}"
                ) from e
            return _read_cifar_pickles(spec, root)
    what = "does not exist" if not root.exists() else "holds no readable layout for " + repr(name)
    hint = "" if name not in _TV_CIFAR or download else " (download=False)"
    raise DatasetLayoutError(f"data root {root} {what}{hint}.\n{ACCEPTED_LAYOUTS}")


# --------------------------------------------------------------------------------------------------------
# augmentation and normalisation (batched tensor ops on any device)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, 3, H, W) images -> float32 ``(x / 255 - mean) / std`` per channel (ToTensor + Normalize)."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    # one fused multiply-add: x * (1 / (255 s)) + (-m / s)
    return torch.addcmul(-m / s, x.float(), 1.0 / (255.0 * s))


def crop_flip(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int = 4
) -> torch.Tensor:
    """Zero-padded crops, then horizontal flips, of a batch (torchvision RandomCrop + RandomHorizontalFlip).

    Output pixel ``(r, c)`` of image ``b`` is pixel ``(r + dy - padding, c' + dx - padding)`` of the input,
    with ``c' = W - 1 - c`` where ``flip[b]`` else ``c``, and 0 outside the input.

    Args:
        x: (B, C, H, W) images, any dtype (uint8 in the pipeline).
        dy, dx: (B,) integer crop offsets in the padded image, in ``[0, 2 * padding]``.
        flip: (B,) bool, flip horizontally.
        padding: zero padding on every side, pixels.

    Returns:
        (B, C, H, W) tensor of ``x``'s dtype.
    """
    b, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    xp = F.pad(x, (padding, padding, padding, padding))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy.view(b, 1) + ar_h  # (B, H)
    cols = dx.view(b, 1) + torch.where(flip.view(b, 1), w - 1 - ar_w, ar_w)  # (B, W)
    idx = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return xp.view(b, c, hp * wp).gather(2, idx).view(b, c, h, w)


def crop_rotate_flip(
    x: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    angle: torch.Tensor,
    flip: torch.Tensor,
    padding: int = 4,
) -> torch.Tensor:
    """RandomCrop(padding) -> RandomRotation -> RandomHorizontalFlip as one batched nearest-neighbour warp.

    Matches torchvision on PIL images (the release): zero-padded crop at ``(dy, dx)``, rotation by
    ``angle`` degrees counter-clockwise about the image centre with nearest interpolation and zero fill,
    then the flip. Pixels can differ from PIL only where a sample falls exactly between two pixels.

    Args:
        x: (B, C, H, W) float images (values in 0..255 before normalisation).
        dy, dx: (B,) crop offsets in ``[0, 2 * padding]``.
        angle: (B,) rotation angles, degrees.
        flip: (B,) bool.
        padding: crop padding, pixels.

    Returns:
        (B, C, H, W) float tensor.
    """
    b, c, h, w = x.shape
    theta_rad = -torch.deg2rad(angle.float())  # PIL's rotate() maps output -> input with -angle
    cos, sin = torch.cos(theta_rad), torch.sin(theta_rad)
    s = 1.0 - 2.0 * flip.float()  # -1 flips the output's x axis before rotating back
    tx = 2.0 * (dx.float() - padding) / w
    ty = 2.0 * (dy.float() - padding) / h
    # normalised (align_corners=False) coordinates: output (u, v) -> input; the rotation block is in
    # pixel units, which are the same on both axes because the images are square
    theta = torch.stack([torch.stack([cos * s, sin * h / w, tx], 1), torch.stack([-sin * s * w / h, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class DeviceBatches:
    """One split of an :class:`ImageData`, resident on the training device, served as ready batches.

    The uint8 images are copied to ``device`` once. Each pass draws a permutation (when shuffling) and the
    augmentation parameters from a generator seeded by the ``seed`` passed to :meth:`iterate`, so a pass
    is a pure function of that seed (which makes resumed training bit-identical on CPU).

    Args:
        x: (N, 3, H, W) uint8 images.
        y: (N,) int64 labels.
        spec: supplies normalisation and the augmentation kind (``variant``).
        device: where batches are built and returned.
        batch_size: images per batch.
        train: shuffle and augment (CIFAR variant: RandomCrop(H, padding 4) + flip; TinyImageNet variant:
            RandomCrop(H, 4) + RandomRotation(20) + flip); otherwise fixed order, no augmentation.
        augment: with ``train``, set False to only shuffle.
        drop_last: drop the last incomplete batch.
        channels_last: return batches in channels-last memory format.
        padding: zero padding of the random crop, pixels (4 in the paper).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        spec: DatasetSpec,
        device: torch.device | str,
        batch_size: int,
        train: bool = False,
        augment: bool = True,
        drop_last: bool = False,
        channels_last: bool = False,
        padding: int = 4,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.spec = spec
        self.batch_size = batch_size
        self.train = train
        self.augment = augment and train
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.padding = padding
        self.degrees = 20.0 if spec.variant == "tiny" else 0.0

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_images(self) -> int:
        """Images served per pass."""
        n = self.x.shape[0]
        return (n // self.batch_size) * self.batch_size if self.drop_last else n

    def iterate(self, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: yields ``(images, labels)``, (B, 3, H, W) float32 normalised and (B,) int64."""
        n = self.x.shape[0]
        gen = torch.Generator(device=self.device).manual_seed(int(seed)) if self.train else None
        order = torch.randperm(n, generator=gen, device=self.device) if self.train else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            if order is None:
                xb, yb = self.x[sl], self.y[sl]
            else:
                idx = order[sl]
                xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = self._augment(xb, gen)
            out = normalize(xb, self.spec.mean, self.spec.std)
            if self.channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
            yield out, yb

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(0)

    def _augment(self, xb: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        b, dev, p = xb.shape[0], self.device, self.padding
        dy = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=dev)
        flip = torch.rand(b, generator=gen, device=dev) < 0.5
        if self.degrees:
            angle = (torch.rand(b, generator=gen, device=dev) * 2 - 1) * self.degrees
            warped = crop_rotate_flip(xb.float(), dy, dx, angle, flip, p)
            return warped.round_().to(torch.uint8)  # exact: nearest sampling only moves pixels
        return crop_flip(xb, dy, dx, flip, p)
