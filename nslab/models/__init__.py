"""The networks: one :class:`Architecture` per network, their registry, exact parameter counts and MACs."""

from .architecture import Architecture, WidthGroup
from .common import Gate
from .ops import Op
from .registry import (
    ARCHS,
    create_model,
    default_widths,
    get_arch,
    macs,
    macs_counter,
    measured_counts,
    param_count,
    param_counter,
    register,
    resolve_arch,
    uniform_widths,
    unregister,
)

__all__ = [
    "ARCHS",
    "Architecture",
    "Gate",
    "Op",
    "WidthGroup",
    "create_model",
    "default_widths",
    "get_arch",
    "macs",
    "macs_counter",
    "measured_counts",
    "param_count",
    "param_counter",
    "register",
    "resolve_arch",
    "uniform_widths",
    "unregister",
]
