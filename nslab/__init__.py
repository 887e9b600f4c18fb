"""nslab: a notebook-first lab for NeuralScale (CVPR 2020).

The flat public API: build networks from width vectors and count their parameters exactly; fit the
per-layer power law to a pruning trajectory and generate widths for any parameter budget; load data,
train and time networks; prune, run architecture descent and the baselines.
"""

from .baselines import li_baseline, morphnet_baseline, uniform_baseline
from .data import DeviceBatches, ImageData, load_dataset, synthetic_data
from .descent import architecture_descent, get_profile, law_from_run
from .latency import measure_latency
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
from .prune import PruneSettings, TaylorFO, prune
from .train import History, Recipe, evaluate, recipe, train

__all__ = [
    "DeviceBatches",
    "History",
    "ImageData",
    "PowerLaw",
    "PruneSettings",
    "Recipe",
    "Scaled",
    "TaylorFO",
    "architecture_descent",
    "create_model",
    "default_widths",
    "evaluate",
    "fit_power_law",
    "get_profile",
    "law_from_run",
    "li_baseline",
    "load_dataset",
    "load_fit",
    "measure_latency",
    "morphnet_baseline",
    "param_count",
    "prune",
    "published_fit",
    "recipe",
    "scale_widths",
    "synthetic_data",
    "train",
    "uniform_baseline",
    "uniform_widths",
    "widths_for_budget",
]
__version__ = "0.1.0"
