"""Build a traced network at any group widths, smaller or larger than its default: every tensor resized in place.

The factory builds a fresh network at its default widths; every Conv2d (depthwise ones keep ``groups = channels``),
Linear, BatchNorm, GroupNorm, LayerNorm and per-channel parameter whose size changes gets tensors of the new size,
drawn like the factory drew the old ones: a constant tensor (a BatchNorm's 1 and 0, a zero bias, a layer scale of
1e-6) stays that constant; any other is resampled from the old tensor's values, a weight scaled by
``sqrt(fan_in_old / fan_in_new)`` so that its variance follows the fan-in as the usual initialisations do. Tensors
whose size does not change keep the factory's values. Then one :class:`~nslab.models.Gate` per group is attached to
the group's anchor module (run by a forward hook on its output), and the network's own gates, if it had any, become
identities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .common import Gate
from .polynomial import evaluate_form
from .traced import Traced, make_network

__all__ = ["build_traced"]


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


def build_traced(traced: Traced, widths: Sequence[int], num_classes: int, seed: int | None = None) -> nn.Module:
    """The traced network with exactly these group widths and classes, freshly built (CPU float32).

    Args:
        traced: from :func:`nslab.models.traced.trace`.
        widths: one positive int per group (validated by the caller).
        num_classes: K; must be the factory's K when no layer's outputs are the logits.
        seed: seeds the resampling of resized tensors; ``None``: torch's global RNG, like the factory's own
            draws (so ``seed_everything`` makes the whole build reproducible).

    Returns:
        The network; one :class:`~nslab.models.Gate` per group, index = the group's position.

    Raises:
        ValueError: a size a module cannot take (named), or a K the network cannot change.
    """
    if not traced.has_classifier and num_classes != traced.default_classes:
        raise ValueError(f"{traced.label}: no layer's outputs are the logits, so num_classes must stay "
                         f"{traced.default_classes}, got {num_classes}")
    values = traced.values(widths, num_classes)
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
    for i, g in enumerate(traced.groups):
        anchor = model.get_submodule(g.anchor)
        anchor.nslab_gate = Gate(i)
        anchor.register_forward_hook(_apply_gate)
    return model
