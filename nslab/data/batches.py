"""Batches built on the training device: one split resident there, sampled, augmented and normalised."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .augment import augment, cat_params, draw_params, normalize, normalizer
from .specs import DatasetSpec

__all__ = ["DeviceBatches"]


class DeviceBatches:
    """One split of an :class:`~nslab.data.ImageData`, resident on the training device, served as ready batches.

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
        chunk: batches gathered and augmented by one set of tensor ops (``None``: 16 on CUDA, where each
            op costs a kernel launch whatever its size, 1 on the CPU, where small batches stay in cache).
            The batches are the same bit for bit whatever the chunk: the draws stay per batch, in order,
            and every image is transformed on its own.
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
        chunk: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"chunk must be an integer >= 1 or None, got {chunk!r}")
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
        self.chunk = chunk if chunk is not None else 16 if self.device.type == "cuda" else 1
        self._norm = normalizer(spec.mean, spec.std, self.device)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_images(self) -> int:
        """Images served per pass."""
        n = self.x.shape[0]
        return (n // self.batch_size) * self.batch_size if self.drop_last else n

    def iterate(self, seed: int = 0, *, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass, or its tail from batch ``start`` on.

        Args:
            seed: seeds the pass's shuffle and augmentation (unused for a test split).
            start: index of the first batch to yield. The batches before it are skipped without building
                them, but their random draws are replayed, so the result is exactly (bit for bit) the
                tail of ``iterate(seed)``: an interrupted epoch resumes where it stopped. ``start >=
                len(self)`` yields nothing.

        Yields:
            ``(images, labels)``: (B, 3, H, W) float32 normalised images and (B,) int64 labels on the
            device; B is ``batch_size`` except possibly for the last batch.

        Raises:
            ValueError: a negative ``start`` (raised here, not at the first ``next``).
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        return self._pass(seed, int(start))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(0)

    def _batch_slice(self, i: int) -> slice:
        """Positions of batch ``i`` in the pass's order."""
        return slice(i * self.batch_size, min(self.x.shape[0], (i + 1) * self.batch_size))

    def _pass(self, seed: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        gen = torch.Generator(device=self.device).manual_seed(int(seed)) if self.train else None
        # the permutation is drawn first and whole, so skipping batches never changes it
        order = torch.randperm(n, generator=gen, device=self.device) if self.train else None
        if self.augment:
            for i in range(min(start, len(self))):
                sl = self._batch_slice(i)
                draw_params(sl.stop - sl.start, self.padding, self.degrees, gen, self.device)
        for c in range(start, len(self), self.chunk):
            parts = [self._batch_slice(i) for i in range(c, min(c + self.chunk, len(self)))]
            sl = slice(parts[0].start, parts[-1].stop)
            if order is None:
                xc, yc = self.x[sl], self.y[sl]
            else:
                idx = order[sl]
                xc, yc = self.x[idx], self.y[idx]
            if self.augment:
                params = [draw_params(p.stop - p.start, self.padding, self.degrees, gen, self.device) for p in parts]
                xc = augment(xc, params[0] if len(params) == 1 else cat_params(params), self.padding)
            # normalised and laid out once per chunk; a batch is a slice of it (still channels-last contiguous)
            xc = normalize(xc, self.spec.mean, self.spec.std, self._norm)
            if self.channels_last:
                xc = xc.contiguous(memory_format=torch.channels_last)
            for p in parts:
                yield xc[p.start - sl.start:p.stop - sl.start], yc[p.start - sl.start:p.stop - sl.start]
