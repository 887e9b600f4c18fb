"""The paper's baselines that need their own training or pruning runs.

- MorphNet (Taylor-FO), standalone: prune the start network once to ``morphnet_keep`` of its channels
  (Algorithm 1 with that stop fraction), then :data:`nslab.scaling.methods.METHODS` ``["morphnet"]`` scales it
  per budget. (In the benchmark the same network is read off descent iteration 1, which is that very run
  continued.)
- Li et al. (2017): train the start network, keep the filters of largest L1 norm in every layer with one
  keep ratio solved to meet the budget (``METHODS["li"]``), fine-tune.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import io
from ..config import BaselineSettings, Recipe, SearchSettings, resolve
from ..data import ImageData
from ..models import create_model, get_arch
from ..search.channels import channel_slices, cut
from ..search.descent import search_data
from ..search.prune import L1Norm, prune
from .methods import Budget, Context, get_method, keep_ratio_for_budget

__all__ = ["LiResult", "MorphNetResult", "li_baseline", "morphnet_baseline", "transplant"]

_PAPER = BaselineSettings()  # the paper's baseline settings


@dataclass
class MorphNetResult:
    """The MorphNet (Taylor-FO) baseline.

    Attributes:
        base_widths: (L,) widths left after pruning the start network to ``morphnet_keep`` of its channels.
        configs: ratio -> the base widths scaled by one factor to that ratio's budget.
        trajectory: (rows, L) the pruning trajectory recorded on the way.
    """

    base_widths: list[int]
    configs: dict[float, list[int]]
    trajectory: np.ndarray

    def to_dict(self) -> dict:
        """JSON form."""
        return {"base_widths": self.base_widths, "configs": {str(r): w for r, w in self.configs.items()}}


def morphnet_baseline(
    arch: str,
    dataset: str,
    data: ImageData | None,
    search: SearchSettings,
    baseline: BaselineSettings = _PAPER,
    ratios: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
    out_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    convcut: bool = False,
    progress: bool = True,
) -> MorphNetResult:
    """Prune the start network once to ``baseline.morphnet_keep`` of its channels, then scale per ratio.

    Args:
        arch, dataset, convcut: the network.
        data: training data (see :func:`nslab.search.descent.search_data`; the search's subset applies).
        search: the pruning schedule and start network (its stop fraction replaced by ``morphnet_keep``).
        baseline: the MorphNet fraction.
        ratios: the budgets, as the paper's uniform ratios (:meth:`nslab.scaling.methods.Context.budget`).
        out_dir: when given, writes ``trajectory.csv`` and ``morphnet.json`` there; an existing
            ``morphnet.json`` of the same settings is reused (no pruning).
        seed, device, progress: as for :func:`~nslab.search.prune.prune`.
    """
    settings = dataclasses.replace(search.prune, stop_fraction=baseline.morphnet_keep)
    data = search_data(search, dataset, data, seed)
    ctx = Context(arch, dataset, convcut, search.start_ratio, morphnet_keep=baseline.morphnet_keep)
    meta = {"arch": arch, "dataset": dataset, "convcut": convcut, "seed": seed, "prune": resolve(settings),
            "start_widths": ctx.start, "data": data.fingerprint()}
    out = Path(out_dir) if out_dir is not None else None
    saved = io.read_json(out / "morphnet.json") if out is not None and (out / "morphnet.json").exists() else {}
    if {k: saved.get(k) for k in meta} == meta:
        base = saved["base_widths"]
        traj = io.read_trajectory(out / "trajectory.csv") if (out / "trajectory.csv").exists() else None
    else:
        res = prune(arch, data, settings, widths=ctx.start, dataset=dataset, convcut=convcut, device=device,
                    seed=seed, progress=progress)
        base, traj = res.final_widths, res.widths
        if out is not None and len(traj):  # none when stopping before every layer has lost a channel
            io.write_trajectory(out / "trajectory.csv", traj, res.params)
    # the pruned network itself is the one row MorphNet scales
    ctx = dataclasses.replace(ctx, morphnet_widths=tuple(base))
    morphnet = get_method("morphnet")
    result = MorphNetResult(list(base), {r: morphnet(ctx, ctx.budget(r)) for r in ratios},
                            traj if traj is not None else np.zeros((0, len(base)), np.int64))
    if out is not None:
        io.write_json(out / "morphnet.json", {**meta, **result.to_dict()})
    return result


def transplant(
    model: nn.Module,
    arch: str,
    keep: dict[int, torch.Tensor],
    widths: Sequence[int],
    dataset: str = "cifar10",
    convcut: bool = False,
    start: Sequence[int] | None = None,
) -> nn.Module:
    """A network of ``widths`` that inherits ``model``'s weights of the kept channels.

    For every tensor, the dimensions a width entry indexes (:func:`~nslab.search.channels.channel_slices`) are
    sliced to ``keep[i]``. Dimensions tied to a width by a factor (MobileNetV2's expanded channels) keep their
    leading channels, and tensors that do not exist in ``model`` (a shortcut that became a projection)
    keep their fresh initialisation. For VGG11 this is exact filter removal, as in Li et al.

    Args:
        model: the trained network.
        keep: ``{i: sorted int64 indices of entry i's channels to keep}`` (entries absent keep all).
        widths: (L,) new widths (``len(keep[i])`` for the entries in ``keep``).
        start: (L,) ``model``'s widths (default: the architecture's default widths).

    Returns:
        The new network (CPU, train mode).
    """
    for i, idx in keep.items():
        if len(idx) != widths[i]:
            raise ValueError(f"entry {i}: {len(idx)} kept channels but width {widths[i]}")
    start = get_arch(arch).default_widths if start is None else start
    slices = channel_slices(arch, start, {i: idx.cpu() for i, idx in keep.items()}, dataset, convcut)
    new = create_model(arch, widths, dataset, convcut)
    old = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = new.state_dict()
    for key, target in state.items():
        if key not in old:
            continue
        t = cut(old[key], slices.get(key, ()))
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
        train_history: ``nslab.runs.train.History`` of the full network's training.
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
    data: ImageData,
    train_recipe: Recipe,
    baseline: BaselineSettings,
    budget: float,
    start_ratio: float = 1.0,
    out_dir: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    convcut: bool = False,
    progress: bool = True,
) -> LiResult:
    """Li et al.: train the start network, keep the largest-L1 filters per layer to a budget, fine-tune.

    Args:
        arch, dataset, convcut: the network.
        data: the dataset; ``train_recipe.subset`` selects the images of training and fine-tuning.
        train_recipe: the full network's training (a benchmark passes its from-scratch recipe, so that
            Li et al. sees the same images and epochs as the other methods).
        baseline: fine-tuning (``li_finetune_epochs`` at ``li_finetune_lr``) settings.
        budget: target parameters.
        start_ratio: the full network is ``uniform_widths(arch, start_ratio)``.
        out_dir: when given: ``train/`` and ``finetune/`` training run directories (resumable),
            ``model.pt`` (widths + state dict) and ``li.json``.
        seed: initialisation and data-order seed.
        device: training device (default CUDA when available).
    """
    from ..runs.train import seed_everything, train

    ctx = Context(arch, dataset, convcut, start_ratio)
    widths = get_method("li")(ctx, Budget(int(round(budget))))
    q, _, params = keep_ratio_for_budget(arch, budget, dataset, convcut, ctx.start)
    out = Path(out_dir) if out_dir is not None else None
    seed_everything(seed)
    full = create_model(arch, ctx.start, dataset, convcut)
    h_train = train(full, data, train_recipe, device, seed, out / "train" if out else None, progress)

    scores = L1Norm(arch, dataset, convcut)(full)
    keep = {i: torch.sort(torch.argsort(s, descending=True, stable=True)[:w]).values
            for i, (s, w) in enumerate(zip(scores, widths))}
    seed_everything(seed + 1)
    small = transplant(full, arch, keep, widths, dataset, convcut, ctx.start)
    r_ft = Recipe("li-finetune", epochs=baseline.li_finetune_epochs, batch_size=train_recipe.batch_size,
                  lr=baseline.li_finetune_lr, momentum=baseline.li_finetune_momentum,
                  weight_decay=train_recipe.weight_decay, milestones=(), augment=train_recipe.augment,
                  subset=train_recipe.subset, subset_mode=train_recipe.subset_mode)
    h_ft = train(small, data, r_ft, device, seed, out / "finetune" if out else None, progress)
    result = LiResult(widths, params, int(round(budget)), q, small, h_train, h_ft)
    if out is not None:
        blob = {"arch": arch, "dataset": dataset, "convcut": convcut, "widths": widths,
                "state_dict": {k: v.detach().cpu() for k, v in small.state_dict().items()}}
        io.atomic_write(out / "model.pt", lambda p: torch.save(blob, p))
        io.write_json(out / "li.json", {"seed": seed, **result.to_dict()})
    return result
