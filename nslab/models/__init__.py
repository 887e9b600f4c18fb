"""Width-vector model builders, their registry, exact parameter counts and MACs."""

from .common import Gate
from .registry import (
    ARCHS,
    create_model,
    default_widths,
    get_arch,
    macs,
    macs_counter,
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
    "macs",
    "macs_counter",
    "param_count",
    "param_counter",
    "uniform_widths",
]
