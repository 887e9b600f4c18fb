"""A network's factory: a name (``"torchvision:resnet34"``, ``"timm:efficientnet_b0"``, ``"package.module:function"``)
or a callable, resolved to a no-argument callable, and called with its failures reported as bad input."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["make_network", "resolve_factory"]


def resolve_factory(factory: str | Callable[[], nn.Module]) -> tuple[Callable[[], nn.Module], str]:
    """Turn ``factory`` into a no-argument callable building the network, and a label for messages.

    Args:
        factory: a callable; ``"torchvision:NAME"`` (``torchvision.models.get_model(NAME, weights=None)``);
            ``"timm:NAME"`` (``timm.create_model(NAME, pretrained=False)``, timm imported only then);
            ``"package.module:function"`` (imported, called with no arguments).

    Raises:
        ValueError: a string of another form, or a module or function that cannot be imported.
    """
    if callable(factory):
        return factory, getattr(factory, "__qualname__", repr(factory))
    if not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise ValueError(f"factory must be a callable or 'torchvision:NAME', 'timm:NAME', 'package.module:function'; "
                         f"got {factory!r}")
    where, what = factory.split(":")
    if where == "torchvision":
        import torchvision

        return lambda: torchvision.models.get_model(what, weights=None), factory
    if where == "timm":
        try:
            import timm
        except ImportError:
            raise ValueError(f"factory {factory!r} needs timm, which is not installed (pip install timm)") from None
        return lambda: timm.create_model(what, pretrained=False), factory
    try:
        fn = getattr(importlib.import_module(where), what)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"factory {factory!r}: cannot import {what!r} from {where!r} ({e})") from None
    return fn, factory


def make_network(factory: Callable[[], nn.Module], label: str) -> nn.Module:
    """Call the factory; a failure or a non-module result is a one-line ``ValueError`` naming it.

    Under a meta default device (the registry's check builds there), a factory that computes with tensors while
    it builds (torchvision's RegNets) cannot run; it is then built on the CPU and moved to the meta device.
    """
    try:
        model = factory()
    except Exception as e:  # noqa: BLE001 -- whatever the user's factory raises is reported as bad input
        if torch.get_default_device().type != "meta":
            raise ValueError(f"factory {label!r} failed: {type(e).__name__}: {e}") from None
        # its random draws are thrown away: they must not move the global RNG (a search's batches and
        # augmentations draw from it, and a shrink builds its target here)
        with torch.device("cpu"), torch.random.fork_rng(devices=[]):
            model = make_network(factory, label)
        return model.to("meta")
    if not isinstance(model, nn.Module):
        raise ValueError(f"factory {label!r} returned {type(model).__name__}, not an nn.Module")
    return model
