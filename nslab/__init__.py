"""nslab: a notebook-first lab for NeuralScale (CVPR 2020).

The flat public API: build networks from width vectors and count their parameters exactly; fit the
per-layer power law to a pruning trajectory and generate widths for any parameter budget; load data,
train and time networks; prune, run architecture descent and the baselines; the presets of
:mod:`nslab.config` and the method registry of :mod:`nslab.scaling.methods`.
"""

from .config import PRESETS, Preset, PruneSettings, Recipe, SearchSettings, preset, recipe
from .data import DeviceBatches, ImageData, load_dataset, synthetic_data
from .models import create_model, default_widths, macs, macs_counter, param_count, uniform_widths
from .runs.train import History, evaluate, train
from .scaling.baselines import li_baseline, morphnet_baseline
from .scaling.latency import measure_latency
from .scaling.latency_table import LatencyTable
from .scaling.methods import METHODS, Budget, Context, get_method
from .scaling.powerlaw import PowerLaw, fit_power_law, load_fit, published_fit
from .scaling.solver import Scaled, scale_widths, widths_for_budget
from .search.descent import SearchRun, architecture_descent, load_run
from .search.prune import TaylorFO, prune

__all__ = [
    "METHODS",
    "PRESETS",
    "Budget",
    "Context",
    "DeviceBatches",
    "History",
    "LatencyTable",
    "ImageData",
    "PowerLaw",
    "Preset",
    "PruneSettings",
    "Recipe",
    "Scaled",
    "SearchRun",
    "SearchSettings",
    "TaylorFO",
    "architecture_descent",
    "create_model",
    "default_widths",
    "evaluate",
    "fit_power_law",
    "get_method",
    "li_baseline",
    "load_dataset",
    "load_fit",
    "load_run",
    "macs",
    "macs_counter",
    "measure_latency",
    "morphnet_baseline",
    "param_count",
    "preset",
    "prune",
    "published_fit",
    "recipe",
    "scale_widths",
    "synthetic_data",
    "train",
    "uniform_widths",
    "widths_for_budget",
]
__version__ = "0.1.0"
