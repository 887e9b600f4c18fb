"""Where work runs: the device a run picks and the torch CPU thread count it runs with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["resolve_device", "torch_threads"]


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (``None`` or 0: unchanged), restoring the count afterwards.

    Torch's thread count is process-wide, so a preset's task, a latency measurement or a CLI command that
    sets it must give it back: the next task in the same process would otherwise inherit it.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
