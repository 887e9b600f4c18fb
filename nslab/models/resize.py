"""Build a traced network at any group widths, smaller or larger than its default: every tensor resized in place.

The factory builds a fresh network at its default widths; every Conv2d (depthwise ones keep ``groups = channels``),
Linear, BatchNorm, GroupNorm, LayerNorm and per-channel parameter whose size changes gets tensors of the new size,
drawn like the factory drew the old ones: a constant tensor (a BatchNorm's 1 and 0, a zero bias, a layer scale of
1e-6) stays that constant; any other is resampled from the old tensor's values, a weight scaled by
``sqrt(fan_in_old / fan_in_new)`` so that its variance follows the fan-in as the usual initialisations do. Tensors
whose size does not change keep the factory's values. Then every group is gated at each of its members' outputs
(:func:`gate_members`: a forward hook runs the output through the gate): the first carries the group's
:class:`~nslab.models.Gate`, the others a :class:`MemberGate` of the same index, so that masking a channel zeroes it on
every branch a residual add, a depthwise conv or a squeeze-and-excitation gate ties together, and Taylor-FO reads the
gradient of one gate shared by all of them. A norm that reads a concatenation (DenseNet's) carries a
:class:`SegmentGate` over each group's run of its channels, so a masked channel is zero after every BatchNorm that
reads it, as if removed. The network's own gates, if it had any, become identities.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from .common import Gate
from .factory import make_network
from .layout import spans
from .polynomial import evaluate_form, form_var
from .traced import Traced

__all__ = ["MemberGate", "SegmentGate", "build_traced", "channel_dim", "gate_members"]

_CHANNEL_FIRST = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)  # modules whose output is (N, C, H, W), channels at dim 1


class MemberGate(nn.Identity):
    """A second (third, ...) gated output of width group ``index`` of a traced network: masked and scored with the
    group's :class:`~nslab.models.Gate` (:func:`nslab.search.channels.gate_points` lists both); ``dim`` as there.
    Not a Gate subclass: a network's Gates are its width entries, one each."""

    def __init__(self, index: int, dim: int = 1):
        super().__init__()
        self.index, self.dim = index, dim

    extra_repr = Gate.extra_repr


class SegmentGate(nn.Identity):
    """The gated output of a module whose channels hold several width entries' runs (a concatenation's consumer: a
    DenseNet layer's ``norm1``): ``segments`` = ``((index, start, length), ...)`` along ``dim``, each masked and
    scored with its entry's other gate points. Without it a masked channel read through a concatenation would
    become its BatchNorm's bias there, and the masked network would not be the one with that channel removed."""

    def __init__(self, segments: Sequence[tuple[int, int, int]], dim: int = 1):
        super().__init__()
        self.segments, self.dim = tuple(segments), dim

    def extra_repr(self) -> str:
        return f"segments={list(self.segments)}, dim={self.dim}"


def channel_dim(m: nn.Module) -> int | None:
    """The channel dimension of ``m``'s output: 1 for a Conv2d, BatchNorm2d or GroupNorm (N, C, H, W); -1 for a
    Linear, or a LayerNorm over the last dimension (ConvNeXt's channels-last (N, H, W, C) blocks); ``None`` for a
    LayerNorm subclass with its own forward (which may permute: torchvision's ``LayerNorm2d``)."""
    if isinstance(m, _CHANNEL_FIRST):
        return 1
    if isinstance(m, nn.Linear) or (isinstance(m, nn.LayerNorm) and type(m).forward is nn.LayerNorm.forward):
        return -1
    return None


def gate_members(traced: Traced, i: int, modules: dict[str, nn.Module]) -> list[tuple[str, int]]:
    """The members of group ``i`` whose outputs are gated: where a mask zeroes the group's channels on every branch.

    A member is gated when its output's channel dimension (:func:`channel_dim`) is exactly the group (its Form is
    ``w_i``: not a concatenation's consumer, which mixes groups): every normalisation of the group, and every conv or
    linear output not read first by one of those norms (a conv followed by its BatchNorm is gated after the norm
    only, since a BatchNorm turns a zeroed input channel into its bias). Forward order.

    Args:
        traced: the traced network; i: the group's index in ``traced.groups``; modules: the built network's modules.

    Returns:
        ``(module name, channel dimension)`` pairs (possibly none: the caller falls back to the group's anchor).
    """
    whole, dims = form_var(i), traced.dims
    pos = {n: k for k, n in enumerate(traced.order)}
    members = traced.groups[i].members
    norms = {o for o, r, _ in members if r == "norm" and dims[o]["norm"] == whole and
             channel_dim(modules.get(o)) is not None}
    out = []
    for o, r, _ in members:
        if o in norms and r == "norm":
            out.append((o, channel_dim(modules[o])))
        elif r == "out" and dims[o]["out"] == whole and isinstance(modules.get(o), (nn.Conv2d, nn.Linear)):
            k = pos.get(o, -2) + 1
            if not (0 < k < len(traced.order) and traced.order[k] in norms):
                out.append((o, channel_dim(modules[o])))
    return out


def _redraw(old: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """A tensor of ``shape`` drawn like ``old`` was (see the module docstring)."""
    if tuple(old.shape) == shape:
        return old.detach().clone()
    if old.is_meta:
        return torch.empty(shape, dtype=old.dtype, device="meta")
    flat = old.detach().flatten()
    if old.numel() == 0 or bool((flat == flat[0]).all()):
        return torch.full(shape, flat[0].item() if old.numel() else 0.0, dtype=old.dtype)
    pick = torch.randint(flat.numel(), shape, generator=generator)
    new = flat[pick]
    if old.dim() >= 2:
        fan_old, fan_new = old.numel() // old.shape[0], math.prod(shape[1:])
        new = new * math.sqrt(fan_old / max(fan_new, 1))
    return new


def _set(owner: nn.Module, attr: str, shape: tuple[int, ...], gen: torch.Generator | None) -> None:
    old = getattr(owner, attr)
    if old is None or tuple(old.shape) == shape:
        return
    new = _redraw(old, shape, gen)
    if isinstance(old, nn.Parameter):
        setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        owner.register_buffer(attr, new)


def _resize(name: str, m: nn.Module, kind: str, size: dict[str, int], gen: torch.Generator | None) -> None:
    """Resize module ``m`` in place to the sizes ``size`` (role -> channels)."""
    if kind in ("conv", "depthwise", "grouped"):
        out, cin = size["out"], size["out"] if kind == "depthwise" else size["in"]
        if kind == "grouped" and (out % m.groups or cin % m.groups):
            raise ValueError(f"module {name!r} (Conv2d, {m.groups} groups) cannot take {cin} -> {out} channels: "
                             f"both must be multiples of {m.groups}")
        m.in_channels, m.out_channels = cin, out
        if kind == "depthwise":
            m.groups = out
        _set(m, "weight", (out, cin // m.groups, *m.kernel_size), gen)
        _set(m, "bias", (out,), gen)
    elif kind == "linear":
        m.in_features, m.out_features = size["in"], size["out"]
        _set(m, "weight", (size["out"], size["in"]), gen)
        _set(m, "bias", (size["out"],), gen)
    else:
        c = size["norm"]
        if isinstance(m, nn.GroupNorm):
            if c % m.num_groups:
                raise ValueError(f"module {name!r} (GroupNorm, {m.num_groups} groups) cannot take {c} channels: "
                                 f"its width must be a multiple of {m.num_groups}")
            m.num_channels = c
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = (c,)
        else:
            m.num_features = c
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if getattr(m, attr, None) is not None:
                _set(m, attr, (c,), gen)


def _apply_gate(module: nn.Module, args, output):
    """Forward hook: run the module's output through its group's gate (an identity that pruning hooks)."""
    return module.nslab_gate(output)


def _replace_gates(model: nn.Module) -> None:
    for name, m in list(model.named_modules()):
        if isinstance(m, Gate) and name:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())


def build_traced(traced: Traced, widths: Sequence[int], num_classes: int, seed: int | None = None,
                 gated: Sequence[int] | None = None) -> nn.Module:
    """The traced network with exactly these group widths and classes, freshly built (CPU float32).

    Args:
        traced: from :func:`nslab.models.traced.trace`.
        widths: one positive int per group of ``traced.groups`` (validated by the caller).
        num_classes: K; must be the factory's K when no layer's outputs are the logits.
        seed: seeds the resampling of resized tensors; ``None``: torch's global RNG, like the factory's own
            draws (so ``seed_everything`` makes the whole build reproducible).
        gated: the groups (indices into ``traced.groups``) that get gates, gate index = position in this list (the
            width vector's entries); ``None``: all of them. A fixed group gets none.

    Returns:
        The network; group ``gated[j]`` carries one :class:`~nslab.models.Gate` of index j and a
        :class:`MemberGate` of index j on each of its other gated members (:func:`gate_members`).

    Raises:
        ValueError: a size a module cannot take (named), or a K the network cannot change.
    """
    if not traced.has_classifier and num_classes != traced.default_classes:
        raise ValueError(f"{traced.label}: no layer's outputs are the logits, so num_classes must stay "
                         f"{traced.default_classes}, got {num_classes}")
    values = traced.values(widths, num_classes)
    if torch.get_default_device().type == "meta":  # no data, no random draws: a copy of one meta build will do
        if traced.meta_template is None:
            traced.meta_template = make_network(traced.factory, traced.label)
        model = copy.deepcopy(traced.meta_template)
    else:
        model = make_network(traced.factory, traced.label)
    _replace_gates(model)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    for owner, roles in traced.dims.items():
        size = {r: evaluate_form(f, values) for r, f in roles.items()}
        if owner in params:  # a per-channel parameter
            p, (mod, _, attr), dim = params[owner], owner.rpartition("."), traced.param_dims[owner]
            shape = tuple(size["param"] if i == dim else s for i, s in enumerate(p.shape))
            _set(model.get_submodule(mod) if mod else model, attr, shape, gen)
        else:
            _resize(owner, model.get_submodule(owner), traced.kinds[owner], size, gen)
    modules = dict(model.named_modules())
    entry = {i: j for j, i in enumerate(range(len(traced.groups)) if gated is None else gated)}
    for i, j in entry.items():
        anchor = traced.groups[i].anchor
        points = gate_members(traced, i, modules) or [(anchor, channel_dim(modules[anchor]) or 1)]
        for k, (name, dim) in enumerate(points):
            _gate(modules[name], Gate(j, dim) if k == 0 else MemberGate(j, dim))
    for name, roles in traced.layouts.items():  # the norms of a concatenation (or of a group and constant channels)
        layout, dim = roles.get("norm"), channel_dim(modules.get(name))
        if layout is None or dim is None or (len(layout) == 1 and layout[0][0] is not None):
            continue
        segments = [(entry[v], start, n) for v, _, start, n in spans(layout, values) if v in entry]
        if segments:
            _gate(modules[name], SegmentGate(segments, dim))
    return model


def _gate(m: nn.Module, gate: nn.Module) -> None:
    m.nslab_gate = gate
    m.register_forward_hook(_apply_gate)
