"""Pieces shared by the width-vector builders."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class Gate(nn.Identity):
    """Marks a searchable channel group (one entry of the width vector).

    It computes nothing and owns no parameters, so models stay usable (and parameter counts exact)
    without pruning; `nslab.search.prune` hooks these modules to read the Taylor-FO gate gradient
    ``sum(z * dL/dz)`` of a constant gate g = 1 at this point.

    Args:
        index: position of the gated width in the width vector (0-based).
        dim: the channel dimension of the gated tensor: 1 for (N, C, H, W) maps, -1 for a channels-last
            (N, H, W, C) output (a traced network's Linear or LayerNorm, as in ConvNeXt's blocks).
    """

    def __init__(self, index: int, dim: int = 1):
        super().__init__()
        self.index, self.dim = index, dim

    def extra_repr(self) -> str:
        return f"index={self.index}" + (f", dim={self.dim}" if self.dim != 1 else "")


def check_widths(arch: str, widths: Sequence[int], expected_len: int) -> list[int]:
    """Validate a width vector: ``expected_len`` positive integers. Returns it as a list of ints."""
    try:
        out = [int(w) for w in widths]
    except (TypeError, ValueError):
        raise ValueError(f"{arch}: widths must be a sequence of integers, got {widths!r}") from None
    if any(o != w for o, w in zip(out, widths)):
        raise ValueError(f"{arch}: widths must be integers, got {list(widths)!r}")
    if len(out) != expected_len:
        raise ValueError(f"{arch}: expected {expected_len} widths, got {len(out)}: {out}")
    bad = [w for w in out if w < 1]
    if bad:
        raise ValueError(f"{arch}: widths must be positive integers, got {out}")
    return out


def conv_bn_count(cin: int, cout: int, k: int, bias: bool, groups: int = 1) -> int:
    """Parameters of a ``k x k`` conv (``cin -> cout``) followed by a BatchNorm over ``cout``."""
    return k * k * (cin // groups) * cout + (cout if bias else 0) + 2 * cout
