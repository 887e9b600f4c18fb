"""What the runs of a table or figure can show: how long they trained beside the paper, and whether they only
exercise the code path.

A setting run at a scale too small to separate the methods says so once, as data: :attr:`nslab.config.Setting.
exercise` holds the reason; a synthetic preset exercises the code path by definition. :func:`exercise` turns
that into the words every caption (:func:`nslab.views.tables.caption`), figure title (:func:`figure_title`)
and conclusion (:mod:`nslab.views.conclusions`) of those runs carries, with the epochs, images and seeds that
make it so. :func:`run_epochs` and :func:`paper_epochs` decide whether the paper's accuracy may stand beside a
run (:func:`nslab.views.tables.comparison_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import preset

MARKER = "an exercise of the code path, not evidence of the paper's finding"
"""What a table, figure or conclusion of an exercise says first."""

SYNTHETIC = "synthetic data, at chance by design"
"""The reason of every setting of a synthetic preset."""


def run_epochs(p, setting) -> int:
    """Epochs of ``setting``'s from-scratch runs under preset ``p`` (its resolved recipe)."""
    from ..runs.specs import settings_for

    return settings_for(p, setting).recipe.epochs


def paper_epochs(dataset: str) -> int:
    """Epochs of the paper's from-scratch runs on ``dataset``: the ``paper`` preset's recipe of its variant
    (300 on CIFAR, 150 on TinyImageNet)."""
    from ..data import dataset_spec

    return preset("paper").recipe(dataset_spec(dataset).variant).epochs


def runs_text(p, setting, test: bool = True) -> str:
    """How ``setting``'s runs trained under ``p``: "4 epochs on 5,000 training images, tested on 2,000 images"
    (``test=False``: without the test set)."""
    from ..runs.specs import settings_for

    r = settings_for(p, setting).recipe
    return (f"{r.epochs} epoch{'s' * (r.epochs != 1)} on {f'{r.subset:,}' if r.subset else 'all'} "
            f"{'synthetic ' if p.search.synthetic else ''}training images"
            + (f", tested on {setting.test_subset:,} images" if test and setting.test_subset else ""))


def _seeds(s) -> str:
    n = sorted({len(s.seeds), len(s.seeds) + len(s.extra_seeds)})  # the extra seeds run at the first ratio only
    return f"{'-'.join(map(str, n))} seed{'s' * (n[-1] != 1)}"


def exercise(p, settings: Sequence[Any]) -> str:
    """Why the runs of ``settings`` under preset ``p`` exercise the code path ("" where they test the paper).

    Args:
        p: the :class:`~nslab.config.Preset`.
        settings: the :class:`~nslab.config.Setting` s whose runs a table, figure or conclusion shows.

    Returns:
        e.g. "an exercise of the code path, not evidence of the paper's finding (4 epochs on 5,000 training
        images, 1 seed: too few epochs, images and seeds to separate ...)"; "" when no setting has an
        ``exercise`` and the preset's data are real.
    """
    why = [s.exercise for s in settings if s.exercise] + ([SYNTHETIC] if p.search.synthetic and settings else [])
    if not why:
        return ""
    sizes = dict.fromkeys(f"{runs_text(p, s, test=False)}, {_seeds(s)}" for s in settings)
    return f"{MARKER} ({'; '.join(sizes)}: {'; '.join(dict.fromkeys(why))})"


def figure_title(p, title: str, settings: Sequence[Any]) -> str:
    """``title``, followed by :func:`exercise` of ``settings`` where their runs exercise the code path."""
    ex = exercise(p, settings)
    return f"{title}: {ex}" if ex else title
