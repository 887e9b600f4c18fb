"""Inference latency, measured the paper's way (a batch of 100, warm-up, then the mean of 80 forward
passes) but correctly: CUDA work is timed on the GPU, CPU runs at a fixed thread count.

On CUDA the GPU can run a small network faster than Python launches its kernels (a VGG11 at r = 0.25 with a
batch of 100 on an H100): events recorded back to back around eager passes then time the launches, and every
width measures about the same. :data:`PROTOCOLS` names the two ways a CUDA pass is timed:

- ``"graph"`` (the default): the forward is captured once as a CUDA graph; a short ``torch.cuda._sleep`` is
  queued first, long enough that every replay and its event pair are queued before the GPU reaches them, so
  each event pair spans the GPU's execution of one pass (no launch gaps) on the current stream of the input's
  device;
- ``"eager"``: the earlier protocol, kept for comparison: one event pair around each eager pass, nothing queued
  ahead. Where the GPU outruns Python this is the launch time of a pass, not its execution time.

On a CPU every pass is the wall clock (the CPU executes what it launches): both protocols time it the same.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["PROTOCOLS", "forward_times", "measure_latency", "timing_protocol"]

PROTOCOLS = ("graph", "eager")
_CYCLES_PER_MS: dict[int, float] = {}  # per CUDA device: clock cycles of torch.cuda._sleep per millisecond
# replays queued behind one sleep: with their two events each well inside CUDA's queue of pending launches
# (about a thousand), which would otherwise block Python until the sleep ends
_CHUNK = 128


def timing_protocol(device: torch.device | str, protocol: str = "graph") -> str:
    """The name of what :func:`forward_times` measures on ``device``: ``"cpu-wall"``, ``"cuda-graph"`` or
    ``"cuda-eager"`` (what a result should record next to its latency).

    Raises:
        ValueError: ``protocol`` is not one of :data:`PROTOCOLS`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown latency protocol {protocol!r}; accepted: {', '.join(PROTOCOLS)}")
    dev = torch.device(device)
    return f"cuda-{protocol}" if dev.type == "cuda" else f"{dev.type}-wall"


def forward_times(net: nn.Module, x: torch.Tensor, warmup: int, repeat: int, protocol: str = "graph") -> np.ndarray:
    """(repeat,) milliseconds of ``net(x)`` after ``warmup`` untimed calls, under ``torch.no_grad``.

    ``net`` and ``x`` must already be on the same device (and ``net`` in the mode wanted). On CUDA,
    ``protocol`` picks how a pass is timed (see the module docstring): ``"graph"``, the GPU's execution time
    of the captured forward, replayed behind a queued sleep; ``"eager"``, event pairs around eager passes with
    nothing queued ahead (launch-bound where the GPU outruns Python). Elsewhere the wall clock, whatever
    ``protocol``. The caller sets CPU threads.

    Raises:
        ValueError: ``protocol`` is not one of :data:`PROTOCOLS`.
    """
    timing_protocol(x.device, protocol)  # checks the name
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            net(x)
        if x.device.type == "cuda":
            with torch.cuda.device(x.device):
                return _graph_times(net, x, repeat) if protocol == "graph" else _eager_times(net, x, repeat)
        for _ in range(repeat):
            t0 = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times, dtype=np.float64)


def _pairs(n: int) -> list[tuple[torch.cuda.Event, torch.cuda.Event]]:
    return [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]


def _eager_times(net: nn.Module, x: torch.Tensor, repeat: int) -> np.ndarray:
    stream = torch.cuda.current_stream(x.device)
    torch.cuda.synchronize(x.device)
    events = _pairs(repeat)
    for start, end in events:
        start.record(stream)
        net(x)
        end.record(stream)
    torch.cuda.synchronize(x.device)
    return np.asarray([start.elapsed_time(end) for start, end in events], dtype=np.float64)


def _cycles_per_ms(device: torch.device) -> float:
    """Clock cycles of ``torch.cuda._sleep`` per millisecond on ``device`` (measured once)."""
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _CYCLES_PER_MS:
        stream = torch.cuda.current_stream(device)
        (start, end), cycles = _pairs(1)[0], 10_000_000
        start.record(stream)
        torch.cuda._sleep(cycles)
        end.record(stream)
        end.synchronize()
        _CYCLES_PER_MS[key] = cycles / max(start.elapsed_time(end), 1e-3)
    return _CYCLES_PER_MS[key]


def _graph_times(net: nn.Module, x: torch.Tensor, repeat: int, tries: int = 4) -> np.ndarray:
    stream = torch.cuda.current_stream(x.device)
    side = torch.cuda.Stream(x.device)  # capture warm-up off the current stream, as torch's recipe asks
    side.wait_stream(stream)
    with torch.cuda.stream(side):
        for _ in range(2):
            net(x)
    stream.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        net(x)
    torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    for _ in range(3):  # what Python takes to queue one replay and its two events (the GPU is idle: no waits)
        e0, e1 = _pairs(1)[0]
        e0.record(stream)
        graph.replay()
        e1.record(stream)
    launch_ms = (time.perf_counter() - t0) * 1e3 / 3
    torch.cuda.synchronize(x.device)
    times: list[float] = []
    for first in range(0, repeat, _CHUNK):
        chunk, launch_ms = _queued_replays(graph, stream, x.device, min(_CHUNK, repeat - first), launch_ms, tries)
        times += chunk
    return np.asarray(times, dtype=np.float64)


def _queued_replays(graph, stream, device, n: int, launch_ms: float, tries: int) -> tuple[list[float], float]:
    """``n`` replays' GPU times behind one queued sleep, and the launch estimate that sufficed."""
    for _ in range(tries):
        events = _pairs(n)
        # the sleep must outlast queuing every replay, so the GPU never waits on Python inside the timed span
        torch.cuda._sleep(int((2.0 * n * launch_ms + 1.0) * _cycles_per_ms(device)))
        for start, end in events:
            start.record(stream)
            graph.replay()
            end.record(stream)
        ahead = not events[0][0].query()  # the GPU had not reached the first pass when the last was queued
        torch.cuda.synchronize(device)
        if ahead:
            break
        launch_ms *= 4
    else:
        warnings.warn(f"latency: the GPU caught up with the queued replays {tries} times; the times may include "
                      "launch gaps", RuntimeWarning, stacklevel=4)
    return [start.elapsed_time(end) for start, end in events], launch_ms


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: torch.device | str = "cpu",
    batch: int = 100,
    warmup: int = 20,
    repeat: int = 80,
    threads: int | None = 1,
    protocol: str = "graph",
) -> tuple[float, float]:
    """Time ``repeat`` forward passes of one batch after ``warmup`` untimed ones.

    The model runs in eval mode under ``torch.no_grad``; its mode is restored afterwards. A model that is
    not on ``device`` is measured as a copy there (the argument is never moved). On CUDA ``protocol`` says how
    a pass is timed (:func:`forward_times`): ``"graph"`` (default), the GPU's execution time of one pass of the
    forward captured as a CUDA graph; ``"eager"``, back-to-back events around eager passes (launch-bound where
    the GPU outruns Python; :func:`timing_protocol` names what was measured). On CPU each pass is wall-clock
    time with ``torch.set_num_threads(threads)`` (restored after): one thread by default, so numbers compare
    across machines and do not depend on other load.

    Args:
        model: maps (batch, *input_shape) float32 inputs to anything.
        input_shape: one sample's shape, e.g. ``(3, 32, 32)`` (no batch dimension).
        device: where to run.
        batch: samples per forward pass.
        warmup: untimed passes first (kernel selection, caches, allocator).
        repeat: timed passes.
        threads: CPU thread count during the measurement; ``None`` keeps the current setting.
        protocol: one of :data:`PROTOCOLS` (CUDA only; the CPU always times the wall clock).

    Returns:
        ``(mean_ms, std_ms)``: mean and standard deviation (ddof 0) of one pass's latency, milliseconds.

    Raises:
        ValueError: a non-positive ``batch``/``repeat``, negative ``warmup``, ``input_shape`` with a
            batch dimension (more than 3 entries), or an unknown ``protocol``.
    """
    if batch < 1 or repeat < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, repeat >= 1, warmup >= 0; got {batch}, {repeat}, {warmup}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) > 3:
        raise ValueError(f"input_shape is one sample's shape such as (3, 32, 32), got {shape}")
    dev = torch.device(device)
    timing_protocol(dev, protocol)
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
        arr = forward_times(net, x, warmup, repeat, protocol)
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)
    return float(arr.mean()), float(arr.std())
