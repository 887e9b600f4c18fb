"""A per-layer latency lookup table (NetAdapt-style): a network's predicted latency is the sum of its layers'.

Every network of the registry is a sequence of a few kinds of layer (:class:`nslab.models.Op`): a
convolution with its BatchNorm and activation, a BatchNorm with its activation (PreAct-ResNet), a pooling,
a residual addition, a linear classifier. Each architecture lists its own (``Architecture.ops``; through
:func:`network_ops` for a width vector); :class:`LatencyTable` times each kind as a function of its
widths, at the network's spatial size, batch and dtype, on one device, and predicts a network's latency
as the sum over its ops.

Entries are measured lazily, only for the widths a query needs, and cached on disk per device name,
dtype, batch, CPU threads, torch version and measurement protocol (under nslab's cache directory,
:func:`nslab.paths.default_cache_dir`), so a later query or process reuses them. Widths are quantised:
every width up to 16 is timed exactly, wider ones on a grid of 8 points per octave (17, 18, 20, ..., 32,
36, ..., 64, 72, ...), and an op between grid points is interpolated (bilinearly in input and output
width): a convolution's time is close to bilinear in the two, and a solve then times a few cells per
layer rather than every width it visits. The grid hides effects finer than its step (e.g. GPU kernels
that prefer multiples of 8 channels); the end-to-end accuracy is measured by ``bench/latency_table.py``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import io
from ..data import DatasetSpec, dataset_spec
from ..models import Op, create_model, get_arch, uniform_widths
from ..paths import default_cache_dir
from .latency import forward_times, timing_protocol

__all__ = ["MAX_WIDTH", "LatencyTable", "Op", "default_table", "grid_weights", "network_ops"]

MAX_WIDTH = 4096  # the widest layer a latency solve may reach (wider ones would take seconds to time each)
_ROTATE_BYTES = 96 << 20  # weight copies cycled per timing exceed this (past a server CPU's or GPU's last cache)
_MAX_COPIES = 64
_MAX_CALLS = 2000  # most extra timed calls for one entry (see LatencyTable.min_ms)
_REFERENCE_RATIO = 0.5  # the network each architecture's calibration is measured on
_CALIBRATION_ROUNDS = 10
_FORMAT = 1  # bump when the op set or the timing protocol changes: it keys the cache file


class _Rotate(nn.Module):
    """Calls its modules in turn, one per forward (copies of one op with different weights)."""

    def __init__(self, mods: Sequence[nn.Module]):
        super().__init__()
        self.mods = nn.ModuleList(mods)  # registered, so .to() moves them (in place)
        # A plain iterator, not module state: nn.Module.__setattr__ would add ~4 us to every timed call.
        object.__setattr__(self, "_next", itertools.cycle(list(mods)).__next__)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._next()(x)


def network_ops(arch: str, widths: Sequence[int], dataset: str | DatasetSpec = "cifar10",
                convcut: bool = False) -> list[Op]:
    """The ops of ``create_model(arch, widths, dataset, convcut)``'s forward pass, in order (the
    architecture's ``ops``: :attr:`nslab.models.Architecture.ops`).

    Gates (identities), flattening and ``torch.flatten`` cost nothing measurable and are left out.
    ``tests/test_latency.py`` checks the list against the built model's convolutions and linear layers.

    Raises:
        ValueError: an unknown architecture, or one registered without a latency model (no ``ops``).
    """
    spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
    a = get_arch(arch)
    if a.ops is None:
        raise ValueError(f"no latency model for architecture {arch!r} (it was registered without ops)")
    return a.ops([int(x) for x in widths], spec, convcut)


def grid_weights(width: int) -> tuple[tuple[int, float], ...]:
    """The grid points around ``width`` and their linear-interpolation weights (summing to 1).

    Exact up to 16 channels; above, 8 points per octave (step ``2^(floor(log2 w) - 3)``).
    """
    if width <= 16:
        return ((width, 1.0),)
    step = 1 << (width.bit_length() - 4)
    lo = width // step * step
    if lo == width:
        return ((width, 1.0),)
    f = (width - lo) / step
    return ((lo, 1.0 - f), (lo + step, f))


def _corners(op: Op) -> list[tuple[Op, float]]:
    """The grid ops whose weighted sum interpolates ``op`` (multilinear in its varying widths)."""
    axes = [grid_weights(c) for c in op.coords()]
    out = []
    for combo in itertools.product(*axes):
        weight = 1.0
        for _, wt in combo:
            weight *= wt
        out.append((op.at([c for c, _ in combo]), weight))
    return out


def device_name(device: torch.device) -> str:
    """A readable name of the hardware ``device`` is: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# How an entry summarises its timed calls: the median, or the minimum (the uncontended time on a shared
# machine, where other processes' time slices only ever add).
_STATS: dict[str, Callable[[np.ndarray], float]] = {"median": lambda t: float(np.median(t)),
                                                    "min": lambda t: float(np.min(t))}


class LatencyTable:
    """Per-op latencies on one device, measured on demand and cached on disk; sums predict a network's.

    Args:
        device: where to time (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        batch: images per forward pass (the paper: 100).
        threads: CPU threads while timing (ignored on CUDA).
        warmup, repeat: untimed and (at least) timed calls per entry.
        min_ms: an entry keeps timing calls (up to 2,000 more) until they add up to this many ms.
        stat: how an entry summarises its timed calls: ``"median"`` or ``"min"`` (the uncontended time on
            a machine shared with other work).
        cache_dir: where the table file lives (``None``: ``<nslab cache>/latency``).
        timer: ``op -> ms`` replacing the measurement (tests, or another device's model); it is part of
            the cache key by name.
        measure: time missing entries (``False``: a missing entry raises, for a read-only table).
        calibrate: scale each architecture's layer sum by one end-to-end timing (:meth:`calibration`).
        progress: a tqdm bar on stderr when a query times several entries.

    Attributes:
        max_width: the widest layer a solve may use (:data:`MAX_WIDTH`).
        path: the cache file.
        measured: entries timed by this object (not read from the file).
    """

    max_width = MAX_WIDTH

    def __init__(
        self, device: str | torch.device = "cpu", dtype: str = "float32", batch: int = 1, threads: int | None = 1,
        warmup: int = 5, repeat: int = 20, min_ms: float = 20.0, stat: str = "median",
        cache_dir: str | Path | None = None,
        timer: Callable[[Op], float] | None = None, measure: bool = True, calibrate: bool = True,
        progress: bool = True,
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(_DTYPES)}")
        if batch < 1 or repeat < 1 or warmup < 0:
            raise ValueError(f"need batch >= 1, repeat >= 1, warmup >= 0; got {batch}, {repeat}, {warmup}")
        if stat not in _STATS:
            raise ValueError(f"unknown stat {stat!r}; accepted: {', '.join(_STATS)}")
        self.stat, self.min_ms = stat, float(min_ms)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype, self.batch, self.warmup, self.repeat = dtype, int(batch), int(warmup), int(repeat)
        self.threads = None if self.device.type == "cuda" else threads
        self.timer, self.measure, self.calibrate, self.progress = timer, measure, calibrate, progress
        self.settings = {
            "format": _FORMAT, "device": device_name(self.device) if timer is None else "n/a",
            "device_type": self.device.type, "dtype": dtype, "batch": self.batch, "threads": self.threads,
            "torch": torch.__version__, "warmup": self.warmup, "repeat": self.repeat,
            "min_ms": self.min_ms, "stat": stat,
            "grid": "exact<=16,8/octave",
            "rotate_bytes": _ROTATE_BYTES,
            "timer": "measured" if timer is None else f"custom:{getattr(timer, '__qualname__', repr(timer))}",
        }
        if self.device.type == "cuda":
            self.settings["cudnn"] = torch.backends.cudnn.version()
            self.settings["cudnn_benchmark"] = torch.backends.cudnn.benchmark
            # what a CUDA entry measures (a replayed graph, not launch time): keyed, so a table timed with
            # another protocol is never read back (the CPU's wall-clock key is unchanged)
            self.settings["timing"] = timing_protocol(self.device)
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]
        slug = "".join(ch if ch.isalnum() else "-" for ch in self.settings["device"]).strip("-")[:40] or "device"
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "latency"
        self.path = root / f"{slug}-{dtype}-b{self.batch}-{digest}.json"
        self.entries: dict[str, float] = self._read()
        self.measured = 0
        self._memo: dict[Op, float] = {}

    def __repr__(self) -> str:
        return (f"LatencyTable({self.settings['device']!r}, {self.dtype}, batch={self.batch}, "
                f"threads={self.threads}, {len(self.entries)} entries)")

    # --- the file -----------------------------------------------------------------------------------

    def _read(self) -> dict[str, float]:
        if not self.path.exists():
            return {}
        d = io.read_json(self.path)
        if d.get("settings") != self.settings:  # a hash collision or a hand-edited file: never mix tables
            raise ValueError(f"{self.path} holds a latency table for other settings: {d.get('settings')}")
        return {k: float(v) for k, v in d["entries"].items()}

    def save(self) -> Path:
        """Write the table atomically, merged with entries another process added meanwhile."""
        merged = {**self._read(), **self.entries}
        self.entries = merged
        return io.write_json(self.path, {"settings": self.settings, "entries": dict(sorted(merged.items()))})

    # --- timing -------------------------------------------------------------------------------------

    def _time(self, op: Op) -> float:
        if self.timer is not None:
            return float(self.timer(op))
        dtype = _DTYPES[self.dtype]
        first = op.module()
        size = sum(p.numel() for p in first.parameters()) * torch.finfo(dtype).bits // 8
        # In a network every layer's weights are read once per pass and evicted by the others' (VGG11:
        # 37 MB); timed alone, one layer's stay in cache and it looks up to 2x faster. Cycling through
        # copies that together exceed the caches times each call with cold weights (its input stays hot,
        # as the previous layer's output is in a network).
        copies = 1 if size == 0 else max(1, min(_MAX_COPIES, -(-_ROTATE_BYTES // size)))
        net = _Rotate([first, *(op.module() for _ in range(copies - 1))]).to(self.device, dtype).eval()
        x = torch.randn((self.batch, *op.input_shape()), device=self.device, dtype=dtype)
        times = forward_times(net, x, self.warmup, self.repeat)
        # Short ops: keep timing for at least min_ms in all, so the entry spans more than one scheduler
        # slice of a shared machine (the minimum then finds an uncontended one).
        more = min(_MAX_CALLS, math.ceil((self.min_ms - times.sum()) / max(float(np.median(times)), 1e-3)))
        if more > 0:
            times = np.concatenate([times, forward_times(net, x, 0, more)])
        return _STATS[self.stat](times)

    def ensure(self, ops: Iterable[Op]) -> int:
        """Time every grid entry ``ops`` need that the table lacks; returns how many were timed."""
        missing = list(dict.fromkeys(c for op in ops for c, _ in _corners(op) if c.key() not in self.entries))
        if not missing:
            return 0
        if not self.measure:
            raise ValueError(f"the latency table {self.path} lacks {len(missing)} entries (e.g. {missing[0]}) "
                             "and measure=False")
        from tqdm.auto import tqdm

        old = torch.get_num_threads()
        if self.threads is not None and self.timer is None:
            torch.set_num_threads(self.threads)
        try:
            bar = tqdm(missing, desc=f"timing layers on {self.settings['device'][:30]}", unit="entry",
                       file=sys.stderr, disable=not self.progress or len(missing) < 8, leave=False)
            for i, op in enumerate(bar):
                self.entries[op.key()] = self._time(op)
                self.measured += 1
                if i % 50 == 49:  # resumable: an interrupted sweep keeps what it timed
                    self.save()
        finally:
            torch.set_num_threads(old)
        self.save()
        return len(missing)

    # --- queries ------------------------------------------------------------------------------------

    def op_ms(self, op: Op) -> float:
        """``op``'s latency, milliseconds: its grid entries, interpolated (timed first if missing)."""
        if op not in self._memo:
            corners = _corners(op)
            self.ensure([op])
            self._memo[op] = sum(wt * self.entries[c.key()] for c, wt in corners)
        return self._memo[op]

    def layer_sum(self, arch: str, widths: Sequence[int], dataset: str | DatasetSpec = "cifar10",
                  convcut: bool = False) -> float:
        """The sum of the network's per-op latencies, ms (uncalibrated)."""
        ops = network_ops(arch, widths, dataset, convcut)
        ms = [self._memo.get(op) for op in ops]  # one lookup per op: Op.__eq__ dominates a warm predict
        if None in ms:
            self.ensure(op for op, m in zip(ops, ms) if m is None)
            ms = [self.op_ms(op) if m is None else m for op, m in zip(ops, ms)]
        return float(sum(ms))

    def calibration(self, arch: str, dataset: str | DatasetSpec = "cifar10", convcut: bool = False) -> float:
        """Measured over summed latency of the reference network ``uniform_widths(arch, 0.5)`` (cached).

        Timed alone, layers miss costs a network adds (on the CPU at batch 1, MobileNetV2's blocks take
        ~35 us more each inside the network than their layers' sum: allocation and cache traffic between
        layers), so the layer sum runs 0-20% low depending on the architecture. One end-to-end timing of a
        reference network per architecture (minimum or median of 10 rounds of ``repeat`` calls, as
        ``stat``) scales the sum. Like every entry, it is only as good as the machine was quiet.
        With ``calibrate=False`` or a custom ``timer``: 1.
        """
        if not self.calibrate or self.timer is not None:
            return 1.0
        spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
        key = json.dumps(["calibration", arch, spec.name, bool(convcut), _REFERENCE_RATIO])
        if key not in self.entries:
            if not self.measure:
                raise ValueError(f"the latency table {self.path} lacks the calibration of {arch} {spec.name} "
                                 "and measure=False")
            widths = uniform_widths(arch, _REFERENCE_RATIO)
            total = self.layer_sum(arch, widths, spec, convcut)
            self.entries[key] = self.measure_network(arch, widths, spec, convcut, _CALIBRATION_ROUNDS) / total
            self.save()
        return self.entries[key]

    def measure_network(self, arch: str, widths: Sequence[int], dataset: str | DatasetSpec = "cifar10",
                        convcut: bool = False, rounds: int = 3) -> float:
        """End-to-end latency of ``create_model(arch, widths, dataset, convcut)`` with this table's
        protocol (device, dtype, batch, threads, warm-up, statistic over ``rounds`` x ``repeat`` calls), ms."""
        spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
        dtype = _DTYPES[self.dtype]
        model = create_model(arch, widths, spec, convcut).to(self.device, dtype).eval()
        x = torch.randn(self.batch, 3, spec.image_size, spec.image_size, device=self.device, dtype=dtype)
        old = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            times = np.concatenate([forward_times(model, x, self.warmup, self.repeat) for _ in range(rounds)])
        finally:
            torch.set_num_threads(old)
        return _STATS[self.stat](times)

    def predict(self, arch: str, widths: Sequence[int], dataset: str | DatasetSpec = "cifar10",
                convcut: bool = False) -> float:
        """Predicted latency of one forward pass of ``create_model(arch, widths, dataset, convcut)``, ms:
        the sum of its layers' (:meth:`layer_sum`) times the architecture's :meth:`calibration`."""
        return self.layer_sum(arch, widths, dataset, convcut) * self.calibration(arch, dataset, convcut)

    def predictor(self, arch: str, dataset: str | DatasetSpec = "cifar10",
                  convcut: bool = False) -> Callable[[Sequence[int]], float]:
        """``widths -> predicted ms`` for one network (what the budget solver calls)."""
        get_arch(arch)
        return lambda widths: self.predict(arch, widths, dataset, convcut)


@functools.lru_cache(maxsize=8)
def default_table(device: str = "cpu", dtype: str = "float32", batch: int = 1, threads: int | None = 1) -> LatencyTable:
    """The shared table of this machine for these settings (one object per process, so its memo is reused)."""
    return LatencyTable(device, dtype, batch, threads)
