"""nslab: a notebook-first lab for NeuralScale (CVPR 2020).

The flat public API: build networks from width vectors, count their parameters exactly, fit the
per-layer power law to a pruning trajectory and generate widths for any parameter budget.
"""

from .models import create_model, default_widths, param_count, uniform_widths
from .powerlaw import (
    PowerLaw,
    Scaled,
    fit_power_law,
    load_fit,
    published_fit,
    scale_widths,
    widths_for_budget,
)

__all__ = [
    "PowerLaw",
    "Scaled",
    "create_model",
    "default_widths",
    "fit_power_law",
    "load_fit",
    "param_count",
    "published_fit",
    "scale_widths",
    "uniform_widths",
    "widths_for_budget",
]
__version__ = "0.1.0"
