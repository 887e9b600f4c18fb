"""nslab: a notebook-first lab for NeuralScale (CVPR 2020).

The flat public API: build networks from width vectors and count their parameters exactly (any CNN
traced into an architecture by ``resolve_arch``, built back from generated widths by ``load_generated``);
fit the per-layer power law to a pruning trajectory and generate widths for any parameter budget; load
data, train and time networks; prune, run architecture descent and the baselines; the presets of
:mod:`nslab.config`, the registries of networks (:mod:`nslab.models`), budget metrics
(:mod:`nslab.scaling.metrics`) and scaling methods (:mod:`nslab.scaling.methods`). Where each concept lives:
``nslab/README.md``.
"""

from .config import PRESETS, Preset, PruneSettings, Recipe, SearchSettings, preset
from .data import DeviceBatches, ImageData, load_dataset, synthetic_data
from .generated import load_generated
from .models import (
    Architecture,
    WidthGroup,
    create_model,
    default_widths,
    get_arch,
    macs,
    macs_counter,
    param_count,
    register,
    resolve_arch,
    uniform_widths,
)
from .runs.specs import recipe
from .runs.train import History, evaluate, train
from .scaling.baselines import li_baseline, morphnet_baseline
from .scaling.latency import measure_latency
from .scaling.latency_table import LatencyTable
from .scaling.methods import METHODS, Budget, Context, get_method
from .scaling.metrics import METRICS, Metric, get_metric, register_metric
from .scaling.powerlaw import PowerLaw, fit_power_law, load_fit, published_fit
from .scaling.solver import Scaled, scale_widths, widths_for_budget
from .search.descent import SearchRun, architecture_descent, load_run
from .search.prune import TaylorFO, prune

__all__ = [
    "METHODS",
    "METRICS",
    "PRESETS",
    "Architecture",
    "architecture_descent",
    "Budget",
    "Context",
    "create_model",
    "default_widths",
    "DeviceBatches",
    "evaluate",
    "fit_power_law",
    "get_arch",
    "get_method",
    "get_metric",
    "History",
    "ImageData",
    "LatencyTable",
    "li_baseline",
    "load_dataset",
    "load_fit",
    "load_generated",
    "load_run",
    "macs",
    "macs_counter",
    "measure_latency",
    "Metric",
    "morphnet_baseline",
    "param_count",
    "PowerLaw",
    "Preset",
    "preset",
    "prune",
    "PruneSettings",
    "published_fit",
    "Recipe",
    "recipe",
    "register",
    "register_metric",
    "resolve_arch",
    "scale_widths",
    "Scaled",
    "SearchRun",
    "SearchSettings",
    "synthetic_data",
    "TaylorFO",
    "train",
    "uniform_widths",
    "WidthGroup",
    "widths_for_budget",
]
__version__ = "0.1.0"
