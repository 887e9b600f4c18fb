"""The latency protocol (nslab.scaling.latency): its name in the settings and results, its argument checks, and
that the CPU path still times the wall clock of every pass. The CUDA protocols themselves need a GPU."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from nslab.config import LatencySettings, digest, preset, resolve
from nslab.scaling import latency
from nslab.scaling.latency import PROTOCOLS, forward_times, measure_latency, timing_protocol


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        self.calls += 1
        return self.lin(x.flatten(1)[:, :3])


def test_protocols_are_named_per_device():
    assert PROTOCOLS[0] == "graph" and set(PROTOCOLS) == {"graph", "eager"}
    assert timing_protocol("cpu") == timing_protocol("cpu", "eager") == "cpu-wall"
    assert timing_protocol("cuda") == "cuda-graph" and timing_protocol("cuda:0", "eager") == "cuda-eager"
    with pytest.raises(ValueError, match="accepted: graph, eager"):
        timing_protocol("cuda", "events")


def test_the_gpu_protocol_is_the_default_everywhere():
    for fn in (forward_times, measure_latency):
        assert inspect.signature(fn).parameters["protocol"].default == "graph"
    assert LatencySettings().protocol == "graph"


def test_latency_settings_keys_stay_unless_the_protocol_is_moved():
    old = {"batch": 100, "warmup": 20, "repeat": 80}  # the settings' fields before the protocol was added
    assert resolve(LatencySettings()) == old and digest(LatencySettings()) == digest(old)
    for name in ("smoke", "cpu", "gpu", "paper"):
        assert "protocol" not in resolve(preset(name).latency)
    assert resolve(LatencySettings(protocol="eager"))["protocol"] == "eager"


def test_bad_protocol_is_refused_before_anything_runs():
    m = Counting()
    with pytest.raises(ValueError, match="latency protocol"):
        measure_latency(m, (3, 1, 1), "cpu", batch=2, warmup=1, repeat=1, protocol="wall")
    with pytest.raises(ValueError, match="latency protocol"):
        forward_times(m, torch.randn(2, 3), 1, 1, protocol="sleep")
    assert m.calls == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cpu_path_times_every_pass_with_the_wall_clock(protocol, monkeypatch):
    m = Counting().eval()
    ticks = iter(np.arange(0.0, 100.0, 0.5))  # each perf_counter call advances 0.5 s
    monkeypatch.setattr(latency.time, "perf_counter", lambda: float(next(ticks)))
    times = forward_times(m, torch.randn(4, 3), 2, 5, protocol)
    assert m.calls == 7 and times.shape == (5,) and np.allclose(times, 500.0)  # ms between paired ticks


def test_measure_latency_on_cpu_is_unchanged_by_the_protocol():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).train()
    mean, std = measure_latency(m, (3, 8, 8), "cpu", batch=3, warmup=1, repeat=4, protocol="eager")
    assert mean > 0 and std >= 0 and m.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_protocol_times_the_gpu_not_the_launches():
    # a network of many tiny kernels: eager back-to-back events time Python's launches, the graph the GPU
    m = nn.Sequential(*[nn.Conv2d(8, 8, 1) for _ in range(40)]).cuda().eval()
    x = torch.randn(2, 8, 4, 4, device="cuda")
    graph = forward_times(m, x, 5, 150, "graph")  # more than one chunk of replays behind a sleep
    eager = forward_times(m, x, 5, 30, "eager")
    assert graph.shape == (150,) and eager.shape == (30,) and (graph > 0).all()
    assert np.median(graph) < np.median(eager)
    mean, _ = measure_latency(m.cpu(), (8, 4, 4), "cuda", batch=2, warmup=2, repeat=5)
    assert mean > 0
