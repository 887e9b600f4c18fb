"""The pieces of an :class:`~nslab.models.Architecture` for a traced network (:meth:`Architecture.from_module`).

A traced network is one more kind of architecture: one variant (its input size: ``"cifar"`` for 32x32 images,
``"tiny"`` for 64x64), no ``convcut``, the compiled polynomials as its exact counts, and exact shrinking
(:attr:`~nslab.models.Architecture.shrinkable`, :meth:`TracedCallables.slices`) of every group whose channels sit in
runs along each dimension (:mod:`nslab.models.layout`: a residual stream, a depthwise conv, a squeeze-and-excitation
gate, a concatenation's consumer, a flatten into a Linear, a grouped conv in equal blocks) and whose norms
normalise each channel alone (a group under a LayerNorm or GroupNorm over its channels is masked:
:func:`shrinkable_groups`).

Fixed groups: a group whose channels one of the user's ``ignored`` modules (or a module under it) produces,
normalises or scales keeps its width (a module that only reads the group does not fix it, as Torch-Pruning's
``ignored_layers`` keep their outputs). It is not an entry of the
width vector at all: its default width is substituted wherever the counts or the builder read it, it gets no gate
(never scored, never masked), and :func:`fixed_groups` and the description list it.

Classes: the layer whose outputs are the logits (the classifier; a Linear, or a 1x1 conv before a flatten) is
resized to the dataset's K, so ``num_classes`` is one more variable of the counts (the last one). A network whose
logits come from no such layer keeps its own K and refuses another.

Gates: each group is gated at every member output (:func:`nslab.models.resize.gate_members`): one
:class:`~nslab.models.Gate`, and a :class:`~nslab.models.resize.MemberGate` on each other branch, so pruning scores
and masks the whole coupled group; a concatenation's norms carry a :class:`~nslab.models.resize.SegmentGate` over
the runs of the groups they read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .common import check_widths
from .layout import slices
from .resize import build_traced, channel_dim
from .traced import Traced, TracedGroup, trace

__all__ = ["IMAGE_VARIANTS", "TracedCallables", "fixed_groups", "traced_network", "traced_parts", "width_multiples"]

IMAGE_VARIANTS = {32: "cifar", 64: "tiny"}  # square image side -> DatasetSpec.variant


class TracedCallables:
    """An Architecture's ``build`` / ``params`` / ``macs`` over one :class:`~nslab.models.traced.Traced` network.

    Attributes:
        traced: the traced network (its groups' members, dimension forms and polynomials).
        name: the architecture's name, in messages.
        variant: the one dataset variant it exists for; image_size: its image side (pixels).
        fixed: indices (into ``traced.groups``) of the groups that keep their default width; free: the others, in
            width-vector order (entry j of a width vector is group ``free[j]``).
        conv_groups: each grouped conv's (fixed) group count, by module name (what a shrink keeps equal).
    """

    def __init__(self, traced: Traced, name: str, fixed: Sequence[int] = ()):
        self.traced, self.name = traced, name
        c, h, w = traced.input_size
        self.image_size = h
        self.variant = IMAGE_VARIANTS[h]
        self.fixed = tuple(sorted(set(fixed)))
        self.free = tuple(i for i in range(len(traced.groups)) if i not in self.fixed)
        self.conv_groups = {n: m.groups for n, m in traced.meta_template.named_modules()  # a grouped conv's groups
                            if traced.kinds.get(n) == "grouped"}

    def full(self, widths: Sequence[int]) -> list[int]:
        """One width per traced group: ``widths`` (one per free group) with the fixed groups' defaults put in."""
        if not self.fixed:
            return list(widths)
        out = list(self.traced.default_widths)
        for i, x in zip(self.free, widths):
            out[i] = x
        return out

    def _check(self, variant: str, convcut: bool) -> None:
        if variant != self.variant:
            raise ValueError(f"{self.name} was traced for {self.image_size}x{self.image_size} images (variant "
                             f"{self.variant!r}), not variant {variant!r}")
        if convcut:
            raise ValueError(f"{self.name} is a traced network: convcut does not apply")

    def build(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> nn.Module:
        """A freshly built network at ``widths`` (one per group) and K = ``num_classes``."""
        self._check(variant, convcut)
        w = self.full(check_widths(self.name, widths, len(self.free)))
        off = [(g.name, x, g.multiple) for g, x in zip(self.traced.groups, w) if x % g.multiple]
        if off:
            name, x, k = off[0]
            raise ValueError(f"{self.name}: width {x} of group {name!r} must be a multiple of {k} (grouped layers)")
        return build_traced(self.traced, w, num_classes, gated=self.free)

    def slices(self, widths: Sequence[int], keep: dict, num_classes: int, variant: str, convcut: bool) -> dict:
        """What a shrink keeps of every tensor (:func:`nslab.models.layout.slices`): ``keep`` maps width-vector
        entries to the sorted indices of their channels to keep, ``widths`` are the network's current widths."""
        self._check(variant, convcut)
        t = self.traced
        return slices(t.layouts, t.kinds, t.param_dims, self.conv_groups, t.values(self.full(widths), num_classes),
                      {self.free[j]: idx for j, idx in keep.items()})

    def params(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> int:
        """Exact trainable parameters of :meth:`build`'s network (the compiled polynomial, microseconds)."""
        return self.traced.params([*self.full(widths), num_classes])

    def macs(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool, image_size: int) -> int:
        """Exact conv and linear MACs of one image (half of FlopCounterMode's total)."""
        if image_size != self.image_size:
            raise ValueError(f"{self.name} was traced for {self.image_size}x{self.image_size} images; its MACs "
                             f"at {image_size}x{image_size} are not compiled")
        return self.traced.macs([*self.full(widths), num_classes])


def traced_network(arch) -> Traced | None:
    """The :class:`~nslab.models.traced.Traced` network behind an Architecture made by ``from_module`` (its
    groups' multiples, dimension Forms, polynomials), or ``None`` for a hand-written architecture."""
    owner = getattr(arch.build, "__self__", None)
    return owner.traced if isinstance(owner, TracedCallables) else None


def fixed_groups(arch) -> tuple[TracedGroup, ...]:
    """The groups of a traced Architecture that keep their default width (not entries of its width vector; see the
    module docstring); empty for a hand-written architecture or a traced one with none."""
    owner = getattr(arch.build, "__self__", None)
    return tuple(owner.traced.groups[i] for i in owner.fixed) if isinstance(owner, TracedCallables) else ()


def width_multiples(arch) -> tuple[int, ...]:
    """(L,) what each width-vector entry must be a multiple of (a grouped layer's or GroupNorm's group count; 1 for
    every entry of a hand-written architecture)."""
    owner = getattr(arch.build, "__self__", None)
    if not isinstance(owner, TracedCallables):
        return (1,) * len(arch.groups)
    return tuple(owner.traced.groups[i].multiple for i in owner.free)


def shrinkable_groups(calls: TracedCallables) -> frozenset[int]:
    """Width-vector entries whose pruned channels can be removed exactly, so that slicing every member tensor by
    the kept channels (:func:`nslab.models.layout.slices`) is the masked network made smaller:

    - every dimension the group sets holds its channels in one run (:mod:`nslab.models.layout`; a concatenation's
      consumer holds several groups' runs, a Linear after a flatten ``H * W`` entries per channel);
    - every norm among them normalises each channel on its own (a BatchNorm) and is gated (a concatenation's
      norms by a :class:`~nslab.models.resize.SegmentGate`): a LayerNorm or GroupNorm over the channels counts a
      masked channel in the others' statistics, so there masking and removing differ and the group stays masked;
    - a grouped conv reads the group alone (its input split into the conv's groups; the pruner removes the same
      number of channels from each, :func:`~nslab.search.pruner.balanced_keep`).
    """
    t, out = calls.traced, set()
    modules = dict(t.meta_template.named_modules())
    for j, i in enumerate(calls.free):
        ok = True
        for o, r, _ in t.groups[i].members:
            layout, m = t.layouts.get(o, {}).get(r), modules.get(o)
            ok &= layout is not None
            if r == "norm":
                ok &= isinstance(m, nn.modules.batchnorm._BatchNorm) and channel_dim(m) is not None
            if r == "in" and t.kinds.get(o) == "grouped":
                ok &= layout == ((i, 1),)
        if ok:
            out.add(j)
    return frozenset(out)


def _fixed_by(traced: Traced, ignored: Sequence[str]) -> list[int]:
    """The groups whose outputs (any role but ``"in"``) an ignored module, or one under it, holds; an ignored name
    matching no such member is an error."""
    names = [str(n) for n in ignored]
    hit = {n: False for n in names}
    fixed = []
    for i, g in enumerate(traced.groups):
        owners = {o for o, r, _ in g.members if r != "in"}
        match = [n for n in names if any(o == n or o.startswith(n + ".") for o in owners)]
        for n in match:
            hit[n] = True
        if match:
            fixed.append(i)
    missing = [n for n, h in hit.items() if not h]
    if missing:
        raise ValueError(f"ignored modules {missing} set no width group's channels; ignored must name modules of the "
                         f"network that a group ties, e.g. {traced.groups[0].name!r}")
    return fixed


def probe_widths(traced: Traced) -> list[int]:
    """A width vector unlike the default in every entry (each group moved by a different amount): building and
    counting there shows a tie the trace missed."""
    out = []
    for i, g in enumerate(traced.groups):
        step = g.multiple * (1 + i % 5) if i % 2 else -g.multiple * (1 + i % 3)
        out.append(max(g.multiple, g.default + step))
    return out


def verify(calls: TracedCallables, widths: Sequence[int], num_classes: int) -> None:
    """Build ``widths`` on the meta device, run one forward under FlopCounterMode, and compare both counts.

    Raises:
        ValueError: the network fails at these widths (a tie the trace missed), or a count disagrees.
    """
    t = calls.traced
    with torch.device("meta"):
        model = calls.build(widths, num_classes, calls.variant, False).eval()
        x = torch.empty(1, *t.input_size)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            out = model(x)
    except Exception as e:  # noqa: BLE001 -- a shape error of the user's network, reported with the widths
        raise ValueError(f"{t.label}: the network fails when built at widths {list(widths)}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    n = sum(p.numel() for p in model.parameters())
    p, m = calls.params(widths, num_classes, calls.variant, False), calls.macs(widths, num_classes, calls.variant,
                                                                               False, calls.image_size)
    if n != p or 2 * m != fc.get_total_flops() or tuple(out.shape) != (1, num_classes):
        raise ValueError(f"{t.label} at widths {list(widths)}: compiled {p} parameters / {m} MACs, built {n} / "
                         f"{fc.get_total_flops() / 2:g} (output {tuple(out.shape)}): an op or module is not understood")


def traced_parts(factory: str | Callable[[], nn.Module], input_size: Sequence[int], name: str | None,
                 check: bool = True, ignored: Sequence[str] = ()) -> dict:
    """Trace the factory's network and return the keyword arguments of its Architecture (``groups`` as
    ``(name, default, layers, members)`` tuples, the free groups only).

    Args:
        factory, input_size: see :func:`nslab.models.traced.trace`; the image must be square, 32 or 64 pixels.
        name: the architecture's name (default: the factory's label).
        check: also build once at :func:`probe_widths` (meta device) and compare the counts there.
        ignored: module names whose groups keep their width (fixed; see the module docstring).

    Raises:
        ValueError: as :func:`~nslab.models.traced.trace`, an image size with no dataset variant, or a failed check.
    """
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else input_size
    if not isinstance(size, tuple) or len(size) != 3 or size[1] != size[2] or size[1] not in IMAGE_VARIANTS:
        raise ValueError(f"input_size must be (C, H, H) with H in {sorted(IMAGE_VARIANTS)} (the datasets' image "
                         f"sides), got {input_size!r}")
    if isinstance(ignored, str):
        ignored = [ignored]
    t = trace(factory, size)
    calls = TracedCallables(t, name or t.label, _fixed_by(t, ignored))
    if not calls.free:
        raise ValueError(f"{t.label}: ignored={list(ignored)} fixes all {len(t.groups)} width groups; nothing is "
                         "left to search")
    if check:
        w = probe_widths(t)
        verify(calls, [w[i] for i in calls.free], 7 if t.has_classifier else t.default_classes)
    fixed = ", ".join(f"{t.groups[i].name}={t.groups[i].default}" for i in calls.fixed)
    return {
        "name": calls.name,
        "groups": [(g.name, g.default, g.describe(), g.members) for g in (t.groups[i] for i in calls.free)],
        "variants": (calls.variant,),
        "has_shortcuts": False,
        "build": calls.build,
        "params": calls.params,
        "macs": calls.macs,
        "shrinkable": shrinkable_groups(calls),
        "slices": calls.slices,
        "fit_from_onset": True,  # a residual stream keeps its width until late (Architecture.fit_from_onset)
        "description": f"{t.label} traced at {size}: {len(calls.free)} coupled channel groups"
                       + (f"; fixed (not searched): {fixed}" if fixed else ""),
    }
