"""The pieces of an :class:`~nslab.models.Architecture` for a traced network (:meth:`Architecture.from_module`).

A traced network is one more kind of architecture: one variant (its input size: ``"cifar"`` for 32x32 images,
``"tiny"`` for 64x64), no ``convcut``, the compiled polynomials as its exact counts, and no exact shrinking (every
entry is masked at its gate; pruning on coupled groups is to come).

Classes: the layer whose outputs are the logits (the classifier; a Linear, or a 1x1 conv before a flatten) is
resized to the dataset's K, so ``num_classes`` is one more variable of the counts (the last one). A network whose
logits come from no such layer keeps its own K and refuses another.

Gates: each group gets one :class:`~nslab.models.Gate`, after its first normalisation layer (else its first
producer). For a group tied by a residual add that gate sees one branch only; pruning that masks or scores a
whole coupled group must use the group's members (:attr:`nslab.models.WidthGroup.members`), not this gate alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .common import check_widths
from .resize import build_traced
from .traced import Traced, trace

__all__ = ["IMAGE_VARIANTS", "TracedCallables", "traced_network", "traced_parts"]

IMAGE_VARIANTS = {32: "cifar", 64: "tiny"}  # square image side -> DatasetSpec.variant


class TracedCallables:
    """An Architecture's ``build`` / ``params`` / ``macs`` over one :class:`~nslab.models.traced.Traced` network.

    Attributes:
        traced: the traced network (its groups' members, dimension forms and polynomials).
        name: the architecture's name, in messages.
        variant: the one dataset variant it exists for; image_size: its image side (pixels).
    """

    def __init__(self, traced: Traced, name: str):
        self.traced, self.name = traced, name
        c, h, w = traced.input_size
        self.image_size = h
        self.variant = IMAGE_VARIANTS[h]

    def _check(self, variant: str, convcut: bool) -> None:
        if variant != self.variant:
            raise ValueError(f"{self.name} was traced for {self.image_size}x{self.image_size} images (variant "
                             f"{self.variant!r}), not variant {variant!r}")
        if convcut:
            raise ValueError(f"{self.name} is a traced network: convcut does not apply")

    def build(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> nn.Module:
        """A freshly built network at ``widths`` (one per group) and K = ``num_classes``."""
        self._check(variant, convcut)
        w = check_widths(self.name, widths, len(self.traced.groups))
        off = [(g.name, x, g.multiple) for g, x in zip(self.traced.groups, w) if x % g.multiple]
        if off:
            name, x, k = off[0]
            raise ValueError(f"{self.name}: width {x} of group {name!r} must be a multiple of {k} (grouped layers)")
        return build_traced(self.traced, w, num_classes)

    def params(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool) -> int:
        """Exact trainable parameters of :meth:`build`'s network (the compiled polynomial, microseconds)."""
        return self.traced.params([*widths, num_classes])

    def macs(self, widths: Sequence[int], num_classes: int, variant: str, convcut: bool, image_size: int) -> int:
        """Exact conv and linear MACs of one image (half of FlopCounterMode's total)."""
        if image_size != self.image_size:
            raise ValueError(f"{self.name} was traced for {self.image_size}x{self.image_size} images; its MACs "
                             f"at {image_size}x{image_size} are not compiled")
        return self.traced.macs([*widths, num_classes])


def traced_network(arch) -> Traced | None:
    """The :class:`~nslab.models.traced.Traced` network behind an Architecture made by ``from_module`` (its
    groups' multiples, dimension Forms, polynomials), or ``None`` for a hand-written architecture."""
    owner = getattr(arch.build, "__self__", None)
    return owner.traced if isinstance(owner, TracedCallables) else None


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
                 check: bool = True) -> dict:
    """Trace the factory's network and return the keyword arguments of its Architecture (``groups`` as
    ``(name, default, layers, members)`` tuples).

    Args:
        factory, input_size: see :func:`nslab.models.traced.trace`; the image must be square, 32 or 64 pixels.
        name: the architecture's name (default: the factory's label).
        check: also build once at :func:`probe_widths` (meta device) and compare the counts there.

    Raises:
        ValueError: as :func:`~nslab.models.traced.trace`, an image size with no dataset variant, or a failed check.
    """
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else input_size
    if not isinstance(size, tuple) or len(size) != 3 or size[1] != size[2] or size[1] not in IMAGE_VARIANTS:
        raise ValueError(f"input_size must be (C, H, H) with H in {sorted(IMAGE_VARIANTS)} (the datasets' image "
                         f"sides), got {input_size!r}")
    t = trace(factory, size)
    calls = TracedCallables(t, name or t.label)
    if check:
        verify(calls, probe_widths(t), 7 if t.has_classifier else t.default_classes)
    return {
        "name": calls.name,
        "groups": [(g.name, g.default, g.describe(), g.members) for g in t.groups],
        "variants": (calls.variant,),
        "has_shortcuts": False,
        "build": calls.build,
        "params": calls.params,
        "macs": calls.macs,
        "description": f"{t.label} traced at {size}: {len(t.groups)} coupled channel groups",
    }
