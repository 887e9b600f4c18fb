"""The paper's baselines in the search harness, all matched to the same parameter budgets.

- Uniform: ``int(w * r)`` of the default widths (its count is the budget of ratio r).
- MorphNet (Taylor-FO): prune the default network once to 50% of its channels (Algorithm 1 with a 0.5
  stop fraction), then one global factor on those widths per budget (:func:`~nslab.powerlaw.scale_widths`).
- Li et al. (2017): train the default network, keep the filters of largest L1 norm in every layer with one
  keep ratio solved to meet the budget, fine-tune.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import io
from .data import ImageData
from .descent import SearchProfile, get_profile, smoke_data
from .models import create_model, default_widths, param_count, param_counter, uniform_widths
from .powerlaw import Scaled, scale_widths
from .prune import L1Norm, channel_map, prune
from .train import Recipe

__all__ = [
    "LiResult",
    "MorphNetResult",
    "budget_for_ratio",
    "keep_ratio_for_budget",
    "li_baseline",
    "morphnet_baseline",
    "morphnet_widths",
    "transplant",
    "uniform_baseline",
]


def budget_for_ratio(arch: str, ratio: float, dataset: str = "cifar10", convcut: bool = False) -> int:
    """The paper's budget for ratio r: the parameter count of ``uniform_widths(arch, r)``."""
    return param_count(arch, uniform_widths(arch, ratio), dataset, convcut)


def uniform_baseline(
    arch: str, ratios: Sequence[float], dataset: str = "cifar10", convcut: bool = False
) -> dict[float, Scaled]:
    """Uniform scaling, ``int(w * r)``, per ratio; its count is the budget itself (rel_error 0)."""
    out = {}
    for r in ratios:
        w = uniform_widths(arch, r)
        p = param_count(arch, w, dataset, convcut)
        out[r] = Scaled(w, p, p, 0.0)
    return out


# --------------------------------------------------------------------------------------------------------
# MorphNet (Taylor-FO)


@dataclass
class MorphNetResult:
    """The MorphNet (Taylor-FO) baseline.

    Attributes:
        base_widths: (L,) widths left after pruning the default network to the stop fraction.
        configs: ratio -> the base widths scaled by one factor to that ratio's budget.
        trajectory: (rows, L) the pruning trajectory recorded on the way.
    """

    base_widths: list[int]
    configs: dict[float, Scaled]
    trajectory: np.ndarray

    def to_dict(self) -> dict:
        """JSON form."""
        return {
            "base_widths": self.base_widths,
            "configs": {str(r): dataclasses.asdict(s) for r, s in self.configs.items()},
        }


def morphnet_widths(
    base_widths: Sequence[int], arch: str, budget: float, dataset: str = "cifar10", convcut: bool = False
) -> Scaled:
    """One global factor on ``base_widths`` to meet ``budget`` parameters (``scale_widths``)."""
    return scale_widths(base_widths, arch, dataset, budget, convcut=convcut)


def morphnet_baseline(
    arch: str,
    dataset: str,
    data: ImageData | None,
    ratios: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
    profile: str | SearchProfile = "cpu",
    out_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    convcut: bool = False,
    progress: bool = True,
) -> MorphNetResult:
    """Prune the default network once to ``profile.morphnet_stop_fraction`` of its channels, then scale.

    Args:
        arch, dataset, convcut: the network.
        data: training data (``None`` with a synthetic profile: :func:`~nslab.descent.smoke_data`);
            the profile's ``train_subset`` applies.
        ratios: the budgets, as uniform ratios (see :func:`budget_for_ratio`).
        profile: the pruning schedule (its stop fraction replaced by ``morphnet_stop_fraction``).
        out_dir: when given, writes ``trajectory.csv`` and ``morphnet.json`` there; an existing
            ``morphnet.json`` of the same settings is reused (no pruning).
        seed, device, progress: as for :func:`~nslab.prune.prune`.

    Returns:
        A :class:`MorphNetResult`.
    """
    prof = get_profile(profile)
    settings = dataclasses.replace(prof.prune, stop_fraction=prof.morphnet_stop_fraction)
    start = default_widths(arch) if prof.start_ratio == 1 else uniform_widths(arch, prof.start_ratio)
    meta = {
        "arch": arch,
        "dataset": dataset,
        "convcut": convcut,
        "seed": seed,
        "profile": prof.name,
        "prune": settings.to_dict(),
        "start_widths": start,
    }
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (out / "morphnet.json").exists():
        saved = io.read_json(out / "morphnet.json")
        if {k: saved.get(k) for k in meta} == meta:
            base = saved["base_widths"]
            has_rows = (out / "trajectory.csv").exists()
            traj = (
                io.read_trajectory(out / "trajectory.csv") if has_rows else np.zeros((0, len(base)), np.int64)
            )
            return MorphNetResult(base, _scaled(base, arch, ratios, dataset, convcut, prof), traj)
    data = _prepare(data, prof, dataset, seed)
    res = prune(
        arch,
        data,
        settings,
        widths=start,
        dataset=dataset,
        convcut=convcut,
        device=device,
        seed=seed,
        progress=progress,
    )
    base = res.final_widths
    result = MorphNetResult(base, _scaled(base, arch, ratios, dataset, convcut, prof), res.widths)
    if out is not None:
        if len(res.widths):  # none when stopping before every layer has lost a channel
            io.write_trajectory(out / "trajectory.csv", res.widths, res.params)
        io.write_json(out / "morphnet.json", {**meta, **result.to_dict()})
    return result


def _scaled(base, arch, ratios, dataset, convcut, prof: SearchProfile) -> dict[float, Scaled]:
    return {
        r: morphnet_widths(
            base, arch, budget_for_ratio(arch, r * prof.start_ratio, dataset, convcut), dataset, convcut
        )
        for r in ratios
    }


def _prepare(data: ImageData | None, prof: SearchProfile, dataset: str, seed: int) -> ImageData:
    if data is None:
        if not prof.synthetic:
            raise ValueError(f"profile {prof.name!r} needs a dataset (data=None only for synthetic profiles)")
        data = smoke_data(dataset, seed)
    if prof.train_subset is not None:
        data = data.subset(prof.train_subset, "balanced", seed)
    return data


# --------------------------------------------------------------------------------------------------------
# Li et al.: L1-norm filter pruning of a trained network


def keep_ratio_for_budget(
    arch: str,
    budget: float,
    dataset: str = "cifar10",
    convcut: bool = False,
    widths: Sequence[int] | None = None,
) -> tuple[float, list[int], int]:
    """One keep ratio q for every layer, ``w_l' = max(1, round(q * w_l))``, solved to meet ``budget``.

    The count is non-decreasing in q, so bisection brackets the budget; the closer of the two ends wins.

    Args:
        arch, dataset, convcut: the network.
        budget: target parameter count, at most that of ``widths``.
        widths: (L,) widths being pruned (default widths when ``None``).

    Returns:
        ``(q, widths, params)``.

    Raises:
        ValueError: a budget outside [count at one channel per layer, count of ``widths``].
    """
    base = np.asarray(default_widths(arch) if widths is None else widths, dtype=float)
    count = param_counter(arch, dataset, convcut)

    def at(q: float) -> list[int]:
        return np.maximum(1, np.rint(q * base)).astype(np.int64).tolist()

    lo_p, hi_p = count(at(0.0)), count(at(1.0))
    if not (isinstance(budget, (int, float)) and math.isfinite(budget)) or not lo_p <= budget <= hi_p:
        raise ValueError(
            f"budget must lie between {lo_p:,} (one channel per layer) and {hi_p:,} (nothing "
            f"pruned) parameters, got {budget!r}"
        )
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if count(at(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    q = lo if budget - count(at(lo)) <= count(at(hi)) - budget else hi
    return q, at(q), count(at(q))


def transplant(
    model: nn.Module,
    arch: str,
    keep: dict[int, torch.Tensor],
    widths: Sequence[int],
    dataset: str = "cifar10",
    convcut: bool = False,
) -> nn.Module:
    """A network of ``widths`` that inherits ``model``'s weights of the kept channels.

    For every tensor, the dimensions a width entry indexes (:func:`~nslab.prune.channel_map`) are sliced
    to ``keep[i]``. Dimensions tied to a width by a factor (MobileNetV2's expanded channels) keep their
    leading channels, and tensors that do not exist in ``model`` (a shortcut that became a projection)
    keep their fresh initialisation. For VGG11 this is exact filter removal, as in Li et al.

    Args:
        model: the trained network.
        keep: ``{i: sorted int64 indices of entry i's channels to keep}`` (entries absent keep all).
        widths: (L,) new widths (``len(keep[i])`` for the entries in ``keep``).

    Returns:
        The new network (CPU, train mode).
    """
    cmap = channel_map(arch, dataset, convcut)
    slices: dict[str, list] = {}
    for i, idx in keep.items():
        if len(idx) != widths[i]:
            raise ValueError(f"entry {i}: {len(idx)} kept channels but width {widths[i]}")
        for key, dim in cmap[i]:
            slices.setdefault(key, []).append((dim, idx))
    new = create_model(arch, widths, dataset, convcut)
    old = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = new.state_dict()
    for key, target in state.items():
        if key not in old:
            continue
        t = old[key]
        for dim, idx in slices.get(key, ()):
            t = t.index_select(dim, idx)
        if t.dim() == target.dim() and all(a >= b for a, b in zip(t.shape, target.shape)):
            state[key] = t[tuple(slice(0, n) for n in target.shape)].clone()
    new.load_state_dict(state)
    return new


@dataclass
class LiResult:
    """The Li et al. baseline.

    Attributes:
        widths: (L,) widths of the pruned network.
        params: its exact parameter count.
        target: the budget.
        keep_ratio: q, the per-layer fraction of filters kept.
        model: the pruned, fine-tuned network.
        train_history: ``nslab.train.History`` of the full network's training.
        finetune_history: ``History`` of the fine-tuning.
    """

    widths: list[int]
    params: int
    target: int
    keep_ratio: float
    model: nn.Module
    train_history: object
    finetune_history: object

    def to_dict(self) -> dict:
        """JSON form (accuracies in percent)."""
        return {
            "widths": self.widths,
            "params": self.params,
            "target": self.target,
            "rel_error": (self.params - self.target) / self.target,
            "keep_ratio": self.keep_ratio,
            "train_best_test_acc": self.train_history.best_test_acc,
            "finetune_best_test_acc": self.finetune_history.best_test_acc,
        }


def li_baseline(
    arch: str,
    dataset: str,
    data: ImageData | None,
    profile: str | SearchProfile = "cpu",
    budget: float | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    convcut: bool = False,
    progress: bool = True,
    train_recipe: Recipe | None = None,
) -> LiResult:
    """Li et al.: train the default network, keep the largest-L1 filters per layer to a budget, fine-tune.

    Args:
        arch, dataset, convcut: the network.
        data: the dataset (``None`` with a synthetic profile); the profile's ``train_subset`` applies,
            unless ``train_recipe`` is given (its own ``subset`` then selects the images).
        profile: training (``li_train_recipe``, ``li_train_epochs``) and fine-tuning
            (``li_finetune_epochs`` at ``li_finetune_lr``) settings.
        budget: target parameters (default: the budget of ratio ``profile.li_ratio``, 0.75 in the paper).
        out_dir: when given: ``train/`` and ``finetune/`` training run directories (resumable),
            ``model.pt`` (widths + state dict) and ``li.json``.
        seed: initialisation and data-order seed.
        device: training device (default CUDA when available).
        train_recipe: the full network's training (default: the profile's ``li_train_recipe`` cut to
            ``li_train_epochs``); its ``subset`` applies to the fine-tuning too. A benchmark passes its
            from-scratch recipe, so that Li et al. sees the same images and epochs as the other methods.

    Returns:
        A :class:`LiResult`.
    """
    from .train import Recipe, recipe, scale_epochs, seed_everything, train

    prof = get_profile(profile)
    # a given recipe brings its own images (its subset); the search's small subset is for the defaults
    own_images = train_recipe is not None
    data = _prepare(data, dataclasses.replace(prof, train_subset=None) if own_images else prof, dataset, seed)
    start = default_widths(arch) if prof.start_ratio == 1 else uniform_widths(arch, prof.start_ratio)
    if budget is None:
        budget = budget_for_ratio(arch, prof.li_ratio * prof.start_ratio, dataset, convcut)
    q, widths, params = keep_ratio_for_budget(arch, budget, dataset, convcut, start)
    out = Path(out_dir) if out_dir is not None else None

    r_train = train_recipe or recipe(prof.li_train_recipe, dataset)
    if train_recipe is None and prof.li_train_epochs is not None:
        r_train = scale_epochs(r_train, prof.li_train_epochs)
    seed_everything(seed)
    full = create_model(arch, start, dataset, convcut)
    h_train = train(full, data, r_train, device, seed, out / "train" if out else None, progress)

    scores = L1Norm(arch, dataset, convcut)(full)
    keep = {
        i: torch.sort(torch.argsort(s, descending=True, stable=True)[:w]).values
        for i, (s, w) in enumerate(zip(scores, widths))
    }
    seed_everything(seed + 1)
    small = transplant(full, arch, keep, widths, dataset, convcut)
    r_ft = Recipe(
        "li-finetune",
        epochs=prof.li_finetune_epochs,
        batch_size=r_train.batch_size,
        lr=prof.li_finetune_lr,
        momentum=0.5,
        weight_decay=r_train.weight_decay,
        milestones=(),
        augment=r_train.augment,
        subset=r_train.subset,
        subset_mode=r_train.subset_mode,
    )
    h_ft = train(small, data, r_ft, device, seed, out / "finetune" if out else None, progress)
    result = LiResult(widths, params, int(round(budget)), q, small, h_train, h_ft)
    if out is not None:
        blob = {
            "arch": arch,
            "dataset": dataset,
            "convcut": convcut,
            "widths": widths,
            "state_dict": {k: v.detach().cpu() for k, v in small.state_dict().items()},
        }
        tmp = out / ".model.pt.tmp"
        torch.save(blob, tmp)
        tmp.replace(out / "model.pt")
        io.write_json(out / "li.json", {"profile": prof.name, "seed": seed, **result.to_dict()})
    return result
