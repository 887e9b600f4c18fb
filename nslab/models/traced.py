"""Any CNN as a width vector: its coupled channel groups, found by tracing, and its counts as compiled polynomials.

:func:`trace` builds the network once (from a callable or a name: ``"torchvision:resnet34"``,
``"timm:efficientnet_b0"``, ``"package.module:function"``), checks every module and op (:mod:`nslab.models.probe`),
and asks Torch-Pruning's ``DependencyGraph`` which output and input channels move together: a residual add, a
depthwise conv, a concatenation, a squeeze-and-excitation gate tie channels into one *group*, one entry of the width
vector. Every resizable tensor dimension becomes an affine :data:`~nslab.models.polynomial.Form` of the group widths
and the class count K (a concatenation's consumer takes the sum of its inputs' groups; a Linear after a flatten takes
``H * W`` channels per unit of its group), so parameters and MACs per image are polynomials, compiled once and
checked against the built network and FlopCounterMode before :func:`trace` returns.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from math import gcd, lcm
from unittest import mock

import torch
from torch import nn

from .factory import make_network, resolve_factory
from .layout import Layout, compile_layouts, run_start
from .polynomial import Form, Polynomial, evaluate_form, expand, form_const
from .probe import NORMS, Probe, check_modules, probe

__all__ = ["Traced", "TracedGroup", "trace"]


@dataclass(frozen=True)
class TracedGroup:
    """One coupled channel group: one entry of the width vector.

    Attributes:
        name: its first producer's module name (forward order), e.g. ``"layer1.0.conv1"``.
        default: its width in the factory's network (channels).
        members: ``(tensor owner, role, channels per unit width)`` of every dimension it sets: role ``"out"``
            (a conv's or linear's outputs), ``"in"`` (their inputs; a concatenation's consumer lists each input
            group), ``"norm"`` (a normalisation's features) or ``"param"`` (a per-channel parameter, the owner
            is its qualified name); channels per unit is ``H * W`` for a linear after a flatten, else 1.
        anchor: the module after which this group's :class:`~nslab.models.Gate` runs (its first norm, else its
            first producer).
        multiple: the width must be a multiple of this (a GroupNorm's or grouped conv's group count), else 1.
    """

    name: str
    default: int
    members: tuple[tuple[str, str, int], ...]
    anchor: str
    multiple: int = 1

    def describe(self) -> str:
        """The members in words, for :attr:`nslab.models.WidthGroup.layers`."""
        text = "; ".join(f"{o} {r}" + (f" x{c}" if c != 1 else "") for o, r, c in self.members)
        return text + (f" (widths: multiples of {self.multiple})" if self.multiple > 1 else "")


@dataclass
class Traced:
    """A traced network: what :func:`trace` found, enough to count and to build at any widths.

    Attributes:
        factory: builds the network at its default widths; label: its name in messages.
        input_size: (C, H, W) of one image.
        groups: the width groups, in forward order (L of them).
        default_classes: K of the factory's network.
        has_classifier: whether some layer's outputs are the logits (then K can be changed).
        dims: tensor owner (module name; for a per-channel parameter its qualified name) -> role -> Form over the
            L widths and K (variable L); roles ``"out"`` / ``"in"`` (conv, linear), ``"norm"``, ``"param"``.
        kinds: module name -> ``"conv"``, ``"depthwise"`` (groups = in = out channels, all three follow the
            width), ``"grouped"`` (a fixed number of groups > 1), ``"linear"``, ``"norm"``.
        param_dims: per-channel parameter (qualified name) -> the dimension that holds its channels.
        params: the parameter-count polynomial; macs: the MACs polynomial (variables: widths then K).
        seconds: discovery and compile time.
        order: module names in the order of their first call (which module's output feeds which norm).
        layouts: tensor owner -> role -> where each group's channels sit along that dimension
            (:mod:`nslab.models.layout`: a concatenation's consumer holds several groups' runs).
        meta_template: the factory's network on the meta device, copied for every meta build (a shrink's target, a
            channel map, the counts' check): the one :func:`trace` built, moved there (a factory that computes with
            tensors while it builds, as torchvision's RegNets, would otherwise be built again on the CPU: 14 s for
            regnet_y_128gf); the factory's own initialisation costs tens of milliseconds even on the meta device.
    """

    factory: Callable[[], nn.Module]
    label: str
    input_size: tuple[int, int, int]
    groups: tuple[TracedGroup, ...]
    default_classes: int
    has_classifier: bool
    dims: dict[str, dict[str, Form]]
    kinds: dict[str, str]
    param_dims: dict[str, int]
    params: Polynomial
    macs: Polynomial
    seconds: float = 0.0
    order: tuple[str, ...] = ()
    layouts: dict[str, dict[str, Layout]] = field(default_factory=dict)
    meta_template: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def default_widths(self) -> tuple[int, ...]:
        return tuple(g.default for g in self.groups)

    def values(self, widths: Sequence[int], num_classes: int) -> list[int]:
        """The polynomial variables: the widths, then K."""
        return [*widths, num_classes]


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.Conv2d):
        if m.groups == 1:
            return "conv"
        return "depthwise" if m.groups == m.in_channels == m.out_channels else "grouped"
    if isinstance(m, nn.Linear):
        return "linear"
    return "norm" if isinstance(m, NORMS) else None


def _norm_size(m: nn.Module) -> int:
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[0]
    return m.num_features


def _defaults(model: nn.Module, unwrapped: dict[str, int]) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Every resizable dimension's size in the factory's network, and each module's kind."""
    sizes: dict[str, dict[str, int]] = {}
    kinds: dict[str, str] = {}
    for name, m in model.named_modules():
        k = _kind(m)
        if k is None:
            continue
        kinds[name] = k
        if k in ("conv", "depthwise", "grouped"):
            sizes[name] = {"out": m.out_channels, "in": m.in_channels}
        elif k == "linear":
            sizes[name] = {"out": m.out_features, "in": m.in_features}
        else:
            sizes[name] = {"norm": _norm_size(m)}
    params = dict(model.named_parameters())
    for pname, dim in unwrapped.items():
        sizes[pname] = {"param": params[pname].shape[dim]}
    return sizes, kinds


def _tp_groups(model: nn.Module, x: torch.Tensor):
    """Torch-Pruning's dependency graph of ``model`` on ``x``: its groups and the unwrapped parameters' dims."""
    import warnings

    import torch_pruning as tp

    try:  # torch-pruning 1.6's layout; elsewhere the repeats are only slower
        from torch_pruning.dependency import index_mapping

        skip_repeats = (mock.patch.object(index_mapping, "update_index_mapping", lambda graph: None)
                        if hasattr(index_mapping, "update_index_mapping") else contextlib.nullcontext())
    except ImportError:
        skip_repeats = contextlib.nullcontext()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
        # build_dependency has set every concat / split / flatten index mapping; get_pruning_group recomputes
        # them all for every group (for graphs pruned in between). Nothing is pruned here, so skip the repeats:
        # they cost densenet121 two seconds (120 groups x 58 concatenations).
        with skip_repeats:
            groups = list(dg.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]))
    pnames = {id(p): n for n, p in model.named_parameters()}
    unwrapped = {pnames[id(u.parameters)]: u.pruning_dim for u in dg.unwrapped_parameters}
    return dg, groups, unwrapped, tp.ops._OutputOp  # noqa: SLF001 -- the graph's output node type


def _role(dg, kind: str | None, handler) -> str:
    if kind in ("conv", "grouped", "linear"):
        return "out" if dg.is_out_channel_pruning_fn(handler) else "in"
    return "out" if kind == "depthwise" else "norm" if kind == "norm" else "param"


def _adopt(owner: str, module, sizes: dict, unwrapped: dict[str, int]) -> list[tuple[str, str]]:
    """The per-channel parameters (one dimension longer than 1) of a module the graph ties to a group, added to
    ``sizes`` and ``unwrapped``; none for a tensor-free op."""
    if not isinstance(module, nn.Module):
        return []
    out = []
    for k, p in module.named_parameters(recurse=False):
        dims = [i for i, d in enumerate(p.shape) if d > 1]
        if len(dims) == 1:
            pname = f"{owner}.{k}" if owner else k
            sizes[pname], unwrapped[pname] = {"param": p.shape[dims[0]]}, dims[0]
            out.append((pname, "param"))
    return out


def _couple(model: nn.Module, x: torch.Tensor, rec: Probe):
    """Group the channels (Torch-Pruning), order the groups by forward order, and write every dimension's Form."""
    dg, tp_groups, unwrapped, output_op = _tp_groups(model, x)
    sizes, kinds = _defaults(model, unwrapped)
    names = {id(m): n for n, m in model.named_modules()} | {id(p): n for n, p in model.named_parameters()}
    first = {n: i for i, n in enumerate(rec.order)}
    found, output = [], None
    for g in tp_groups:
        n = len(g.items[0].idxs)
        members, starts, is_output = {}, {}, False
        for item in g.items:
            target = item.dep.target.module
            if isinstance(target, output_op):
                is_output = True
                continue
            owner = names.get(id(target))
            if owner is None:
                continue  # an op node (add, relu, flatten, cat): it owns no tensor
            if owner not in sizes:  # a module nslab does not know (a PReLU): its per-channel parameters
                owners = _adopt(owner, target, sizes, unwrapped)
            else:
                owners = [(owner, _role(dg, kinds.get(owner), item.dep.handler))]
            for owner, role in owners:
                if len(item.idxs) % n:
                    raise ValueError(f"module {owner!r}: {len(item.idxs)} of its {role} channels move with a group "
                                     f"of {n}, not a whole multiple (a channel split); nslab cannot size it")
                members[(owner, role)] = max(members.get((owner, role), 0), len(item.idxs) // n)
                start = run_start(item.idxs)  # where its run sits along the dimension (a concatenation's offset)
                starts[(owner, role)] = start if starts.get((owner, role), start) == start else None
        outs = [o for (o, r) in members if r == "out" and o in first]
        if is_output or (rec.last, "out") in members:
            output = (n, members, starts)
        elif outs:
            found.append((min(first[o] for o in outs), n, members, starts))
    found.sort(key=lambda t: t[0])
    return found, output, sizes, kinds, unwrapped


def _forms(found, output, sizes, n_groups: int) -> dict[str, dict[str, Form]]:
    """Each dimension: its default size less what its groups contribute, plus ``coef * w_g`` per group."""
    const = {o: dict(r) for o, r in sizes.items()}
    terms: dict[tuple[str, str], dict[int, int]] = {}
    groups = [(i, n, m) for i, (_, n, m, _) in enumerate(found)]
    if output is not None:
        groups.append((n_groups, *output[:2]))
    for var, n, members in groups:
        for (owner, role), c in members.items():
            const[owner][role] -= c * n
            t = terms.setdefault((owner, role), {})
            t[var] = t.get(var, 0) + c
    out: dict[str, dict[str, Form]] = {}
    for owner, roles in const.items():
        for role, c in roles.items():
            if c < 0:
                raise ValueError(f"module {owner!r}: its {role} channels are claimed by overlapping groups; "
                                 "nslab cannot size it")
            t = tuple(sorted((v, Fraction(k)) for v, k in terms.get((owner, role), {}).items()))
            out.setdefault(owner, {})[role] = (Fraction(c), t)
    return out


def _group(i: int, n: int, members: dict, first: dict[str, int], modules: dict[str, nn.Module]) -> TracedGroup:
    """The group's members in forward order (a per-channel parameter where its module first runs), and the
    multiple its width must keep: ``c * w`` channels split into G fixed groups need ``w`` a multiple of
    ``G / gcd(c, G)``."""
    def called(owner: str) -> int:
        return first.get(owner, first.get(owner.rpartition(".")[0], 1 << 30))

    ordered = sorted(members.items(), key=lambda kv: (called(kv[0][0]), kv[0][1] != "out"))
    outs = [o for (o, r), _ in ordered if r == "out"]
    norms = [o for (o, r), _ in ordered if r == "norm"]
    step = 1
    for (o, r), c in ordered:
        m = modules.get(o)
        g = m.num_groups if isinstance(m, nn.GroupNorm) else getattr(m, "groups", 1) if r in ("in", "out") else 1
        if g > 1 and not (isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels):
            step = lcm(step, g // gcd(c, g))
    return TracedGroup(outs[0] if outs else f"group{i}", n, tuple((o, r, c) for (o, r), c in ordered),
                       (norms or outs)[0], step)


def tensor_shapes(kind: str, dims: dict[str, Form], groups: int = 1) -> dict[str, tuple[Form, ...]]:
    """The Form of each dimension of a module's own tensors that moves with the widths.

    Conv weights are ``(out, in / groups, k_h, k_w)``, listed without the kernel (the caller multiplies it in);
    a depthwise conv's ``in / groups`` is 1; a grouped conv's (``groups`` fixed) is its in-channel Form / groups.
    """
    if kind == "conv" or kind == "linear":
        return {"weight": (dims["out"], dims["in"]), "bias": (dims["out"],)}
    if kind == "depthwise":
        return {"weight": (dims["out"],), "bias": (dims["out"],)}
    if kind == "grouped":
        const, terms = dims["in"]
        per_group = (const / groups, tuple((v, c / groups) for v, c in terms))
        return {"weight": (dims["out"], per_group), "bias": (dims["out"],)}
    return {"weight": (dims["norm"],), "bias": (dims["norm"],)}


def _factors(p: torch.Tensor, shape: tuple[Form, ...], v0: Sequence[int]) -> list[Form]:
    """``p``'s element count as a product of Forms: its resized dimensions, times the fixed rest (the kernel)."""
    sized = 1
    for f in shape:
        sized *= evaluate_form(f, v0)
    return [*shape, form_const(p.numel() // sized)]


def _compile(model: nn.Module, rec: Probe, dims, kinds, v0: Sequence[int]) -> tuple[Polynomial, Polynomial]:
    """Sum every parameter's element count, and every conv's and linear's MACs, as polynomials.

    ``v0``: the variables at the factory's network (default widths, then its K).
    """
    p_terms: dict[tuple[int, ...], Fraction] = {}
    m_terms: dict[tuple[int, ...], Fraction] = {}

    def add(into, factors, scale=1):
        for k, v in expand(factors).items():
            into[k] = into.get(k, 0) + v * scale

    modules = dict(model.named_modules())
    for pname, p in model.named_parameters():
        owner, attr = pname.rsplit(".", 1) if "." in pname else ("", pname)
        kind = kinds.get(owner)
        if pname in dims:  # a per-channel parameter
            add(p_terms, _factors(p, (dims[pname]["param"],), v0))
        elif kind is None or attr not in ("weight", "bias"):
            add(p_terms, [form_const(p.numel())])
        else:
            groups = getattr(modules[owner], "groups", 1)
            add(p_terms, _factors(p, tensor_shapes(kind, dims[owner], groups)[attr], v0))
    for name, pixels in rec.conv_maps.items():
        w = modules[name].weight
        shape = tensor_shapes(kinds[name], dims[name], modules[name].groups)["weight"]
        add(m_terms, _factors(w, shape, v0), pixels)
    for name, tokens in rec.linear_tokens.items():
        w = modules[name].weight
        add(m_terms, _factors(w, tensor_shapes("linear", dims[name])["weight"], v0), tokens)
    n = len(v0)
    return Polynomial(p_terms, n), Polynomial(m_terms, n)


def trace(factory: str | Callable[[], nn.Module], input_size: Sequence[int] = (3, 32, 32)) -> Traced:
    """Find the coupled channel groups of the factory's network and compile its counts.

    Args:
        factory: see :func:`resolve_factory`.
        input_size: (C, H, W) of one image.

    Returns:
        The :class:`Traced` network; its counts are checked at the default widths against the factory's network
        (parameters) and FlopCounterMode (MACs).

    Raises:
        ValueError: one line: a bad factory or input size, a module or op nslab cannot size (named), or counts
            that disagree with the network (never a silently wrong count).
    """
    t0 = time.perf_counter()
    fn, label = resolve_factory(factory)
    size = _check_input_size(input_size)
    with _shapes_only():
        model = make_network(fn, label)
    check_modules(model)
    training = model.training
    model.eval()
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    rec = probe(model, x)
    _check_all_ran(model, rec.order, label)
    found, output, sizes, kinds, param_dims = _couple(model, x, rec)
    dims = _forms(found, output, sizes, len(found))
    first = {n: i for i, n in enumerate(rec.order)}
    modules = dict(model.named_modules())
    groups = tuple(_group(i, n, m, first, modules) for i, (_, n, m, _) in enumerate(found))
    layouts = compile_layouts([(i, *f[1:]) for i, f in enumerate(found)]
                              + ([(len(found), *output)] if output is not None else []), sizes)
    k0 = rec.output_shape[1]
    v0 = [g.default for g in groups] + [k0]
    params, macs = _compile(model, rec, dims, kinds, v0)
    n_params = sum(p.numel() for p in model.parameters())
    if params(v0) != n_params or 2 * macs(v0) != rec.flops:
        raise ValueError(f"{label}: the compiled counts ({params(v0)} parameters, {macs(v0)} MACs) disagree with the "
                         f"network ({n_params} parameters, {rec.flops / 2:g} MACs by FlopCounterMode); an op or "
                         "module it uses is not understood")
    return Traced(fn, label, size, groups, k0, output is not None, dims, kinds, param_dims, params, macs,
                  time.perf_counter() - t0, tuple(rec.order), layouts, model.train(training).to("meta"))


@contextlib.contextmanager
def _shapes_only():
    """While :func:`trace` builds its copy of the network, ``torch.nn.init``'s draws leave their tensors as they are:
    the copy's values are never read (only its shapes, its graph and its counts; it is kept on the meta device), and
    the draws are most of a large constructor's time (regnet_y_128gf: 644M parameters, several seconds)."""
    with contextlib.ExitStack() as stack:
        for name in dir(nn.init):
            if name.endswith("_") and not name.startswith("_") and callable(getattr(nn.init, name)):
                stack.enter_context(mock.patch.object(nn.init, name, _keep))
        yield


def _keep(tensor, *args, **kwargs):
    return tensor


def _check_all_ran(model: nn.Module, ran: Sequence[str], label: str) -> None:
    """A module holding parameters that the (eval-mode) forward never called is a branch the trace cannot see, e.g.
    an auxiliary classifier run in training only: built at other widths its inputs would not match. Refused."""
    called = set(ran)
    idle = [n for n, m in model.named_modules()
            if n and n not in called and any(True for _ in m.parameters(recurse=False))]
    if idle:
        top = sorted({n.split(".")[0] for n in idle})
        raise ValueError(f"{label}: module(s) {', '.join(repr(n) for n in top)} hold parameters but never ran in an "
                         "eval-mode forward (a training-only branch such as an auxiliary classifier): nslab cannot "
                         "size what it does not see; build the network without it (e.g. aux_logits=False)")


def _check_input_size(input_size: Sequence[int]) -> tuple[int, int, int]:
    try:
        size = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (C, H, W), three positive integers, got {input_size!r}")
    return size
