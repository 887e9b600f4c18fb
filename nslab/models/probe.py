"""One recorded forward pass of an arbitrary network: which modules run, their map sizes, and the ops nslab cannot size.

:func:`check_modules` rejects, before anything runs, a module whose parameters nslab cannot resize;
:func:`probe` runs one forward at the default widths under a dispatch mode that sees every aten op with the module
it runs in, and under :class:`~torch.utils.flop_counter.FlopCounterMode`. It returns the modules' first-call order,
each Conv2d's output map size and each Linear's token count (the factors the MACs polynomial needs), the output
shape and FlopCounterMode's total; it raises, naming the op and the module, on an op whose channel coupling or
count a width polynomial cannot express (a channel shuffle, attention, a functional conv or matmul).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["NORMS", "Probe", "check_modules", "probe"]

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
_COUNTED = ("convolution", "_convolution", "mm", "addmm")  # what FlopCounterMode counts for Conv2d / Linear
# op-name fragments a width polynomial cannot express, and why
_REFUSED = {
    "bmm": "a matrix product between activations (attention)",
    "baddbmm": "a matrix product between activations (attention)",
    "scaled_dot_product": "attention heads",
    "softmax": "a softmax over activations (attention)",
    "channel_shuffle": "a channel shuffle",
    "pixel_shuffle": "a pixel shuffle (moves channels into space)",
    "pixel_unshuffle": "a pixel unshuffle (moves space into channels)",
    "col2im": "a fold (moves channels into space)",
    "im2col": "an unfold (moves space into channels)",
}


def check_modules(model: nn.Module) -> None:
    """Refuse a module whose own parameters nslab cannot resize.

    Resizable: Conv2d (depthwise: its groups follow the width; grouped: a fixed number of groups), Linear,
    BatchNorm1d/2d, GroupNorm, LayerNorm over one (channel) dimension, and per-channel parameters of any module
    (at most one dimension longer than 1, such as a layer scale).

    Raises:
        ValueError: one line naming the module, its type and why.
    """
    for name, m in model.named_modules():
        kind = type(m).__name__
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            raise ValueError(f"module {name!r} ({kind}): a lazy module's parameters have no size until it runs, so "
                             "they cannot be resized; give it its sizes (e.g. nn.Linear instead of nn.LazyLinear)")
        if isinstance(m, nn.Conv2d):
            if 1 < m.groups == m.in_channels != m.out_channels:
                raise ValueError(f"module {name!r} ({kind}): a depthwise convolution with a channel multiplier "
                                 f"(groups = in = {m.groups}, out {m.out_channels}) is not supported; supported: "
                                 "groups=1, depthwise (groups = in = out channels) or a fixed number of groups")
        elif isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) != 1:
                raise ValueError(f"module {name!r} ({kind}): normalized_shape {tuple(m.normalized_shape)} spans "
                                 "several dimensions; supported: a LayerNorm over the channel dimension only")
        elif not isinstance(m, (nn.Linear, *NORMS)):
            for pname, p in m.named_parameters(recurse=False):
                if sum(s > 1 for s in p.shape) > 1:
                    raise ValueError(f"module {name!r} ({kind}): parameter {pname!r} of shape {tuple(p.shape)} "
                                     "cannot be resized; supported: Conv2d, Linear, BatchNorm, GroupNorm, LayerNorm "
                                     "and per-channel parameters")


@dataclass
class Probe:
    """What one forward at the default widths showed.

    Attributes:
        order: module names in the order of their first call.
        conv_maps: Conv2d name -> output map pixels (H_out * W_out), summed over its calls.
        linear_tokens: Linear name -> rows it maps per image (1 after a flatten), summed over its calls.
        output_shape: the network's output shape, (1, K).
        last: the module whose output is the network's output (the classifier), or ``""``.
        flops: FlopCounterMode's total for the forward (2 per MAC).
    """

    order: list[str] = field(default_factory=list)
    conv_maps: dict[str, int] = field(default_factory=dict)
    linear_tokens: dict[str, int] = field(default_factory=dict)
    output_shape: tuple[int, ...] = ()
    flops: int = 0
    last: str = ""


class _OpWatch(TorchDispatchMode):
    """Sees every aten op with the innermost module running it; keeps the first refused one."""

    def __init__(self, stack: list[tuple[str, nn.Module]]):
        super().__init__()
        self.stack, self.refused = stack, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.refused is None:
            self.refused = _judge(func.overloadpacket.__name__, out, self.stack, args)
        return out


def _channel_slice(op: str, args) -> str | None:
    """``x[:, a:b]`` on (N, C, ...) feature maps, short of all C channels: a partial residual or a channel split."""
    if op != "slice" or len(args) < 2 or args[1] != 1 or not isinstance(args[0], torch.Tensor) or args[0].dim() < 3:
        return None
    c = args[0].shape[1]
    start, end = (args[2] if len(args) > 2 else None) or 0, args[3] if len(args) > 3 else None
    end = c if end is None else min(end, c)
    return None if start == 0 and end >= c else f"channels {start}:{end} of {c}"


def _judge(op: str, out, stack: list[tuple[str, nn.Module]], args=()) -> str | None:
    where, inner = stack[-1] if stack else ("", None)
    where = where or f"<top level> ({type(inner).__name__})"
    part = _channel_slice(op, args)
    if part:
        return (f"op 'slice' in module {where!r} takes {part}: a slice of the channels (a partial residual or a "
                "channel split), which a width vector cannot size")
    for frag, why in _REFUSED.items():
        if frag in op:
            return f"op {op!r} in module {where!r}: {why} cannot be sized by a width vector"
    if isinstance(out, torch.Tensor) and out.dim() >= 5:
        return (f"op {op!r} in module {where!r} makes a {out.dim()}-D tensor {tuple(out.shape)}: a channel shuffle "
                "or grouped reshape of the channels, which a width vector cannot size")
    if op in _COUNTED and not isinstance(inner, (nn.Conv2d, nn.Linear)):
        return (f"op {op!r} in module {where!r} runs outside an nn.Conv2d / nn.Linear (a functional conv or "
                "matmul): its weight cannot be resized and its MACs not counted")
    return None


def probe(model: nn.Module, x: torch.Tensor) -> Probe:
    """Run ``model(x)`` once (``x``: (1, C, H, W)), recording what :class:`Probe` holds.

    Raises:
        ValueError: the forward fails (the message names the input size), an op nslab cannot size (named with
            its module), or an output that is not (1, K) logits.
    """
    rec, stack, hooks, seen, outputs = Probe(), [], [], set(), {}
    names = {m: n for n, m in model.named_modules()}

    def pre(m, args):
        stack.append((names[m], m))
        if names[m] not in seen:
            seen.add(names[m])
            rec.order.append(names[m])

    def post(m, args, out):
        stack.pop()
        n = names[m]
        outputs[n] = out
        if isinstance(m, nn.Conv2d):
            rec.conv_maps[n] = rec.conv_maps.get(n, 0) + out.shape[-1] * out.shape[-2]
        elif isinstance(m, nn.Linear):
            rec.linear_tokens[n] = rec.linear_tokens.get(n, 0) + out.numel() // m.out_features

    for m in model.modules():
        hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    watch = _OpWatch(stack)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc, watch:
            out = model(x)
    except Exception as e:  # noqa: BLE001 -- any failure of the user's network is reported as bad input
        if watch.refused:
            raise ValueError(watch.refused) from None
        raise ValueError(f"the network cannot take an input of size {tuple(x.shape[1:])}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        for h in hooks:
            h.remove()
    if watch.refused:
        raise ValueError(watch.refused)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the network's output is {shape}; nslab needs one (N, K) tensor of logits")
    rec.output_shape, rec.flops = tuple(out.shape), int(fc.get_total_flops())
    rec.last = next((n for n, o in outputs.items() if o is out and isinstance(model.get_submodule(n), (nn.Conv2d,
                                                                                                      nn.Linear))), "")
    return rec
