"""The grid of a preset: network-dataset :class:`Setting` s, the :class:`Preset` composing every stage's settings,
and :meth:`Preset.resolve`, the one function that turns a preset and a setting into a task's exact settings.

This module knows no dataset: the dataset *variant* (``"cifar"`` or ``"tiny"``, a fact of
:mod:`nslab.data.specs`) is passed in by the caller (:func:`nslab.runs.specs.settings_for` looks it up).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .parts import BaselineSettings, LatencySettings, Recipe, Resources, SearchSettings, file_part, scale_epochs

__all__ = ["Preset", "Setting", "TaskSettings"]


@dataclass(frozen=True)
class TaskSettings:
    """The exact settings of one task of a preset: how its search prunes and how its networks train.

    Attributes:
        search: the resolved search (prune schedule, iterations, subset, start ratio).
        recipe: the resolved from-scratch training recipe (epochs, subset).
    """

    search: SearchSettings
    recipe: Recipe


@dataclass(frozen=True)
class Setting:
    """One network-dataset pair of a grid, and the paper element it stands in for.

    Attributes:
        arch: architecture.
        dataset: dataset the runs use (synthetic data of its shape under a synthetic search).
        paper_dataset: the dataset of the paper's setting it reproduces (for the "paper" columns).
        ratios: the paper's uniform ratios r; the budget of r is the parameter count of
            ``uniform_widths(arch, r * start_ratio)``.
        seeds: seeds at every ratio.
        extra_seeds: more seeds at the first ratio (the paper's headline ratio 0.25).
        extra_seed_methods: the methods that get ``extra_seeds`` (``None``: all).
        table: which paper table the setting's rows go to (1 or 2 in the benchmark).
        methods: the methods run (``None``: the preset's).
        start_ratio: overrides the search's start ratio for this setting (a cheaper search of a big
            network on a CPU); budgets follow it unless ``scale`` is set.
        scale: the width the paper's ratio 1 stands for in this setting's budgets (the budget of r is the
            count of ``uniform_widths(arch, r * scale)``); ``None``: the search's start ratio.
        prune: overrides of the search's :class:`PruneSettings`, as ``(field, value)`` pairs.
        search: overrides of the other :class:`SearchSettings` fields (e.g. ``(("train_subset", 1536),)``).
        pretrain_epochs: the P_e compared in the pre-training study (``None``: the preset's).
        train_subset: training images of this setting's from-scratch runs (``None``: the preset's).
        epochs: epochs of those runs (``None``: the preset's).
        test_subset: evaluate those runs on N class-balanced test images (``None``: all).
        exercise: why this setting's runs exercise the code path instead of testing the paper's finding
            (too few epochs, images or seeds for the methods to separate); every caption, figure title and
            conclusion of its runs says so (:func:`nslab.views.scope.exercise`). ``None``: they test it.
            Display only: part of no cache key (``omit_default`` keeps it out of resolved settings).
    """

    arch: str
    dataset: str
    paper_dataset: str
    ratios: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    extra_seeds: tuple[int, ...] = ()
    extra_seed_methods: tuple[str, ...] | None = None
    table: int = 1
    methods: tuple[str, ...] | None = None
    start_ratio: float | None = None
    scale: float | None = None
    prune: tuple[tuple[str, Any], ...] = ()
    search: tuple[tuple[str, Any], ...] = ()
    pretrain_epochs: tuple[int, ...] | None = None
    train_subset: int | None = None
    epochs: int | None = None
    test_subset: int | None = None
    exercise: str | None = field(default=None, metadata={"omit_default": True})

    @property
    def slug(self) -> str:
        """``<arch>_<dataset>``, for file names (a factory string's ``:`` as ``-``)."""
        return file_part(f"{self.arch}_{self.dataset}")

    def seeds_at(self, ratio: float, method: str | None = None) -> tuple[int, ...]:
        """Seeds run at ``ratio`` (by ``method``)."""
        extra = ratio == self.ratios[0] and (self.extra_seed_methods is None or method in self.extra_seed_methods)
        return self.seeds + (self.extra_seeds if extra else ())


@dataclass(frozen=True)
class Preset:
    """One named, fully resolved configuration: everything a notebook needs to run at a given cost.

    Attributes:
        name: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        search: how descent searches.
        train: from-scratch training recipes by dataset variant: ``(("cifar", r), ("tiny", r))``.
        epochs: cut every training recipe to this many epochs (``None``: as the recipe says).
        train_subset: train on this many class-balanced images instead of the whole split.
        baseline: baseline settings.
        latency: the latency protocol.
        study_iterations: descent iterations of the pre-training and ConvCut studies (``None``: the
            search's).
        descent: the setting notebooks 01, 02 and 04 search on (Figures 2-3).
        benchmark: Figures 4-5 and Tables 1-2.
        methods: the methods of the benchmark (names of :mod:`nslab.scaling.methods`).
        pretrain_epochs: Figures 6-9 and Tables 3-4: the pre-training epochs P_e compared.
        pretrain: the settings of that study (VGG11, then MobileNetV2).
        convcut: Figures 10-11 and Tables 5-6: MobileNetV2 then ResNet18 settings.
        chance_margin: a trained run whose best test accuracy lies within this many percentage points
            of chance (100 / classes %) stops the reproduction (``None``: no check, for runs at chance
            by design such as synthetic smoke runs).
        excluded: ``(method, reason)`` pairs this preset's tables leave out; the reason goes into the
            tables' captions (:func:`nslab.views.tables.caption`).
        macs_study: notebook 08 (beyond the paper): the setting trained at equal MACs per image
            (:func:`nslab.runs.studies.macs_study`); ``None``: none.
        your_network: notebook 09 (beyond the paper): a network traced from any module (its arch a factory
            string, :meth:`nslab.Architecture.from_module`), searched, then NeuralScale against uniform at equal
            parameters and equal MACs (:func:`nslab.runs.studies.macs_study` of it); ``None``: none.
        resources: what each task of the grid asks an executor for (:mod:`nslab.runs.executors`); scheduling
            only, part of no cache key.
        prune_by_variant: :class:`PruneSettings` overrides by dataset variant, as ``(variant, ((field,
            value), ...))`` pairs, applied by :meth:`resolve` before a setting's own ``prune`` (the
            release prunes TinyImageNet with 100 minibatches of 100 between steps, CIFAR with 50 of 256).
    """

    name: str
    search: SearchSettings
    train: tuple[tuple[str, Recipe], ...]
    epochs: int | None = None
    train_subset: int | None = None
    baseline: BaselineSettings = BaselineSettings()
    latency: LatencySettings = LatencySettings()
    study_iterations: int | None = None
    descent: Setting = Setting("vgg11", "cifar10", "cifar10", (0.25, 0.75, 1.25, 2.0))
    benchmark: tuple[Setting, ...] = ()
    methods: tuple[str, ...] = ("uniform", "li", "morphnet", "neuralscale_it1", "neuralscale_last")
    pretrain_epochs: tuple[int, ...] = (0, 2, 5, 10, 30, 60)
    pretrain: tuple[Setting, ...] = ()
    convcut: tuple[Setting, ...] = ()
    chance_margin: float | None = 3.0
    excluded: tuple[tuple[str, str], ...] = ()
    macs_study: Setting | None = None
    your_network: Setting | None = None
    resources: Resources = Resources()
    prune_by_variant: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def resolve(self, setting: Setting | None = None, variant: str | None = None, pretrain_epochs: int | None = None,
                iterations: int | None = None) -> TaskSettings:
        """The exact search and training recipe of ``setting`` under this preset: the one resolution.

        Precedence, lowest first (a later one overrides an earlier one field by field):

        1. stage defaults: the fields' defaults of :class:`PruneSettings`, :class:`SearchSettings`, :class:`Recipe`;
        2. the preset: :attr:`search`, the recipe of the dataset variant in :attr:`train`, then
           :attr:`prune_by_variant` of that variant, :attr:`epochs` and :attr:`train_subset`;
        3. the setting: :attr:`Setting.prune`, :attr:`Setting.search`, :attr:`Setting.start_ratio`,
           :attr:`Setting.epochs`, :attr:`Setting.train_subset`;
        4. the call (what a notebook's request asks for): ``pretrain_epochs`` (P_e) and ``iterations``.

        The "epochs" are distinct knobs, not competing values of one: a recipe's ``epochs`` (from-scratch
        training; cut by the preset's then the setting's ``epochs``, milestones scaled with
        :func:`scale_epochs`), a search's ``prune.pretrain_epochs`` (P_e, before pruning; the setting's
        ``prune`` then the call's ``pretrain_epochs``), and ``baseline.li_finetune_epochs`` (Li et al. only).

        Args:
            setting: the network-dataset pair (``None``: the preset's own search and no recipe cut).
            variant: the dataset variant of ``setting.dataset`` (``"cifar"`` or ``"tiny"``); needed only
                where the preset's settings differ by variant.
            pretrain_epochs: P_e (default: as resolved above).
            iterations: descent iterations (default: as resolved above).

        Raises:
            ValueError: the variant is needed and missing, or the preset has no recipe for it.
        """
        return TaskSettings(self.search_for(setting, pretrain_epochs, iterations, variant),
                            self.recipe_for(setting, variant))

    def _variant(self, variant: str | None, needed: bool) -> str | None:
        if variant is None and needed:
            raise ValueError(f"preset {self.name!r} has settings by dataset variant: pass variant= (one of "
                             f"{', '.join(dict(self.train))}), or resolve with nslab.runs.specs.settings_for")
        return variant

    def _search(self, setting: Setting | None, variant: str | None, pretrain_epochs: int | None,
                iterations: int | None) -> SearchSettings:
        s = self.search
        changes: dict[str, Any] = dict(dict(self.prune_by_variant).get(variant, ())) if variant is not None else {}
        changes.update(dict(setting.prune) if setting is not None else {})
        if pretrain_epochs is not None:
            changes["pretrain_epochs"] = pretrain_epochs
        if changes:
            s = replace(s, prune=replace(s.prune, **changes))
        if setting is not None and setting.search:
            s = replace(s, **dict(setting.search))
        if setting is not None and setting.start_ratio is not None:
            s = replace(s, start_ratio=setting.start_ratio)
        return replace(s, iterations=iterations) if iterations is not None else s

    def _recipe(self, setting: Setting | None, variant: str) -> Recipe:
        r = self.recipe(variant)
        epochs = (setting.epochs if setting is not None else None) or self.epochs
        if epochs is not None and epochs != r.epochs:
            r = scale_epochs(r, epochs)
        subset = (setting.train_subset if setting is not None else None) or self.train_subset
        # class-balanced: folder datasets are stored class by class, so the first N would be one class
        return replace(r, subset=subset, subset_mode="balanced") if subset else r

    def search_for(self, setting: Setting | None = None, pretrain_epochs: int | None = None,
                   iterations: int | None = None, variant: str | None = None) -> SearchSettings:
        """:meth:`resolve`'s search (``variant``: that of the setting's dataset, where the preset prunes by
        variant; without a setting the preset's own search, with ``variant``'s overrides when given)."""
        variant = self._variant(variant, bool(self.prune_by_variant) and setting is not None)
        return self._search(setting, variant, pretrain_epochs, iterations)

    def recipe(self, variant: str) -> Recipe:
        """The training recipe of a dataset variant (``"cifar"`` or ``"tiny"``), as the preset defines it."""
        table = dict(self.train)
        if variant not in table:
            raise ValueError(f"preset {self.name!r} has no recipe for variant {variant!r}; accepted: "
                             f"{', '.join(table)}")
        return table[variant]

    def recipe_for(self, setting: Setting | None, variant: str | None = None) -> Recipe:
        """:meth:`resolve`'s recipe: cut to the setting's (or the preset's) epochs, on its class-balanced subset.

        ``variant``: the variant of the setting's dataset (needed where the preset's recipes differ by it).
        """
        variant = self._variant(variant, len({r for _, r in self.train}) > 1)
        return self._recipe(setting, variant if variant is not None else self.train[0][0])

    def summary(self) -> str:
        """A few readable lines: what this preset runs (instead of the full repr)."""
        s = self.search
        epochs = self.epochs or self.recipe("cifar").epochs
        return (f"preset {self.name!r}: {'synthetic data' if s.synthetic else 'real data'}; search "
                f"{s.iterations} descent iteration(s) from width ratio {s.start_ratio:g}, "
                f"{s.prune.channels_per_step} channels per step, P_e {s.prune.pretrain_epochs}; training "
                f"{epochs} epochs ({self.train_subset or 'all'} images); benchmark "
                f"{', '.join(x.slug for x in self.benchmark)}")
