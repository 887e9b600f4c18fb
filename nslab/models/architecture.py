"""One :class:`Architecture` per network: everything nslab knows about it, in one place.

A network is data plus a few callables: its width groups (the entries of the width vector), the dataset
variants it exists for, a builder, its exact parameter and multiply-accumulate counts, which width
entries a pruned network can physically shrink, and the layers a latency table times. The search, the
fit, the solver, training, the latency table and the planner read an architecture only through this
object (by its registered name, :func:`nslab.models.get_arch`), so registering one
(:func:`nslab.models.register`) is all it takes to add a network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from ..data import DatasetSpec
from .ops import Op

__all__ = ["VARIANTS", "Architecture", "WidthGroup"]

VARIANTS = ("cifar", "tiny")  # DatasetSpec.variant: 32x32 CIFAR-style networks, 64x64 TinyImageNet ones


@dataclass(frozen=True)
class WidthGroup:
    """One entry of the width vector: a set of channels the search sizes as one number.

    Attributes:
        name: a short readable name (``"conv3"``, ``"block2.mid"``).
        default: the paper's width (channels).
        layers: which layers this width sets (the layers sharing it), in words, for a reader.
        members: for a traced network (:meth:`Architecture.from_module`), ``(tensor owner, role, channels per
            unit width)`` of every dimension this width sets (see :class:`nslab.models.traced.TracedGroup`).
    """

    name: str
    default: int
    layers: str = ""
    members: tuple[tuple[str, str, int], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Architecture:
    """A registered network.

    Every callable takes a validated width vector ``widths`` (``list[int]``, one entry per group, in
    :attr:`groups` order), the class count K, the dataset variant (one of :attr:`variants`) and
    ``convcut`` (``False`` unless :attr:`has_shortcuts`).

    Attributes:
        name: the registry name.
        groups: the width groups, forward order (L of them).
        variants: dataset variants it exists for (``"cifar"``: 32x32 images, ``"tiny"``: 64x64).
        has_shortcuts: whether ``convcut`` applies (a 1x1 conv on every shortcut).
        build: ``(widths, num_classes, variant, convcut) -> nn.Module`` mapping (N, 3, H, W) images to
            (N, K) logits, with one :class:`~nslab.models.Gate` per width group (index = its position);
            pure: a fresh CPU float32 module, nothing else touched.
        params: ``(widths, num_classes, variant, convcut) -> int``, the exact trainable parameter count of
            ``build``'s module (closed form, called often by solvers: keep it cheap).
        macs: ``(widths, num_classes, variant, convcut, image_size) -> int``, the exact conv and linear
            multiply-accumulates of one ``image_size`` x ``image_size`` image (half of
            ``FlopCounterMode``'s total; see :func:`nslab.models.macs`).
        shrinkable: width indices whose pruned channels can be removed exactly, rebuilding the network
            smaller (:func:`nslab.search.channels.shrink_model`): an entry is shrinkable when slicing every
            tensor it sizes (:attr:`slices`) computes what masking its channels did. The others are masked at
            their gates. Empty (the safe default): every entry is masked.
        slices: ``(widths, keep, num_classes, variant, convcut) -> {state-dict key: [(dim, index, groups), ...]}``,
            how a shrink maps onto the tensors: ``keep`` maps shrinkable entries to the sorted indices of their
            channels to keep; each listed dimension of a tensor is indexed whole (``groups > 1``: a grouped conv's
            per-group input dimension, the index over all its inputs). ``None``: each entry's channels are the
            dimensions that shrink with it one for one (:func:`nslab.search.channels.channel_map`).
        ops: ``(widths, spec, convcut) -> list[Op]``, the layers of one forward pass as a per-layer
            latency table times them (:mod:`nslab.scaling.latency_table`); ``None``: no latency model.
        sgd_solver: ``(lr, steps, tol)`` of the paper's gradient-descent budget solver as the authors'
            release set it for this network (``widths_for_budget(..., method="sgd")``, Eq. 9-11): the
            learning rate on tau, a fixed number of steps (``None``: run to ``tol``) and the relative
            parameter error it stops at (``None``: run the fixed steps); ``None``: the release has none.
        fit_from_onset: record a trajectory row after every prune step and fit each group's law from the step it
            starts to shrink (:func:`nslab.scaling.powerlaw.fit_power_law`'s ``onset``), instead of the release's
            rows from the step every group has lost a channel. ``True`` for a traced network, where a group
            read by many layers (a residual stream) keeps its width until late and the release's rule would leave
            only the last rows of the search (:mod:`nslab.models.traced_arch`); ``False``: the paper's rule.
        description: one line for a reader.
    """

    name: str
    groups: tuple[WidthGroup, ...]
    variants: tuple[str, ...]
    has_shortcuts: bool
    build: Callable[[list[int], int, str, bool], nn.Module]
    params: Callable[[Sequence[int], int, str, bool], int]
    macs: Callable[[Sequence[int], int, str, bool, int], int]
    shrinkable: frozenset[int] = frozenset()
    slices: Callable[[Sequence[int], dict, int, str, bool], dict] | None = None
    ops: Callable[[Sequence[int], DatasetSpec, bool], list[Op]] | None = None
    sgd_solver: tuple[float, int | None, float | None] | None = None
    fit_from_onset: bool = False
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "shrinkable", frozenset(self.shrinkable))
        where = f"architecture {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"an architecture needs a non-empty name, got {self.name!r}")
        if not self.groups or not all(isinstance(g, WidthGroup) for g in self.groups):
            raise ValueError(f"{where}: groups must be a non-empty sequence of WidthGroup, got {self.groups!r}")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: width group names must be unique, got {names}")
        bad = [g for g in self.groups if not isinstance(g.default, int) or isinstance(g.default, bool) or g.default < 1]
        if bad:
            raise ValueError(f"{where}: default widths must be positive integers, got {bad}")
        if not self.variants or set(self.variants) - set(VARIANTS):
            raise ValueError(f"{where}: variants must be a non-empty subset of {VARIANTS}, got {self.variants}")
        out = sorted(i for i in self.shrinkable if not isinstance(i, int) or not 0 <= i < len(self.groups))
        if out:
            raise ValueError(f"{where}: shrinkable indices {out} are outside 0..{len(self.groups) - 1}")
        for attr in ("build", "params", "macs"):
            if not callable(getattr(self, attr)):
                raise ValueError(f"{where}: {attr} must be callable")
        for attr in ("slices", "ops"):
            if getattr(self, attr) is not None and not callable(getattr(self, attr)):
                raise ValueError(f"{where}: {attr} must be callable or None")

    @property
    def default_widths(self) -> tuple[int, ...]:
        """The paper's width vector, one entry per group (forward order)."""
        return tuple(g.default for g in self.groups)

    @property
    def width_names(self) -> tuple[str, ...]:
        """The groups' names, in width-vector order."""
        return tuple(g.name for g in self.groups)

    @classmethod
    def from_module(cls, factory, input_size: Sequence[int] = (3, 32, 32), name: str | None = None,
                    check: bool = True, ignored: Sequence[str] = ()) -> Architecture:
        """An architecture for any CNN: its coupled channel groups, traced, as the width vector.

        Args:
            factory: builds the network at its default widths: a no-argument callable, ``"torchvision:NAME"``,
                ``"timm:NAME"`` or ``"package.module:function"``.
            input_size: (C, H, H) of one image, H = 32 (variant ``"cifar"``) or 64 (``"tiny"``).
            name: the registry name (default: the factory's label).
            check: also build once at widths unlike the default (meta device) and compare the counts there.
            ignored: module names whose width groups keep their width: fixed, not entries of the width vector
                (:func:`nslab.models.traced_arch.fixed_groups` and the description list them).

        Returns:
            The Architecture (register it with :func:`nslab.models.register`); see
            :mod:`nslab.models.traced_arch` for what its build, params and macs do.

        Raises:
            ValueError: one line naming the bad factory, input size, module or op.
        """
        from .traced_arch import traced_parts

        parts = traced_parts(factory, input_size, name, check, ignored)
        parts["groups"] = tuple(WidthGroup(n, d, layers, members) for n, d, layers, members in parts["groups"])
        return cls(**parts)
