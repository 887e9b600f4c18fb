"""The one configuration: frozen settings of every stage (:mod:`.parts`), composed into named presets
(:mod:`.presets`).

A :class:`Preset` (``smoke``, ``cpu``, ``gpu``, ``paper``) is everything a reproduction needs to know: how to
search (:class:`SearchSettings` around a :class:`PruneSettings`), how to train (:class:`Recipe` per
dataset variant), how to run the baselines (:class:`BaselineSettings`), how to time networks
(:class:`LatencySettings`), and the grid of network-dataset :class:`Setting` s of each figure and table.
Everything resolves to plain JSON (:func:`resolve`); :func:`digest` of the resolved settings (plus a
fingerprint of the data) keys every cached artifact. This package imports nothing else of nslab.
"""

from .parts import (
    BaselineSettings,
    LatencySettings,
    Preset,
    PruneSettings,
    Recipe,
    Resources,
    SearchSettings,
    Setting,
    digest,
    resolve,
    scale_epochs,
)
from .presets import CPU, GPU, PAPER, PRESETS, SMOKE, preset, recipe

__all__ = [  # the parts, then the presets
    "BaselineSettings", "LatencySettings", "Preset", "PruneSettings", "Recipe", "Resources", "SearchSettings",
    "Setting", "digest", "resolve", "scale_epochs", "CPU", "GPU", "PAPER", "PRESETS", "SMOKE", "preset", "recipe",
]
