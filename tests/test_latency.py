"""nslab.latency: the measurement protocol (modes, threads, shapes), not the speed of this machine."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nslab.latency import measure_latency


class Counting(nn.Module):
    """Records the batch shape, grad mode and training flag of every call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 2)
        self.calls = []

    def forward(self, x):
        self.calls.append((tuple(x.shape), torch.is_grad_enabled(), self.training, torch.get_num_threads()))
        return self.lin(x.flatten(1))


def test_cpu_protocol_and_restored_state():
    m = Counting().train()
    threads = torch.get_num_threads()
    mean, std = measure_latency(m, (3, 2, 2), "cpu", batch=7, warmup=3, repeat=5, threads=1)
    assert len(m.calls) == 8
    assert {c[0] for c in m.calls} == {(7, 3, 2, 2)}
    assert not any(c[1] for c in m.calls) and not any(c[2] for c in m.calls)  # no_grad, eval mode
    assert {c[3] for c in m.calls} == {1}
    assert m.training and torch.get_num_threads() == threads
    assert math.isfinite(mean) and mean > 0 and 0 <= std < math.inf


def test_mode_and_threads_restored_after_an_error():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    m = Boom().train()
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(m, (3, 4, 4), "cpu", threads=1)
    assert m.training and torch.get_num_threads() == threads


def test_bad_arguments():
    m = Counting()
    with pytest.raises(ValueError, match="one sample's shape"):
        measure_latency(m, (100, 3, 2, 2))
    with pytest.raises(ValueError, match="repeat >= 1"):
        measure_latency(m, (3, 2, 2), repeat=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_a_device_copy_and_events():
    m = Counting()
    mean, std = measure_latency(m, (3, 2, 2), "cuda", batch=4, warmup=2, repeat=3)
    assert next(m.parameters()).device.type == "cpu"  # the argument was not moved
    assert mean > 0 and std >= 0
