"""Where each width group's channels sit along every tensor dimension of a traced network, at any widths.

A dimension one group sets holds that group's channels, in order. A dimension read through a concatenation (a
DenseNet layer's ``norm1`` features and ``conv1`` inputs) holds several groups' channels one run after another, in
the concatenation's order, perhaps with constant stretches no group sets (the image's channels); a Linear after a
flatten holds ``H * W`` entries per channel of its group. :func:`compile_layouts` writes each dimension as its
ordered :data:`Segment` s, read off Torch-Pruning's channel indices at the default widths; :func:`spans` places
them at any widths. That is what exact shrinking slices (:func:`slices`) and what a concatenation consumer's
segment gate masks (:class:`nslab.models.resize.SegmentGate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["Layout", "Segment", "compile_layouts", "run_start", "slices", "spans", "tensor_dims"]

# (variable, channels per unit of it) for a group's run (variable L: the class count K); (None, n) for a
# constant stretch of n channels no group sets
Segment = tuple[int | None, int]
Layout = tuple[Segment, ...] | None  # None: not laid out in whole runs (a channel shuffle, a group read twice)


def run_start(idxs: Sequence[int]) -> int | None:
    """``idxs[0]`` when ``idxs`` is the run ``idxs[0], idxs[0] + 1, ...`` (in this order), else ``None``."""
    if not len(idxs):
        return None
    s = int(idxs[0])
    return s if [int(i) for i in idxs] == list(range(s, s + len(idxs))) else None


def compile_layouts(groups: Sequence[tuple[int, int, Mapping, Mapping]], sizes: Mapping[str, Mapping[str, int]]
                    ) -> dict[str, dict[str, Layout]]:
    """Every dimension's segments, in order along it.

    Args:
        groups: ``(variable, default width n, members, starts)`` per group: ``members`` maps ``(owner, role)`` to
            channels per unit c (the dimension holds ``c * n`` of the group's entries), ``starts`` the same keys
            to where that run starts at the default widths (``None``: not one run).
        sizes: owner -> role -> the dimension's default size.

    Returns:
        owner -> role -> :data:`Layout` (runs that overlap, or leave the dimension, give ``None``).
    """
    runs: dict[tuple[str, str], list[tuple]] = {}
    for var, n, members, starts in groups:
        for key, c in members.items():
            runs.setdefault(key, []).append((starts.get(key), var, c, n))
    return {owner: {role: _layout(runs.get((owner, role), []), size) for role, size in roles.items()}
            for owner, roles in sizes.items()}


def _layout(runs: list[tuple], size: int) -> Layout:
    if any(start is None for start, *_ in runs):
        return None
    segments, pos = [], 0
    for start, var, c, n in sorted(runs):
        if start < pos:
            return None
        if start > pos:
            segments.append((None, start - pos))
        segments.append((var, c))
        pos = start + c * n
    if pos > size:
        return None
    if pos < size:
        segments.append((None, size - pos))
    return tuple(segments)


def spans(layout: Sequence[Segment], values: Sequence[int]) -> list[tuple[int | None, int, int, int]]:
    """The segments at ``values`` (the widths, then K): ``(variable, channels per unit, start, length)`` each."""
    out, pos = [], 0
    for var, c in layout:
        length = c if var is None else c * values[var]
        out.append((var, c, pos, length))
        pos += length
    return out


def tensor_dims(kind: str, role: str) -> list[tuple[str, int]]:
    """``(attribute, dimension)`` of a module's tensors that a role's channels index (a conv weight is
    ``(out, in / groups, kh, kw)``, a linear's ``(out, in)``, a norm's tensors ``(C,)``)."""
    if kind == "norm":
        return [(a, 0) for a in ("weight", "bias", "running_mean", "running_var")]
    return [("weight", 0), ("bias", 0)] if role == "out" else [("weight", 1)]


def slices(layouts: Mapping[str, Mapping[str, Layout]], kinds: Mapping[str, str], param_dims: Mapping[str, int],
           conv_groups: Mapping[str, int], values: Sequence[int], keep: Mapping[int, torch.Tensor]
           ) -> dict[str, list[tuple[int, torch.Tensor, int]]]:
    """What to keep of every tensor when the groups in ``keep`` lose their other channels.

    Args:
        layouts: :func:`compile_layouts`'s; kinds, param_dims: as :class:`nslab.models.traced.Traced`'s.
        conv_groups: a grouped conv's (fixed) group count, by module name.
        values: the current widths (one per traced group), then K.
        keep: ``{group variable: sorted int64 indices of its channels to keep}``; every dimension holding one of
            these groups must have a layout.

    Returns:
        ``{state-dict key: [(dim, index, groups), ...]}``: index the whole dimension ``dim``; ``groups > 1`` for a
        grouped conv's per-group input dimension, whose index is over all its input channels (keeping the same
        number in each of its groups).
    """
    out: dict[str, list[tuple[int, torch.Tensor, int]]] = {}
    for owner, roles in layouts.items():
        for role, layout in roles.items():
            if layout is None or not any(var in keep for var, _ in layout):
                continue
            parts = []
            for var, c, start, length in spans(layout, values):
                if var in keep:
                    parts.append(start + (keep[var].long()[:, None] * c + torch.arange(c)).flatten())
                else:
                    parts.append(torch.arange(start, start + length))
            index = torch.cat(parts)
            if role == "param":
                out.setdefault(owner, []).append((param_dims[owner], index, 1))
                continue
            groups = conv_groups.get(owner, 1) if role == "in" else 1
            for attr, dim in tensor_dims(kinds[owner], role):
                out.setdefault(f"{owner}.{attr}", []).append((dim, index, groups))
    return out
