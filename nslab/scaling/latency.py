"""Inference latency, measured the paper's way (a batch of 100, warm-up, then the mean of 80 forward
passes) but correctly: CUDA work is timed with events and synchronised, CPU runs at a fixed thread count.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["forward_times", "measure_latency"]


def forward_times(net: nn.Module, x: torch.Tensor, warmup: int, repeat: int) -> np.ndarray:
    """(repeat,) milliseconds of ``net(x)`` after ``warmup`` untimed calls, under ``torch.no_grad``.

    ``net`` and ``x`` must already be on the same device (and ``net`` in the mode wanted). On CUDA each
    call is timed with CUDA events between synchronisations (GPU execution time, not launch time);
    elsewhere with the wall clock. The caller sets CPU threads.
    """
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            net(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(repeat)]
            for start, end in events:
                start.record()
                net(x)
                end.record()
            torch.cuda.synchronize(x.device)
            times = [start.elapsed_time(end) for start, end in events]
        else:
            for _ in range(repeat):
                t0 = time.perf_counter()
                net(x)
                times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times, dtype=np.float64)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: torch.device | str = "cpu",
    batch: int = 100,
    warmup: int = 20,
    repeat: int = 80,
    threads: int | None = 1,
) -> tuple[float, float]:
    """Time ``repeat`` forward passes of one batch after ``warmup`` untimed ones.

    The model runs in eval mode under ``torch.no_grad``; its mode is restored afterwards. A model that is
    not on ``device`` is measured as a copy there (the argument is never moved). On CUDA each pass is
    timed with CUDA events between synchronisations, so the numbers are GPU execution times, not launch
    times. On CPU each pass is wall-clock time with ``torch.set_num_threads(threads)`` (restored after):
    one thread by default, so numbers compare across machines and do not depend on other load.

    Args:
        model: maps (batch, *input_shape) float32 inputs to anything.
        input_shape: one sample's shape, e.g. ``(3, 32, 32)`` (no batch dimension).
        device: where to run.
        batch: samples per forward pass.
        warmup: untimed passes first (kernel selection, caches, allocator).
        repeat: timed passes.
        threads: CPU thread count during the measurement; ``None`` keeps the current setting.

    Returns:
        ``(mean_ms, std_ms)``: mean and standard deviation (ddof 0) of one pass's latency, milliseconds.

    Raises:
        ValueError: a non-positive ``batch``/``repeat``, negative ``warmup`` or ``input_shape`` with a
            batch dimension (more than 3 entries).
    """
    if batch < 1 or repeat < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, repeat >= 1, warmup >= 0; got {batch}, {repeat}, {warmup}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) > 3:
        raise ValueError(f"input_shape is one sample's shape such as (3, 32, 32), got {shape}")
    dev = torch.device(device)
    params = list(model.parameters()) + list(model.buffers())
    on_device = all(p.device.type == dev.type and (dev.index is None or p.device == dev) for p in params)
    net = model if on_device else copy.deepcopy(model).to(dev)
    was_training = model.training
    x = torch.randn((batch, *shape), device=dev)
    old_threads = torch.get_num_threads()
    if dev.type == "cpu" and threads is not None:
        torch.set_num_threads(threads)
    try:
        net.eval()
        arr = forward_times(net, x, warmup, repeat)
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)
    return float(arr.mean()), float(arr.std())
