"""Width-vector model builders, their registry and exact parameter counts."""

from .common import Gate
from .registry import (
    ARCHS,
    create_model,
    default_widths,
    get_arch,
    param_count,
    param_counter,
    uniform_widths,
)

__all__ = [
    "ARCHS",
    "Gate",
    "create_model",
    "default_widths",
    "get_arch",
    "param_count",
    "param_counter",
    "uniform_widths",
]
