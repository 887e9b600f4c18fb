"""Algorithm 1: Taylor-FO channel importance and the iterative pruner that records a trajectory.

Pruning a channel means its gate output is zero from then on. Where that can be done exactly by
removing weights, the network is rebuilt smaller (``shrink``): surviving weights *and* the optimiser
state are sliced over, so the rebuilt network computes what the masked one did and later steps cost
less. Which width entries shrink exactly:

- ``vgg11``: all 8 (a gate feeds only the next conv, or the head).
- ``resnet18``: the 8 middle widths (odd indices: ``conv1 -> bn2 -> gate_mid -> conv2``). The residual
  stream widths (even indices) are masked instead: PreAct blocks take an identity shortcut from the raw
  input but a projection from ``relu(bn1(x))``, so a block whose identity shortcut would turn into a
  projection after removing a channel cannot reproduce the identity on the raw input.
- ``mobilenetv2``: the head width (index 18). The stem and block outputs are masked: a block's hidden
  width is tied to ``6 x`` its input width, so removing an input channel removes hidden channels that
  are not tied to it.

Masked channels are excluded from the ranking and counted as removed: trajectory rows are always the
logical widths (alive channels) and their exact :func:`~nslab.models.param_count`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceBatches, ImageData
from .datasets import DatasetSpec, dataset_spec
from .models import Gate, create_model, default_widths, get_arch, param_count
from .train import channels_last_ok

__all__ = [
    "BNScale",
    "L1Norm",
    "PruneResult",
    "PruneSettings",
    "TaylorFO",
    "apply_masks",
    "channel_map",
    "find_gates",
    "gate_gradients",
    "prune",
    "shrink_model",
    "shrinkable_layers",
]

Dataset = str | DatasetSpec
Scores = list[torch.Tensor]  # one (w_i,) tensor per width entry, physical channels


# --------------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class PruneSettings:
    """Settings of one pruning run (Algorithm 1). Defaults are the released CIFAR protocol.

    Attributes:
        channels_per_step: k, channels removed per prune step.
        batches_per_step: m, training minibatches between prune steps.
        batch_size: images per minibatch.
        pretrain_epochs: epochs of plain training of the fresh network before pruning starts.
        pretrain_lr: learning rate of those epochs.
        lr: learning rate once pruning starts; divided by ``lr_decay`` every ``lr_decay_every`` epochs.
        lr_decay: divisor of the learning-rate schedule during pruning.
        lr_decay_every: epochs between learning-rate divisions during pruning.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (L2).
        stop_fraction: pruning stops once ``N - int((1 - stop_fraction) * N)`` of the N starting
            channels remain (0.05: 138 of VGG11's 2752); in (0, 1).
        stop_when_layer_empties: the released code's rule: stop everything when the k lowest-ranked
            channels would empty a layer. Otherwise (default) a layer at one channel leaves the ranking.
        shrink: rebuild the network smaller where that is exact (else mask only).
        shrink_min_fraction: rebuild once at least this fraction of the physical channels of the
            shrinkable layers is masked (0: after every step); in [0, 1).
        augment: random crop + flip on training batches.
        channels_last: run convolutions in channels-last memory format (faster on CPU).
    """

    channels_per_step: int = 10
    batches_per_step: int = 50
    batch_size: int = 256
    pretrain_epochs: int = 10
    pretrain_lr: float = 0.1
    lr: float = 0.01
    lr_decay: float = 1.5
    lr_decay_every: int = 10
    momentum: float = 0.5
    weight_decay: float = 5e-4
    stop_fraction: float = 0.05
    stop_when_layer_empties: bool = False
    shrink: bool = True
    shrink_min_fraction: float = 0.05
    augment: bool = True
    channels_last: bool = False

    def __post_init__(self) -> None:
        for name in ("channels_per_step", "batches_per_step", "batch_size", "lr_decay_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.pretrain_epochs, (int, np.integer)) or self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be an integer >= 0, got {self.pretrain_epochs!r}")
        f = self.stop_fraction
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < 1:
            raise ValueError(
                f"stop_fraction is the fraction of channels left when pruning stops and must lie "
                f"strictly between 0 and 1, got {f!r}"
            )
        for name in ("pretrain_lr", "lr", "lr_decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not 0 <= self.shrink_min_fraction < 1:
            raise ValueError(f"shrink_min_fraction must be in [0, 1), got {self.shrink_min_fraction!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    def target_channels(self, total: int) -> int:
        """Channels left when pruning stops: ``N - int((1 - stop_fraction) * N)`` (the released rule)."""
        return total - int((1 - self.stop_fraction) * total)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)


# --------------------------------------------------------------------------------------------------------
# structure: which tensors each width entry governs


def find_gates(model: nn.Module) -> dict[int, Gate]:
    """The model's :class:`~nslab.models.Gate` modules by width index (0..L-1)."""
    gates = {m.index: m for m in model.modules() if isinstance(m, Gate)}
    if sorted(gates) != list(range(len(gates))):
        raise ValueError(f"gate indices must be 0..L-1, found {sorted(gates)}")
    return gates


@functools.lru_cache(maxsize=32)
def channel_map(arch: str, dataset: Dataset = "cifar10", convcut: bool = False) -> dict[int, tuple]:
    """Which state-dict entries (and which dimension) each width entry indexes.

    Found by building the network on the meta device at the default widths and once more with width
    ``i`` one smaller: the dimensions that shrink by exactly one belong to entry ``i``. (Dimensions tied
    to a width by a factor, like MobileNetV2's expansion, or tensors that appear when an identity
    shortcut becomes a projection, are not listed: those entries are masked, never sliced.)

    Returns:
        ``{i: ((state_dict_key, dim), ...)}`` for i in 0..L-1.
    """
    base = default_widths(arch)

    def shapes(widths: list[int]) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            m = create_model(arch, widths, dataset, convcut)
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}

    ref = shapes(base)
    out: dict[int, tuple] = {}
    for i in range(len(base)):
        w = list(base)
        w[i] -= 1
        s = shapes(w)
        out[i] = tuple(
            (k, d) for k, shp in ref.items() if k in s for d, n in enumerate(shp) if s[k][d] == n - 1
        )
    return out


_SHRINKABLE = {"vgg11": None, "resnet18": "odd", "mobilenetv2": "last"}


def shrinkable_layers(arch: str) -> frozenset[int]:
    """Width indices whose pruned channels can be removed exactly (see the module docstring)."""
    n = len(get_arch(arch).default_widths)
    rule = _SHRINKABLE[arch]
    if rule is None:
        return frozenset(range(n))
    if rule == "odd":
        return frozenset(range(1, n, 2))
    return frozenset({n - 1})


# --------------------------------------------------------------------------------------------------------
# masks and importance criteria


class _Handles:
    def __init__(self, handles: list):
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def apply_masks(model: nn.Module, masks: dict[int, torch.Tensor]) -> _Handles:
    """Zero pruned channels at the gates: gate ``i``'s output is multiplied by ``masks[i]``.

    Args:
        model: a network with gates.
        masks: ``{i: (w_i,) float tensor of 0/1}``; read at every forward, so it may be updated in place.

    Returns:
        A handle whose ``remove()`` detaches the hooks.
    """
    gates = find_gates(model)
    handles = []
    for i, gate in gates.items():

        def hook(_m, _args, out, i=i):
            mask = masks.get(i)
            if mask is None:
                return None
            return out * mask.to(out.dtype).view(1, -1, *([1] * (out.dim() - 2)))

        handles.append(gate.register_forward_hook(hook))
    return _Handles(handles)


class TaylorFO:
    """Taylor-FO importance (Molchanov et al. 2019): ``I_c = (g_c * dL/dg_c)^2`` with a constant gate 1.

    ``dL/dg_c = sum over batch, h, w of z * dL/dz`` at the gate's output z, L the loss whose gradient is
    taken (the batch-mean cross-entropy in the pruner). Squared per minibatch, summed, and averaged by
    :meth:`__call__` over the minibatches since :meth:`reset`.

    Usage: ``crit.attach(model)``, train (each backward pass accumulates), ``scores = crit(model)``.
    """

    def __init__(self):
        self._sum: dict[int, torch.Tensor] = {}
        self._count: dict[int, int] = {}
        self._handles = _Handles([])
        self.last: dict[int, torch.Tensor] = {}  # signed dL/dg of the latest backward pass, (w_i,)

    def attach(self, model: nn.Module) -> TaylorFO:
        """Hook the gates of ``model`` (detaching from any previous model). Returns self."""
        self.detach()
        handles = []
        for i, gate in find_gates(model).items():

            def fwd(_m, _args, out, i=i):
                if not (torch.is_grad_enabled() and out.requires_grad):
                    return None
                z = out.detach()

                def bwd(grad, i=i, z=z):
                    g = (z * grad).sum(dim=[d for d in range(z.dim()) if d != 1]).double()
                    self.last[i] = g
                    self._sum[i] = self._sum[i] + g * g if i in self._sum else g * g
                    self._count[i] = self._count.get(i, 0) + 1

                out.register_hook(bwd)
                return None

            handles.append(gate.register_forward_hook(fwd))
        self._handles = _Handles(handles)
        return self

    def detach(self) -> None:
        """Remove the hooks."""
        self._handles.remove()

    def reset(self) -> None:
        """Forget the accumulated scores (after a prune step)."""
        self._sum, self._count, self.last = {}, {}, {}

    def __call__(self, model: nn.Module) -> Scores:
        """Averaged scores, one (w_i,) float64 tensor per gate."""
        n = len(find_gates(model))
        if any(i not in self._sum for i in range(n)):
            raise ValueError("TaylorFO has no scores: attach it and run at least one backward pass first")
        return [(self._sum[i] / self._count[i]).cpu() for i in range(n)]


def gate_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Scores:
    """Signed ``dL/dg_c`` of every gate channel on one batch (L = batch-mean cross-entropy).

    The first-order Taylor estimate of the loss change from removing channel c is ``-dL/dg_c``.

    Args:
        model: network with gates (its mode, train or eval, is used as is).
        x: (B, 3, H, W) float images. y: (B,) int64 labels.

    Returns:
        One (w_i,) float64 tensor per width entry.
    """
    crit = TaylorFO().attach(model)
    try:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        return [crit.last[i].cpu() for i in range(len(crit.last))]
    finally:
        crit.detach()
        model.zero_grad(set_to_none=True)


class L1Norm:
    """Filter L1 norm: per channel, ``sum |W|`` over the filters that produce it (Li et al. 2017).

    For a width entry fed by several convolutions (a residual stream) the norms of all of them add up.
    """

    def __init__(self, arch: str, dataset: Dataset = "cifar10", convcut: bool = False):
        self.cmap = channel_map(arch, dataset, convcut)

    def __call__(self, model: nn.Module) -> Scores:
        return _weight_scores(model, self.cmap, conv=True)


class BNScale:
    """BatchNorm scale: per channel, ``|gamma|`` of the BatchNorms over that channel (mean if several)."""

    def __init__(self, arch: str, dataset: Dataset = "cifar10", convcut: bool = False):
        self.cmap = channel_map(arch, dataset, convcut)

    def __call__(self, model: nn.Module) -> Scores:
        return _weight_scores(model, self.cmap, conv=False)


def _weight_scores(model: nn.Module, cmap: dict[int, tuple], conv: bool) -> Scores:
    params = dict(model.named_parameters())
    out = []
    for i in range(len(cmap)):
        parts = []
        for key, dim in cmap[i]:
            p = params.get(key)
            if p is None or dim != 0:
                continue
            if conv and p.dim() == 4:
                parts.append(p.detach().abs().sum(dim=(1, 2, 3)))
            elif not conv and p.dim() == 1 and key.endswith("weight"):
                parts.append(p.detach().abs())
        if not parts:
            raise ValueError(
                f"width entry {i} has no {'conv filter' if conv else 'BatchNorm scale'} to score"
            )
        s = torch.stack(parts)
        out.append((s.sum(0) if conv else s.mean(0)).double().cpu())
    return out


# --------------------------------------------------------------------------------------------------------
# physical shrinking


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
            :func:`shrinkable_layers`.
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
    new_widths = list(widths)
    for i, idx in keep.items():
        if len(idx) < 1:
            raise ValueError(f"width entry {i} would keep no channel")
        new_widths[i] = len(idx)
    cmap = channel_map(arch, dataset, convcut)
    slices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for i, idx in keep.items():
        for key, dim in cmap[i]:
            slices.setdefault(key, []).append((dim, idx))

    def cut(key: str, t: torch.Tensor) -> torch.Tensor:
        for dim, idx in slices.get(key, ()):
            t = t.index_select(dim, idx.to(t.device))
        return t

    ref = next(model.parameters())
    with torch.device("meta"):
        new = create_model(arch, new_widths, dataset, convcut)
    new = new.to_empty(device=ref.device).to(ref.dtype)
    new.load_state_dict({k: cut(k, v) for k, v in model.state_dict().items()})
    if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
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
                k: cut(name, v) if torch.is_tensor(v) and v.shape == p.shape else v for k, v in state.items()
            }
    return new, new_widths, new_opt


# --------------------------------------------------------------------------------------------------------
# the pruner


@dataclass
class PruneResult:
    """What one pruning run produced.

    Attributes:
        widths: (rows, L) int64 trajectory: alive channels per width entry after each recorded step.
        params: (rows,) int64 exact parameter count of each row.
        start_widths: (L,) widths of the network pruning started from.
        final_widths: (L,) alive channels at the end.
        model: the final network (physically shrunk where exact, masked channels zeroed by ``masks``).
        masks: ``{i: (w_i,) 0/1 tensor}`` of the masked entries of ``model`` (empty for VGG11 with shrink).
        steps: prune steps taken.
        stop_reason: ``"fraction"``, ``"layer_empties"`` or ``"no_candidates"``.
        seconds: wall time of the pruning phase (pre-training excluded), s.
        pretrain_seconds: wall time of the pre-training phase, s.
        losses: (steps,) mean training loss over each step's minibatches.
    """

    widths: np.ndarray
    params: np.ndarray
    start_widths: list[int]
    final_widths: list[int]
    model: nn.Module
    masks: dict[int, torch.Tensor]
    steps: int
    stop_reason: str
    seconds: float
    pretrain_seconds: float
    losses: list[float] = field(default_factory=list)


def _select(
    scores: Scores, alive: list[torch.Tensor], n: int, empties_stop: bool
) -> list[tuple[int, int]] | None:
    """The ``n`` lowest-ranked alive channels, ranked globally; ``None`` when the released rule stops.

    A layer at one channel leaves the ranking unless ``empties_stop`` (then picking its last channel
    stops pruning, which is signalled by returning ``None``).
    """
    layer, chan, val = [], [], []
    for i, (s, a) in enumerate(zip(scores, alive)):
        idx = torch.nonzero(a).flatten()
        if not empties_stop and len(idx) <= 1:
            continue
        layer.append(torch.full((len(idx),), i))
        chan.append(idx)
        val.append(s[idx].double())
    if not val:
        return []
    layer_t, chan_t, val_t = torch.cat(layer), torch.cat(chan), torch.cat(val)
    order = torch.argsort(val_t, stable=True)
    left = [int(a.sum()) for a in alive]
    picked: list[tuple[int, int]] = []
    for j in order.tolist():
        i = int(layer_t[j])
        if left[i] <= 1:
            if empties_stop:
                return None
            continue
        left[i] -= 1
        picked.append((i, int(chan_t[j])))
        if len(picked) == n:
            break
    return picked


def prune(
    arch: str,
    data: ImageData,
    settings: PruneSettings = PruneSettings(),
    widths: Sequence[int] | None = None,
    dataset: Dataset = "cifar10",
    convcut: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    criterion: Callable[[nn.Module], Scores] | None = None,
    progress: bool = True,
    on_row: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> PruneResult:
    """Algorithm 1: train a fresh network while pruning it, recording the width trajectory.

    A fresh network (``widths``, default widths when ``None``; initialised from ``seed``) is trained
    ``pretrain_epochs`` epochs at ``pretrain_lr``; then training continues at ``lr`` (divided by
    ``lr_decay`` every ``lr_decay_every`` epochs) and every ``batches_per_step`` minibatches the
    ``channels_per_step`` lowest-scored channels (ranked globally) are removed. Once every layer has
    lost a channel, each step records a row; pruning stops at ``stop_fraction`` of the channels.

    Args:
        arch: architecture name.
        data: the dataset (its training split is used, batches built on ``device``).
        settings: the schedule.
        widths: (L,) start widths.
        dataset, convcut: architecture variant (class count must match ``data``).
        device: training device.
        seed: initialisation, batch order and augmentation.
        criterion: importance callable ``model -> [(w_i,) scores]`` (higher = keep); objects with
            ``attach``/``reset`` (like :class:`TaylorFO`, the default) are attached to each rebuilt network.
        progress: show a tqdm bar.
        on_row: called after every recorded row with the trajectory so far, ``(rows, L)`` widths and
            ``(rows,)`` parameter counts (int64 arrays): a live plot redraws from it.

    Returns:
        A :class:`PruneResult`.
    """
    from tqdm.auto import tqdm

    s = settings
    device = torch.device(device)
    start = list(default_widths(arch) if widths is None else widths)
    n_layers = len(start)
    torch.manual_seed(seed)
    spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
    if spec.num_classes != data.spec.num_classes or spec.image_size != data.spec.image_size:
        raise ValueError(
            f"the network is built for {spec.name} ({spec.num_classes} classes, {spec.image_size} px) "
            f"but the data has {data.spec.num_classes} classes, {data.spec.image_size} px"
        )
    model = create_model(arch, start, dataset, convcut).to(device)
    channels_last = s.channels_last and channels_last_ok(device, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = DeviceBatches(
        data.train_x,
        data.train_y,
        data.spec,
        device,
        s.batch_size,
        train=True,
        augment=s.augment,
        drop_last=len(data.train_y) >= s.batch_size,
        channels_last=channels_last,
    )
    opt = torch.optim.SGD(
        model.parameters(), lr=s.pretrain_lr, momentum=s.momentum, weight_decay=s.weight_decay
    )

    def step(x, y) -> float:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    # ---- pre-training
    t0 = time.perf_counter()
    model.train()
    for epoch in tqdm(range(s.pretrain_epochs), desc="pre-train", disable=not progress, leave=False):
        for x, y in batches.iterate(seed * 100_003 + epoch):
            step(x, y)
    pretrain_seconds = time.perf_counter() - t0

    # ---- pruning
    crit = TaylorFO() if criterion is None else criterion
    phys = list(start)
    alive = [torch.ones(w, dtype=torch.bool) for w in start]
    masks: dict[int, torch.Tensor] = {}
    shrinkable = shrinkable_layers(arch) if s.shrink else frozenset()
    mask_handle = apply_masks(model, masks)
    if hasattr(crit, "attach"):
        crit.attach(model)
    total = sum(start)
    target = s.target_channels(total)
    rows: list[list[int]] = []
    row_params: list[int] = []
    losses: list[float] = []
    n_alive, steps, stop_reason = total, 0, "fraction"
    bar = tqdm(total=total - target, desc="prune", unit="ch", disable=not progress, leave=False)
    t0 = time.perf_counter()
    epoch, since, run_loss = 0, 0, 0.0
    done = n_alive <= target
    while not done:
        lr = s.lr / s.lr_decay ** (epoch // s.lr_decay_every)
        for g in opt.param_groups:
            g["lr"] = lr
        for x, y in batches.iterate(seed * 100_003 + s.pretrain_epochs + epoch):
            run_loss += step(x, y)
            since += 1
            if since < s.batches_per_step:
                continue
            scores = crit(model)
            picked = _select(
                scores, alive, min(s.channels_per_step, n_alive - target), s.stop_when_layer_empties
            )
            if picked is None or not picked:
                stop_reason = "layer_empties" if picked is None else "no_candidates"
                done = True
                break
            for i, c in picked:
                alive[i][c] = False
            n_alive -= len(picked)
            steps += 1
            losses.append(run_loss / since)
            since, run_loss = 0, 0.0
            bar.update(len(picked))
            for i in {i for i, _ in picked}:
                masks[i] = alive[i].to(device=device, dtype=torch.float32)
            # Rebuild once the masked share of the shrinkable channels is worth it: each rebuild costs
            # a copy of the weights and new kernel shapes, so rebuilding after every small step loses
            # part of what the smaller network saves.
            dead = sum(int((~alive[i]).sum()) for i in shrinkable)
            if dead and dead >= s.shrink_min_fraction * sum(phys[i] for i in shrinkable):
                keep = {i: torch.nonzero(alive[i]).flatten() for i in shrinkable if not alive[i].all()}
                mask_handle.remove()
                model, phys, opt = shrink_model(model, arch, phys, keep, dataset, convcut, opt)
                for i in keep:
                    alive[i] = torch.ones(phys[i], dtype=torch.bool)
                    del masks[i]
                mask_handle = apply_masks(model, masks)
                if hasattr(crit, "attach"):
                    crit.attach(model)
            if hasattr(crit, "reset"):
                crit.reset()
            logical = [int(a.sum()) for a in alive]
            if all(w < w0 for w, w0 in zip(logical, start)):
                rows.append(logical)
                row_params.append(param_count(arch, logical, dataset, convcut))
                if on_row is not None:
                    on_row(np.asarray(rows, dtype=np.int64), np.asarray(row_params, dtype=np.int64))
            if n_alive <= target:
                done = True
                break
        epoch += 1
    bar.close()
    seconds = time.perf_counter() - t0
    if hasattr(crit, "detach"):
        crit.detach()
    mask_handle.remove()
    apply_masks(model, masks)  # the returned model keeps computing the pruned function
    w = np.asarray(rows, dtype=np.int64).reshape(-1, n_layers)
    params = np.asarray(row_params, dtype=np.int64)
    return PruneResult(
        w,
        params,
        start,
        [int(a.sum()) for a in alive],
        model,
        {i: m.cpu() for i, m in masks.items()},
        steps,
        stop_reason,
        seconds,
        pretrain_seconds,
        losses,
    )
