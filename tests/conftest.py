from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tests' networks are tiny: a second OpenMP thread only adds synchronisation, and when anything
    # else runs on the 2 cores it spins (up to 10x slower, measured here).
    torch.set_num_threads(1)


@pytest.fixture
def ref_dir() -> Path:
    """The authors' reference trajectories and fits copied into tests/data (MIT, see LICENSE there)."""
    return DATA
