"""Which tensors each width entry governs, masks at the gates, and exact physical shrinking.

Pruning a channel means its gate output is zero from then on (:func:`apply_masks`). Where that can be
done exactly by removing weights, the network is rebuilt smaller (:func:`shrink_model`): surviving
weights *and* the optimiser state are sliced over (:func:`channel_slices`, :func:`cut`), so the rebuilt network
computes what the masked one did. Which width entries shrink exactly is each network's
:attr:`nslab.models.Architecture.shrinkable` (:func:`shrinkable_layers`; the network's module says why, e.g. only
ResNet18's middle widths), and which tensors a shrink slices its :attr:`~nslab.models.Architecture.slices`.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..data import DatasetSpec, dataset_spec
from ..models import Architecture, Gate, create_model, get_arch
from ..models.resize import MemberGate, SegmentGate
from ..models.traced_arch import width_multiples

__all__ = ["Handles", "apply_masks", "channel_map", "channel_slices", "cut", "empty_model", "find_gates",
           "gate_entries", "gate_modules", "gate_points", "shrink_model", "shrinkable_layers"]

Dataset = str | DatasetSpec


# --------------------------------------------------------------------------------------------------------
# structure: which tensors each width entry governs


def find_gates(model: nn.Module) -> dict[int, Gate]:
    """The model's :class:`~nslab.models.Gate` modules by width index (0..L-1)."""
    gates = {m.index: m for m in model.modules() if isinstance(m, Gate)}
    if sorted(gates) != list(range(len(gates))):
        raise ValueError(f"gate indices must be 0..L-1, found {sorted(gates)}")
    return gates


def gate_points(model: nn.Module) -> dict[int, list[nn.Module]]:
    """Every gated point of each width entry: its :class:`~nslab.models.Gate`, then the
    :class:`~nslab.models.resize.MemberGate` s of a traced network's coupled group (one per member output; see
    :func:`nslab.models.resize.gate_members`) and the :class:`~nslab.models.resize.SegmentGate` s of the
    concatenations that read it (one point may serve several entries). A hand-written network has one point per
    entry."""
    points = {i: [g] for i, g in find_gates(model).items()}
    for m in model.modules():
        for i, _ in gate_entries(m) if isinstance(m, (MemberGate, SegmentGate)) else ():
            points[i].append(m)
    return points


def gate_entries(point: nn.Module) -> list[tuple[int, slice | None]]:
    """The width entries a gate point carries: ``(index, its channels along the point's dim)``, ``None`` for all."""
    if isinstance(point, SegmentGate):
        return [(i, slice(start, start + n)) for i, start, n in point.segments]
    return [(point.index, None)]


def gate_modules(points: dict[int, list[nn.Module]]) -> list[nn.Module]:
    """The distinct gate points of :func:`gate_points` (a concatenation's serves several entries), in order."""
    return list({id(p): p for ps in points.values() for p in ps}.values())


def channel_map(arch: str, dataset: Dataset = "cifar10", convcut: bool = False) -> dict[int, tuple]:
    """Which state-dict entries (and which dimension) each width entry indexes.

    Found by building the network on the meta device at the default widths and once more with width
    ``i`` one smaller (one multiple smaller, for a traced network's grouped layers, whose widths move in
    steps of it): the dimensions that shrink by exactly that belong to entry ``i``. (Dimensions tied
    to a width by a factor, like MobileNetV2's expansion, or tensors that appear when an identity
    shortcut becomes a projection, are not listed: those entries are masked, never sliced.)

    Returns:
        ``{i: ((state_dict_key, dim), ...)}`` for i in 0..L-1.
    """
    return _channel_map(get_arch(arch), dataset, convcut)


@functools.lru_cache(maxsize=32)
def _channel_map(a: Architecture, dataset: Dataset, convcut: bool) -> dict[int, tuple]:
    # Cached per Architecture object, not per name: an architecture registered again under the same name
    # (a test's, or a notebook's after an edit) gets its own map.
    arch, base = a.name, list(a.default_widths)

    def shapes(widths: list[int]) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            m = create_model(arch, widths, dataset, convcut)
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}

    ref = shapes(base)
    out: dict[int, tuple] = {}
    for i, m in enumerate(width_multiples(a)):  # a grouped layer's width moves in steps of its multiple
        w = list(base)
        w[i] -= m
        s = shapes(w)
        out[i] = tuple(  # a dimension that is the entry's channels (not a concatenation holding them and others)
            (k, d) for k, shp in ref.items() if k in s for d, n in enumerate(shp) if s[k][d] == n - m and n == base[i]
        )
    return out


def channel_slices(arch: str, widths: Sequence[int], keep: dict[int, torch.Tensor], dataset: Dataset = "cifar10",
                   convcut: bool = False) -> dict[str, list[tuple[int, torch.Tensor, int]]]:
    """What a shrink keeps of every tensor: the architecture's own map (:attr:`~nslab.models.Architecture.slices`,
    a traced network's concatenations and grouped convs), else each entry's :func:`channel_map` dimensions.

    Args:
        widths: (L,) the network's current widths; keep: ``{i: sorted int64 indices of entry i's channels to keep}``.

    Returns:
        ``{state-dict key: [(dim, index, groups), ...]}`` (see :func:`cut`).
    """
    a = get_arch(arch)
    if a.slices is not None:
        spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
        return a.slices(list(widths), keep, spec.num_classes, spec.variant, convcut)
    cmap, out = channel_map(arch, dataset, convcut), {}
    for i, idx in keep.items():
        for key, dim in cmap[i]:
            out.setdefault(key, []).append((dim, idx, 1))
    return out


def cut(t: torch.Tensor, parts: Sequence[tuple[int, torch.Tensor, int]]) -> torch.Tensor:
    """``t`` indexed along each ``(dim, index, groups)`` of :func:`channel_slices`; with ``groups > 1`` the
    dimension is a grouped conv's per-group input (``in / groups`` of them) and ``index`` runs over all ``in``
    channels, the same number in each group: each group's rows of ``t`` keep their group's channels."""
    for dim, index, groups in parts:
        index = index.to(t.device)
        if groups == 1:
            t = t.index_select(dim, index)
            continue
        per, size = len(index) // groups, t.shape[dim]  # kept and current inputs per group (dim 1)
        local = index[: per * groups].view(groups, per) - torch.arange(groups, device=t.device)[:, None] * size
        if len(index) % groups or local.min() < 0 or local.max() >= size:
            raise ValueError(f"a grouped conv's {groups} groups would keep unequal numbers of input channels")
        rows = t.shape[0] // groups  # (out, in / groups, ...): group g's filters are rows g * rows ...
        shape = (groups, rows, per, *t.shape[2:])
        at = local.view(groups, 1, per, *[1] * (t.dim() - 2)).expand(shape)
        t = t.view(groups, rows, size, *t.shape[2:]).gather(2, at).reshape(t.shape[0], per, *t.shape[2:])
    return t


def shrinkable_layers(arch: str) -> frozenset[int]:
    """Width indices whose pruned channels can be removed exactly (the architecture's ``shrinkable``)."""
    return get_arch(arch).shrinkable


# --------------------------------------------------------------------------------------------------------
# masks


class Handles:
    """Forward hooks registered together (by :func:`apply_masks`, or a criterion), removed together."""

    def __init__(self, handles: list):
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def apply_masks(model: nn.Module, masks: dict[int, torch.Tensor]) -> Handles:
    """Zero pruned channels at the gates: the output of every gate point of entry ``i`` (:func:`gate_points`) is
    multiplied by ``masks[i]``.

    Args:
        model: a network with gates.
        masks: ``{i: (w_i,) float tensor of 0/1}``; read at every forward, so its entries may be added, replaced or
            removed in between (a mask tensor itself is replaced, never edited in place: a concatenation's gate
            reuses the scale it built until one of its tensors changes).

    Returns:
        A handle whose ``remove()`` detaches the hooks.
    """
    handles = []
    for point in gate_modules(gate_points(model)):
        entries, memo = gate_entries(point), []  # memo: this point's last concatenation scale

        def hook(m, _args, out, entries=entries, memo=memo):
            if len(entries) == 1 and entries[0][1] is None:
                scale = masks.get(entries[0][0])
            else:
                scale = _segment_scale(masks, entries, out, m.dim, memo)
            if scale is None:
                return None
            shape = [1] * out.dim()
            shape[m.dim] = -1  # the gate's channel dimension (1, or -1 for a channels-last output)
            return out * scale.to(out.dtype).view(shape)

        handles.append(point.register_forward_hook(hook))
    return Handles(handles)


def _segment_scale(masks: dict[int, torch.Tensor], entries: list[tuple[int, slice]], out: torch.Tensor, dim: int,
                   memo: list) -> torch.Tensor | None:
    """A concatenation's gate: (C,) ones but where its entries' masks are, or ``None`` when none is masked. It is
    built again only when a mask tensor is replaced (``memo`` keeps the tensors it was built from, so their ids stay
    theirs): else its runs' copies would run at every forward, 651 small copies in DenseNet121's (58 norms read
    593 runs), each a kernel launch on a GPU."""
    used, where = tuple(masks.get(i) for i, _ in entries), (out.device, out.dtype)
    if memo and memo[0] == where and all(a is b for a, b in zip(memo[1], used)):
        return memo[2]
    scale = None
    if any(u is not None for u in used):
        scale = torch.ones(out.shape[dim], device=out.device, dtype=out.dtype)
        for (_, part), u in zip(entries, used):
            if u is not None:
                scale[part] = u
    memo[:] = [where, used, scale]
    return scale


# --------------------------------------------------------------------------------------------------------
# physical shrinking


def empty_model(
    arch: str,
    widths: Sequence[int],
    dataset: Dataset = "cifar10",
    convcut: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> nn.Module:
    """The network at ``widths`` with uninitialised storage (built on the meta device, then allocated):
    the cheap target of a ``load_state_dict``."""
    with torch.device("meta"):
        model = create_model(arch, list(widths), dataset, convcut)
    model = model.to_empty(device=device).to(dtype)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def shrink_model(
    model: nn.Module,
    arch: str,
    widths: Sequence[int],
    keep: dict[int, torch.Tensor],
    dataset: Dataset = "cifar10",
    convcut: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[nn.Module, list[int], torch.optim.Optimizer | None]:
    """Rebuild ``model`` with only the ``keep`` channels of the given shrinkable width entries.

    The new network (same device, dtype, memory format and train/eval mode) holds the surviving slices
    of every parameter and buffer, so in eval mode it computes exactly what ``model`` computes with the
    removed channels zeroed at their gates. The optimiser state (momentum buffers) is sliced the same way.

    Args:
        model: the network, built with ``widths``.
        arch, dataset, convcut: its architecture.
        widths: (L,) its current physical widths.
        keep: ``{i: sorted int64 indices of the channels of entry i to keep}``; only entries in
            :func:`shrinkable_layers`. An entry whose width is a multiple m of a grouped conv's groups keeps the same
            number in each of its m equal blocks (:func:`nslab.search.pruner.balanced_keep`).
        optimizer: the optimiser over ``model``'s parameters (one param group), or ``None``.

    Returns:
        ``(new_model, new_widths, new_optimizer)`` (``None`` optimiser when none was given).
    """
    ok = shrinkable_layers(arch)
    bad = sorted(set(keep) - ok)
    if bad:
        raise ValueError(
            f"{arch}: width entries {bad} cannot be removed exactly (mask them); shrinkable: {sorted(ok)}"
        )
    new_widths, multiples = list(widths), width_multiples(get_arch(arch))
    for i, idx in keep.items():
        if len(idx) < 1:
            raise ValueError(f"width entry {i} would keep no channel")
        m = multiples[i]
        if m > 1 and len(set(torch.bincount(idx.cpu() // (widths[i] // m), minlength=m).tolist())) != 1:
            raise ValueError(f"width entry {i} (a grouped conv's, {m} equal blocks of {widths[i] // m} channels) "
                             f"must keep the same number of channels in each block")
        new_widths[i] = len(idx)
    slices = channel_slices(arch, widths, keep, dataset, convcut)
    ref = next(model.parameters())
    new = empty_model(arch, new_widths, dataset, convcut, ref.device, ref.dtype)
    old = model.state_dict()
    state = OrderedDict((k, cut(v, slices.get(k, ()))) for k, v in old.items())
    state._metadata = getattr(old, "_metadata", None)  # module versions: some check theirs (torchvision's MNASNet)
    new.load_state_dict(state)
    if _channels_last(ref):
        new = new.to(memory_format=torch.channels_last)
    new.train(model.training)
    new_opt = None
    if optimizer is not None:
        if len(optimizer.param_groups) != 1:
            raise ValueError("shrink_model carries optimisers with a single param group only")
        names = {id(p): n for n, p in model.named_parameters()}
        new_params = dict(new.named_parameters())
        new_opt = type(optimizer)(new.parameters(), **optimizer.defaults)
        new_opt.param_groups[0].update({k: v for k, v in optimizer.param_groups[0].items() if k != "params"})
        for p, state in optimizer.state.items():
            name = names[id(p)]
            q = new_params[name]
            new_opt.state[q] = {
                k: _same_format(cut(v, slices.get(name, ())), v) if torch.is_tensor(v) and v.shape == p.shape else v
                for k, v in state.items()
            }
    return new, new_widths, new_opt


def _channels_last(t: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels-last (and not also plain contiguous, as size-1 dims can make it)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _same_format(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in ``like``'s memory format: ``index_select`` returns contiguous (NCHW) tensors, and a momentum
    buffer of a channels-last weight left NCHW would make every later optimiser step convert layouts."""
    return t.contiguous(memory_format=torch.channels_last) if _channels_last(like) else t
