"""The architecture registry: names -> builders, default widths, closed-form parameter and MACs counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from ..data import DatasetSpec, dataset_spec
from . import mobilenet, resnet, vgg
from .common import check_widths


@dataclass(frozen=True)
class Arch:
    """One registered architecture.

    Attributes:
        name: registry name.
        default_widths: the paper's default width vector (forward order).
        variants: dataset variants it exists for (``"cifar"``, ``"tiny"``).
        has_shortcuts: whether ``convcut`` applies.
        build: ``(widths, num_classes, variant, convcut) -> nn.Module``.
        count: ``(widths, num_classes, variant, convcut) -> int``, the closed-form parameter count.
        macs: ``(widths, num_classes, variant, convcut, image_size) -> int``, the closed-form
            multiply-accumulates of one image (see :func:`macs`).
    """

    name: str
    default_widths: tuple[int, ...]
    variants: tuple[str, ...]
    has_shortcuts: bool
    build: Callable[..., nn.Module]
    count: Callable[..., int]
    macs: Callable[..., int]


ARCHS: dict[str, Arch] = {
    "vgg11": Arch("vgg11", tuple(vgg.DEFAULT_WIDTHS), ("cifar",), False, vgg.build, vgg.count, vgg.macs),
    "resnet18": Arch(
        "resnet18", tuple(resnet.DEFAULT_WIDTHS), ("cifar", "tiny"), True, resnet.build, resnet.count, resnet.macs
    ),
    "mobilenetv2": Arch(
        "mobilenetv2", tuple(mobilenet.DEFAULT_WIDTHS), ("cifar", "tiny"), True, mobilenet.build, mobilenet.count,
        mobilenet.macs,
    ),
}


def get_arch(name: str) -> Arch:
    """Return the registered architecture ``name``; raise ``ValueError`` naming the accepted names."""
    try:
        return ARCHS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {name!r}; accepted: {', '.join(ARCHS)}") from None


def _resolve(arch: str, dataset: str | DatasetSpec, convcut: bool) -> tuple[Arch, DatasetSpec]:
    a = get_arch(arch)
    spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
    if spec.variant not in a.variants:
        raise ValueError(f"{arch} has no variant for dataset {spec.name!r} ({spec.variant}); "
                         f"it exists for: {', '.join(a.variants)}")
    if convcut and not a.has_shortcuts:
        raise ValueError(f"{arch} has no shortcuts; convcut applies to resnet18 and mobilenetv2")
    return a, spec


def default_widths(arch: str) -> list[int]:
    """The paper's default width vector of ``arch`` (one entry per searchable layer, forward order)."""
    return list(get_arch(arch).default_widths)


def uniform_widths(arch: str, ratio: float) -> list[int]:
    """Uniformly scaled default widths, ``int(w * ratio)`` per layer (the paper's baseline).

    Raises:
        ValueError: if ``ratio`` is not positive or makes a layer empty.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio!r}")
    widths = [int(w * ratio) for w in get_arch(arch).default_widths]
    if min(widths) < 1:
        raise ValueError(f"ratio {ratio} leaves a layer of {arch} with no channel: {widths}")
    return widths


def create_model(
    arch: str, widths: Sequence[int] | None = None, dataset: str | DatasetSpec = "cifar10", convcut: bool = False
) -> nn.Module:
    """Build ``arch`` with the given widths (default widths when ``None``) for ``dataset``.

    Args:
        arch: ``"vgg11"``, ``"resnet18"`` or ``"mobilenetv2"``.
        widths: output widths of the searchable layers, forward order (8 / 17 / 19 entries).
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
    return a.count(w, spec.num_classes, spec.variant, convcut)


def param_counter(arch: str, dataset: str | DatasetSpec = "cifar10", convcut: bool = False) -> Callable[..., int]:
    """A fast ``widths -> count`` closure without per-call validation, for solvers that call it often."""
    a, spec = _resolve(arch, dataset, convcut)
    return lambda widths: a.count(widths, spec.num_classes, spec.variant, convcut)


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
