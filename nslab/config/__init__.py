"""The one configuration: frozen settings of every stage (:mod:`.parts`), composed into named presets
(:mod:`.preset`, :mod:`.presets`).

A :class:`Preset` (``smoke``, ``cpu``, ``gpu``, ``paper``) is everything a reproduction needs to know: how to
search (:class:`SearchSettings` around a :class:`PruneSettings`), how to train (:class:`Recipe` per
dataset variant), how to run the baselines (:class:`BaselineSettings`), how to time networks
(:class:`LatencySettings`), and the grid of network-dataset :class:`Setting` s of each figure and table.
Everything resolves to plain JSON (:func:`resolve`); :func:`digest` of the resolved settings (plus a
fingerprint of the data) keys every cached artifact. :meth:`Preset.resolve` is the one function that turns a
preset and a setting into a task's exact :class:`TaskSettings`, with one documented precedence. This package
imports nothing else of nslab: the dataset variant a preset's settings depend on is passed in.
"""

from .parts import (
    BaselineSettings,
    LatencySettings,
    PruneSettings,
    Recipe,
    Resources,
    SearchSettings,
    digest,
    file_part,
    resolve,
    scale_epochs,
)
from .preset import Preset, Setting, TaskSettings
from .presets import CPU, GPU, PAPER, PRESETS, SMOKE, preset

__all__ = [  # the parts, then the presets
    "BaselineSettings", "LatencySettings", "Preset", "PruneSettings", "Recipe", "Resources", "SearchSettings",
    "Setting", "TaskSettings", "digest", "file_part", "resolve", "scale_epochs",
    "CPU", "GPU", "PAPER", "PRESETS", "SMOKE", "preset",
]
