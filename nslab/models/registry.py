"""The architecture registry: names -> :class:`~nslab.models.Architecture`, and the public counts over it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..data import DatasetSpec, dataset_spec
from . import mobilenet, resnet, vgg
from .architecture import Architecture
from .common import Gate, check_widths
from .traced_arch import traced_network, width_multiples

# The registered networks by name (insertion order: the paper's three first). Read it; change it through
# register / unregister.
ARCHS: dict[str, Architecture] = {}

_CHECK_CLASSES = 10


def _check_build(a: Architecture) -> None:
    """Build ``a`` at its default widths on the meta device (no memory, milliseconds), with and without
    ``convcut`` where it applies, and check what every consumer relies on: one gate per width group, and
    ``params`` equal to the built module's count."""
    widths, variant = list(a.default_widths), a.variants[0]
    for convcut in (False, True) if a.has_shortcuts else (False,):
        with torch.device("meta"):
            model = a.build(widths, _CHECK_CLASSES, variant, convcut)
        if not isinstance(model, nn.Module):
            raise ValueError(f"architecture {a.name!r}: build returned {type(model).__name__}, not an nn.Module")
        gates = sorted(m.index for m in model.modules() if isinstance(m, Gate))
        if gates != list(range(len(a.groups))):
            raise ValueError(f"architecture {a.name!r}: the built model's Gate indices are {gates}; "
                             f"need exactly one Gate per width group, 0..{len(a.groups) - 1}")
        n = sum(p.numel() for p in model.parameters())
        counted = a.params(widths, _CHECK_CLASSES, variant, convcut)
        if counted != n:
            raise ValueError(f"architecture {a.name!r}: params() gives {counted} at the default widths "
                             f"(convcut={convcut}), the built model has {n} parameters")


def register(arch: Architecture, replace: bool = False, check: bool = True) -> Architecture:
    """Add ``arch`` to the registry under ``arch.name``; every name-taking function of nslab then accepts it.

    Args:
        arch: the network (validated when constructed: groups, variants, shrinkable indices).
        replace: allow replacing a registered architecture of the same name.
        check: also build it once on the meta device at its default widths: its gates must be exactly
            ``0..L-1`` and ``params`` must equal the built model's parameter count.

    Returns:
        ``arch``.

    Raises:
        ValueError: not an Architecture, a name already taken (without ``replace``), or a failed check.
    """
    if not isinstance(arch, Architecture):
        raise ValueError(f"register takes an nslab.models.Architecture, got {type(arch).__name__}")
    if arch.name in ARCHS and not replace:
        raise ValueError(f"architecture {arch.name!r} is already registered (pass replace=True to replace it)")
    if check:
        _check_build(arch)
    ARCHS[arch.name] = arch
    return arch


def unregister(name: str) -> Architecture:
    """Remove the architecture ``name`` from the registry and return it."""
    a = get_arch(name)
    del ARCHS[name]
    return a


def get_arch(name: str) -> Architecture:
    """Return the registered architecture ``name`` (a factory string not registered yet is traced at 32 px and
    registered: a grid worker meets a setting's factory string in a fresh process); raise ``ValueError`` naming
    the accepted names."""
    try:
        return ARCHS[name]
    except (KeyError, TypeError):
        if isinstance(name, str) and ":" in name:
            return resolve_arch(name)
        raise ValueError(f"unknown architecture {name!r}; accepted: {', '.join(ARCHS)}") from None


FACTORY_FORMS = "'torchvision:NAME', 'timm:NAME' or 'package.module:function'"


def resolve_arch(arch: str, input_size: Sequence[int] | str | DatasetSpec | None = None) -> Architecture:
    """The architecture a name or a factory string stands for: registered names first, else a traced network.

    A factory string (``"torchvision:resnet34"``, ``"timm:efficientnet_b0"``, ``"package.module:function"``) is
    traced with :meth:`Architecture.from_module` and registered under that string, so that every name-taking
    function of nslab (``param_count``, ``architecture_descent``, ``load_run``, ...) accepts it afterwards.

    Args:
        arch: a registered name (:data:`ARCHS`) or a factory string.
        input_size: (C, H, H) of one image, or a dataset (name or spec) whose image size to trace at (32 px for
            CIFAR, 64 px for TinyImageNet); ``None``: a registered architecture as it is, a new trace at 32 px.
            A factory string registered at another size is traced again at this one and replaces it.

    Returns:
        The registered :class:`Architecture`.

    Raises:
        ValueError: one line: an unknown name (naming the registered ones and the factory forms), or what
            :meth:`Architecture.from_module` refuses (a failing factory, an input size or op it cannot take).
    """
    if isinstance(input_size, (str, DatasetSpec)):
        spec = input_size if isinstance(input_size, DatasetSpec) else dataset_spec(input_size)
        input_size = (3, spec.image_size, spec.image_size)
    size = None if input_size is None else tuple(input_size)
    known = ARCHS.get(arch) if isinstance(arch, str) else None
    if known is not None and (size is None or ":" not in arch or _traced_size(known) in (None, size)):
        return known
    if not isinstance(arch, str) or arch.count(":") != 1 or not all(arch.split(":")):
        raise ValueError(f"unknown architecture {arch!r}; accepted: a registered name ({', '.join(ARCHS)}) or a "
                         f"factory {FACTORY_FORMS}")
    traced = Architecture.from_module(arch, (3, 32, 32) if size is None else size, name=arch)
    return register(traced, replace=True, check=False)  # from_module has built and counted it at probe widths


def _traced_size(a: Architecture) -> tuple[int, ...] | None:
    """(C, H, W) a traced architecture was traced at; ``None`` for a hand-written one."""
    t = traced_network(a)
    return None if t is None else tuple(t.input_size)


# The paper's networks. Not built at import (the first meta build costs ~1 s): tests/test_models.py proves
# their counts, gates and latency ops against the built models for every variant.
for _paper in (vgg.ARCH, resnet.ARCH, mobilenet.ARCH):
    register(_paper, check=False)
del _paper


def _resolve(arch: str, dataset: str | DatasetSpec, convcut: bool) -> tuple[Architecture, DatasetSpec]:
    a = get_arch(arch)
    spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
    if spec.variant not in a.variants:
        raise ValueError(f"{arch} has no variant for dataset {spec.name!r} ({spec.variant}); "
                         f"it exists for: {', '.join(a.variants)}")
    if convcut and not a.has_shortcuts:
        with_shortcuts = ", ".join(n for n, x in ARCHS.items() if x.has_shortcuts)
        raise ValueError(f"{arch} has no shortcuts; convcut applies to {with_shortcuts}")
    return a, spec


def default_widths(arch: str) -> list[int]:
    """The paper's default width vector of ``arch`` (one entry per searchable layer, forward order)."""
    return list(get_arch(arch).default_widths)


def uniform_widths(arch: str, ratio: float) -> list[int]:
    """Uniformly scaled default widths, ``int(w * ratio)`` per layer (the paper's baseline), each rounded down to
    the multiple its group needs (a traced network's grouped layers, :func:`~nslab.models.traced_arch.width_multiples`;
    1 for the hand-written ones).

    Raises:
        ValueError: if ``ratio`` is not positive or makes a layer empty.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio!r}")
    a = get_arch(arch)
    mult = width_multiples(a)
    widths = [int(w * ratio) // m * m for w, m in zip(a.default_widths, mult)]
    if min(widths) < 1:
        multiples = "" if set(mult) == {1} else f" (each a multiple of {list(mult)})"
        raise ValueError(f"ratio {ratio} leaves a layer of {arch} with no channel: {widths}{multiples}")
    return widths


def create_model(
    arch: str, widths: Sequence[int] | None = None, dataset: str | DatasetSpec = "cifar10", convcut: bool = False
) -> nn.Module:
    """Build ``arch`` with the given widths (default widths when ``None``) for ``dataset``.

    Args:
        arch: a registered architecture (:data:`ARCHS`): ``"vgg11"``, ``"resnet18"``, ``"mobilenetv2"``, ...
        widths: output widths of the searchable layers, forward order (one per width group: 8 / 17 / 19
            entries for the paper's three).
        dataset: dataset name (sets the class count K and the CIFAR or TinyImageNet variant) or spec.
        convcut: ResNet18/MobileNetV2 only: a 1x1 conv shortcut in every block.

    Returns:
        A freshly initialised module on the CPU, mapping (N, 3, H, W) images to (N, K) logits.

    Raises:
        ValueError: unknown architecture or dataset, or a width vector of the wrong length or with
            non-positive entries.
    """
    a, spec = _resolve(arch, dataset, convcut)
    w = check_widths(arch, a.default_widths if widths is None else widths, len(a.default_widths))
    return a.build(w, spec.num_classes, spec.variant, convcut)


def param_count(
    arch: str, widths: Sequence[int] | None, dataset: str | DatasetSpec = "cifar10", convcut: bool = False
) -> int:
    """Exact number of trainable parameters of ``create_model(arch, widths, dataset, convcut)``.

    Closed form, no model is built (microseconds). Gates own no parameters.

    Args:
        arch, widths, dataset, convcut: as for :func:`create_model`.

    Returns:
        The parameter count (int, number of scalars).
    """
    a, spec = _resolve(arch, dataset, convcut)
    w = check_widths(arch, a.default_widths if widths is None else widths, len(a.default_widths))
    return a.params(w, spec.num_classes, spec.variant, convcut)


def param_counter(arch: str, dataset: str | DatasetSpec = "cifar10", convcut: bool = False) -> Callable[..., int]:
    """A fast ``widths -> count`` closure without per-call validation, for solvers that call it often."""
    a, spec = _resolve(arch, dataset, convcut)
    return lambda widths: a.params(widths, spec.num_classes, spec.variant, convcut)


def macs(
    arch: str, widths: Sequence[int] | None, dataset: str | DatasetSpec = "cifar10", convcut: bool = False
) -> int:
    """Exact multiply-accumulates (MACs) of ``create_model(arch, widths, dataset, convcut)`` for one image.

    Closed form, no model is built (microseconds). Counted, per image (batch 1) of the dataset's size
    (32x32 CIFAR, 64x64 TinyImageNet): the MACs of every convolution, ``H_out * W_out * C_out *
    (C_in / groups) * k_h * k_w`` (stems, 3x3 and 1x1 convs, depthwise convs, 1x1 projection shortcuts,
    MobileNetV2's 1x1 classifier), and of every linear layer, ``in * out`` (the classifier). This is
    exactly half the total of ``torch.utils.flop_counter.FlopCounterMode`` on a forward pass, which counts
    2 flops per MAC. Not counted (as FlopCounterMode does not): conv and linear biases, BatchNorm, ReLU /
    ReLU6, max and average pooling, the residual additions, and the gates (identities).

    Args:
        arch, widths, dataset, convcut: as for :func:`create_model`.

    Returns:
        The MACs count (int).
    """
    a, spec = _resolve(arch, dataset, convcut)
    w = check_widths(arch, a.default_widths if widths is None else widths, len(a.default_widths))
    return a.macs(w, spec.num_classes, spec.variant, convcut, spec.image_size)


def macs_counter(arch: str, dataset: str | DatasetSpec = "cifar10", convcut: bool = False) -> Callable[..., int]:
    """A fast ``widths -> MACs`` closure (as :func:`macs`) without per-call validation, like :func:`param_counter`."""
    a, spec = _resolve(arch, dataset, convcut)
    return lambda widths: a.macs(widths, spec.num_classes, spec.variant, convcut, spec.image_size)


def measured_counts(arch: str, widths: Sequence[int], dataset: str | DatasetSpec = "cifar10",
                    convcut: bool = False) -> tuple[int, int]:
    """``(parameters, MACs)`` measured on the built module, the ground truth :func:`param_count` and :func:`macs`
    must equal: ``sum(p.numel())`` of ``create_model(arch, widths, dataset, convcut)`` and half the total of
    ``FlopCounterMode`` on one forward pass of one image (built on the meta device: no memory, milliseconds)."""
    from torch.utils.flop_counter import FlopCounterMode

    a, spec = _resolve(arch, dataset, convcut)
    w = check_widths(arch, widths, len(a.default_widths))
    with torch.device("meta"):
        model = a.build(w, spec.num_classes, spec.variant, convcut).eval()
        x = torch.empty(1, 3, spec.image_size, spec.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return sum(p.numel() for p in model.parameters()), fc.get_total_flops() // 2
