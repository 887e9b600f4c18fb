"""Augmentation and normalisation as batched tensor ops on any device.

The random parameters are drawn per batch by :func:`draw_params` and applied by :func:`augment`, which
keeps the draw separate from the (expensive) pixel work: a resumed pass replays only the draws of the
batches it skips (:meth:`~nslab.data.batches.DeviceBatches.iterate` with ``start``).
The distributions are those of the torchvision transforms of the authors' release: RandomCrop(H, padding)
with zero fill, RandomHorizontalFlip, and for TinyImageNet RandomRotation(20) in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["AugmentParams", "augment", "cat_params", "crop_flip", "crop_rotate_flip", "draw_params", "normalize",
           "normalizer"]


def normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """The ``(shift, scale)`` of :func:`normalize`, (1, C, 1, 1) float32 on ``device``: build them once per
    pipeline (a ``torch.tensor`` from Python lists is a host-to-device copy, which stalls a CUDA stream)."""
    m = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1)
    return -m / s, 1.0 / (255.0 * s)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              prepared: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) images -> float32 ``(x / 255 - mean) / std`` per channel (ToTensor + Normalize).

    Args:
        x: (B, 3, H, W) uint8 images, values 0..255.
        mean, std: per-channel statistics in [0, 1] units.
        prepared: ``normalizer(mean, std, x.device)``, to skip building it (same result, bit for bit).

    Returns:
        (B, 3, H, W) float32 tensor on ``x``'s device.
    """
    shift, scale = prepared if prepared is not None else normalizer(mean, std, x.device)
    # one fused multiply-add: x * (1 / (255 s)) + (-m / s)
    return torch.addcmul(shift, x.float(), scale)


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
    # one gather from the flattened padded images: no per-image slicing, so it is one kernel on a GPU
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


class AugmentParams(NamedTuple):
    """The random parameters of one augmented batch of B images.

    Attributes:
        dy, dx: (B,) int64 crop offsets in the padded image, in ``[0, 2 * padding]``.
        flip: (B,) bool, flip horizontally.
        angle: (B,) float32 rotation angles in degrees, or ``None`` without rotation.
    """

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    angle: torch.Tensor | None


def draw_params(
    b: int, padding: int, degrees: float, gen: torch.Generator | None, device: torch.device
) -> AugmentParams:
    """Draw the augmentation of a batch of ``b`` images from ``gen``.

    The draws and their order (dy, dx, flip, then the angle only when ``degrees`` is nonzero) define the
    generator stream that seeded passes, and resumed ones, reproduce bit for bit: do not reorder them.

    Args:
        b: batch size.
        padding: crop padding, pixels: offsets are uniform in ``[0, 2 * padding]``.
        degrees: rotation angles are uniform in ``[-degrees, degrees)``; 0 draws no angle.
        gen: the pass's generator (``None``: torch's global one).
        device: where the parameters are drawn (the generator's device).
    """
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=device)
    flip = torch.rand(b, generator=gen, device=device) < 0.5
    angle = (torch.rand(b, generator=gen, device=device) * 2 - 1) * degrees if degrees else None
    return AugmentParams(dy, dx, flip, angle)


def cat_params(params: Sequence[AugmentParams]) -> AugmentParams:
    """The parameters of several batches as those of one batch of them all, in order (for :func:`augment`
    over a chunk of batches at once: every image is transformed on its own, so the result is the same)."""
    angle = None if params[0].angle is None else torch.cat([p.angle for p in params])
    return AugmentParams(torch.cat([p.dy for p in params]), torch.cat([p.dx for p in params]),
                         torch.cat([p.flip for p in params]), angle)


def augment(x: torch.Tensor, params: AugmentParams, padding: int) -> torch.Tensor:
    """Apply drawn parameters to a batch: :func:`crop_flip`, or :func:`crop_rotate_flip` with an angle.

    Args:
        x: (B, 3, H, W) uint8 images.
        params: from :func:`draw_params` with the same B and ``padding``.
        padding: crop padding, pixels.

    Returns:
        (B, 3, H, W) uint8 images.
    """
    if params.angle is not None:
        warped = crop_rotate_flip(x.float(), params.dy, params.dx, params.angle, params.flip, padding)
        return warped.round_().to(torch.uint8)  # exact: nearest sampling only moves pixels
    return crop_flip(x, params.dy, params.dx, params.flip, padding)
