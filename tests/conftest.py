from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _small_torch():
    # Tests run on 2 cores; keep torch from oversubscribing when pytest runs things side by side.
    torch.set_num_threads(2)


@pytest.fixture
def ref_dir() -> Path:
    """The authors' reference trajectories and fits copied into tests/data (MIT, see LICENSE there)."""
    return DATA
