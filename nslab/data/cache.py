"""The decoded-image cache: image files of a folder or zip, decoded once to uint8 tensors and kept on disk.

Decoding 100k JPEGs takes minutes; loading the resulting tensors takes seconds. A cache file holds a dict
``{"train_x", "test_x", "train_y", "test_y", "classes", "fingerprint"}`` saved with :func:`torch.save`
under ``<cache dir>/decoded/``. Its name depends on the cache format, the dataset kind, the source's
resolved path and the load options; the ``fingerprint`` inside (file names and sizes) detects a tree that
changed since, in which case the images are decoded again and the file is overwritten.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write
from ..paths import default_cache_dir

__all__ = ["ImageSource", "Split", "cache_path", "decode_splits", "default_cache_dir"]

_CACHE_FORMAT = 1  # bump when the decoded-cache content changes

Split = tuple[list[str], list[int]]
"""One split of a file dataset: relative image paths and their labels, in the same order."""


class ImageSource:
    """Read-only access to the files of a folder or of a zip archive by relative POSIX path.

    Args:
        path: a folder, or a zip file (any existing file is opened as a zip).
    """

    def __init__(self, path: Path):
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        if self._zip is not None:
            self._names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
            self._sizes = {i.filename: i.file_size for i in self._zip.infolist()}

    @property
    def is_zip(self) -> bool:
        """Whether the files come from a zip archive (whose handle must not be shared across threads)."""
        return self._zip is not None

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
        """The bytes of file ``rel``; a name missing from a zip raises ``KeyError``."""
        if self._zip is not None:
            return self._zip.read(rel)
        return (self.path / rel).read_bytes()

    def size(self, rel: str) -> int:
        """The (uncompressed) size of file ``rel``, bytes."""
        if self._zip is not None:
            return self._sizes[rel]
        return (self.path / rel).stat().st_size

    def fingerprint(self, rels: Sequence[str]) -> str:
        """A hash of the file names and sizes (a zip: also its own size and mtime).

        Names and sizes, not contents: hashing gigabytes would cost as much as decoding them, and a
        replaced image almost always changes its size (or, in a zip, the archive's mtime).
        """
        h = hashlib.sha1()
        if self._zip is not None:
            st = self.path.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        for r in rels:
            h.update(f"{r}:{self.size(r)}\n".encode())
        return h.hexdigest()


def _decode_one(data: bytes, name: str, size: int) -> torch.Tensor:
    """Decode one image file's bytes to a (3, size, size) uint8 RGB tensor (PIL; greyscale/CMYK converted).

    Raises:
        ValueError: undecodable bytes, or an image that is not ``size`` x ``size`` pixels (naming ``name``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.array(im.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot decode image {name}: {e}") from e
    if arr.shape != (size, size, 3):
        raise ValueError(f"image {name} is {arr.shape[:2]} pixels; this dataset needs {size}x{size}")
    return torch.from_numpy(arr).permute(2, 0, 1)


def _decode_files(source: ImageSource, rels: Sequence[str], size: int, desc: str, progress: bool) -> torch.Tensor:
    """Decode ``rels`` into one (N, 3, size, size) uint8 tensor, chunked over a small thread pool.

    Args:
        source: where the files are.
        rels: N relative paths; row ``i`` of the result is ``rels[i]``.
        size: side of the square images, pixels.
        desc: label of the progress bar.
        progress: show a tqdm bar.
    """
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
        if source.is_zip:
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


def cache_path(cache_dir: Path, kind: str, source: Path, options: str) -> Path:
    """The cache file of dataset ``kind`` read from ``source`` with ``options`` (any string), under ``cache_dir``.

    The key hashes the resolved path, so the same tree reached through two spellings shares one file.
    """
    key = hashlib.sha1(f"{_CACHE_FORMAT}|{kind}|{source.resolve()}|{options}".encode()).hexdigest()[:16]
    return cache_dir / "decoded" / f"{kind}-{source.resolve().name}-{key}.pt"


def _load_or_decode(cache_file: Path | None, fingerprint: str, build: Callable[[], dict]) -> dict:
    """Return the decoded dict from ``cache_file`` when its fingerprint matches, else build and store it.

    Args:
        cache_file: the cache file (need not exist); ``None`` disables the cache.
        fingerprint: the source's current :meth:`ImageSource.fingerprint`.
        build: decodes the dataset into a fresh dict of tensors and plain values.

    Returns:
        The dict, with ``"fingerprint"`` added.
    """
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


def decode_splits(
    source: ImageSource,
    train: Split,
    test: Split,
    classes: list[str],
    size: int,
    descs: tuple[str, str],
    cache_file: Path | None,
    progress: bool,
) -> dict:
    """Both splits of a file dataset, from ``cache_file`` when it is current, else decoded (and cached).

    Args:
        source: where the files are.
        train, test: the splits' file paths and labels.
        classes: the class names, stored with the images.
        size: side of the square images, pixels.
        descs: progress-bar labels of the train and the test split.
        cache_file: see :func:`_load_or_decode`.
        progress: show a tqdm bar while decoding.

    Returns:
        ``{"train_x", "test_x": (N, 3, size, size) uint8, "train_y", "test_y": (N,) int64, "classes",
        "fingerprint"}``.
    """
    fingerprint = source.fingerprint(train[0] + test[0])

    def build() -> dict:
        # the content of cache format 1: changing these keys or their meaning means bumping _CACHE_FORMAT
        return {
            "train_x": _decode_files(source, train[0], size, descs[0], progress),
            "test_x": _decode_files(source, test[0], size, descs[1], progress),
            "train_y": torch.tensor(train[1], dtype=torch.int64),
            "test_y": torch.tensor(test[1], dtype=torch.int64),
            "classes": classes,
        }

    return _load_or_decode(cache_file, fingerprint, build)
