"""Channel importance criteria: a criterion maps a network to one score per channel (higher = keep).

- :class:`TaylorFO` (the paper's, Molchanov et al. 2019): squared first-order Taylor estimate of the loss
  change from removing a channel, accumulated over the minibatches between prune steps by backward hooks
  on the gates;
- :class:`L1Norm` (Li et al. 2017): filter L1 norm;
- :class:`BNScale`: ``|gamma|`` of the BatchNorms over the channel.

:data:`CRITERIA` names them for settings and the CLI; :func:`make_criterion` builds one by name.
A criterion is any callable ``model -> [(w_i,) float64 scores]``; one with ``attach(model)`` /
``detach()`` / ``reset()`` (hooks, accumulators) is re-attached to every rebuilt network and reset
after every prune step by the pruner.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .channels import Dataset, Handles, channel_map, find_gates, gate_entries, gate_modules, gate_points

__all__ = ["CRITERIA", "BNScale", "L1Norm", "Scores", "TaylorFO", "gate_gradients", "make_criterion"]

Scores = list[torch.Tensor]  # one (w_i,) tensor per width entry, physical channels


class TaylorFO:
    """Taylor-FO importance (Molchanov et al. 2019): ``I_c = (g_c * dL/dg_c)^2`` with a constant gate 1.

    ``dL/dg_c = sum over batch, h, w of z * dL/dz`` at the gate's output z, L the loss whose gradient is
    taken (the batch-mean cross-entropy in the pruner). Squared per minibatch, summed, and averaged by
    :meth:`__call__` over the minibatches since :meth:`reset`.

    A traced network's coupled group is gated at every member output (:func:`~nslab.search.channels.gate_points`):
    its channels are scored as one gate ``g_c`` multiplying all of them, whose gradient is the sum of the members'
    ``sum z * dL/dz``; that sum, not each member's, is squared per minibatch (``coupled="gate"``), or its mean over
    the members is (``coupled="mean"``, Torch-Pruning's default group reduction): the gate's score over the
    members' count squared. A hand-written network has one point per entry, so both are the plain rule there.

    Usage: ``crit.attach(model)``, train (each backward pass accumulates), ``scores = crit(model)``.

    Args:
        relu6_gates: ``"before"``: read a gate that sits after a ReLU6 (MobileNetV2's stem and head,
            :class:`~nslab.models.mobilenet.ReLU6Gate`) as if it sat before it, as in the release: with
            ``z = relu6(u)``, ``u * dL/du = z * dL/dz`` where ``0 < u < 6`` and 0 elsewhere, so the sum
            leaves out the positions where ``z == 6``. ``"after"``: the plain ``z * dL/dz`` there too.
        coupled: ``"mean"`` or ``"gate"``, how a coupled group's members combine (above). With ``"gate"`` a residual
            stream read by every block of a stage scores several times any one layer's channels and keeps its
            width until the blocks' own layers are down to one channel (ResNet18: 9 recorded rows, median R² 1.0
            on degenerate widths; see README "Your own network").
    """

    def __init__(self, relu6_gates: str = "after", coupled: str = "mean"):
        if relu6_gates not in ("after", "before"):
            raise ValueError(f"unknown relu6_gates {relu6_gates!r}; accepted: before, after")
        if coupled not in ("mean", "gate"):
            raise ValueError(f"unknown coupled {coupled!r}; accepted: mean, gate")
        self.relu6_gates, self.coupled = relu6_gates, coupled
        self._sum: dict[int, torch.Tensor] = {}
        self._count: dict[int, int] = {}
        self._handles = Handles([])
        self.last: dict[int, torch.Tensor] = {}  # signed dL/dg of the latest backward pass, (w_i,)
        self._part: dict[int, torch.Tensor] = {}  # a coupled group's sum over the members seen in this backward
        self._pending: dict[int, int] = {}  # its members run in this forward whose gradient has not arrived
        self._seen: dict[int, int] = {}  # its members run in this forward

    def attach(self, model: nn.Module) -> TaylorFO:
        """Hook the gates of ``model`` (detaching from any previous model). Returns self."""
        self.detach()
        handles = []
        points = gate_points(model)
        coupled = {i: len(gates) > 1 for i, gates in points.items()}
        for gate in gate_modules(points):  # a concatenation's once, for all the entries it carries
            clamp = getattr(gate, "clamp_max", None) if self.relu6_gates == "before" else None
            entries = [(i, part, coupled[i]) for i, part in gate_entries(gate)]
            handles.append(gate.register_forward_hook(self._fwd(entries, clamp, dim=gate.dim)))
        if any(coupled.values()):
            # a new forward starts a new minibatch: forget a coupled group's partial sum of a pass never backwarded
            handles.append(model.register_forward_pre_hook(self._new_pass))
        self._handles = Handles(handles)
        return self

    def _new_pass(self, _model, _args) -> None:
        self._part.clear()
        self._pending.clear()
        self._seen.clear()

    def _fwd(self, entries: list[tuple[int, slice | None, bool]], clamp, dim: int = 1):
        """The forward hook of one gate point carrying ``(entry, its channels or None for all, coupled)`` s: its
        backward hook adds ``g = sum z * dL/dz`` over every dimension but the channels' ``dim`` to each entry."""

        def fwd(_m, _args, out):
            if not (torch.is_grad_enabled() and out.requires_grad):
                return None
            z = out.detach()
            if clamp is not None:  # the saturated positions pass no gradient to a pre-activation gate
                z = z.masked_fill(z >= clamp, 0)
            for i, _, coupled in entries:
                if coupled:
                    self._pending[i] = self._pending.get(i, 0) + 1
                    self._seen[i] = self._seen.get(i, 0) + 1

            def bwd(grad):
                whole = (z.float() * grad.float()).sum(dim=[d for d in range(z.dim()) if d != dim % z.dim()]).double()
                for i, part, coupled in entries:
                    self._add(i, whole if part is None else whole[part], coupled)

            out.register_hook(bwd)
            return None

        return fwd

    def _add(self, i: int, g: torch.Tensor, coupled: bool) -> None:
        if coupled:  # one gate shared by every member: its gradient is the members' sum
            self._part[i] = self._part[i] + g if i in self._part else g
            self._pending[i] -= 1
            if self._pending[i]:
                return
            g = self._part.pop(i)
            seen = self._seen.pop(i)
            if self.coupled == "mean":
                g = g / seen
        self.last[i] = g
        self._sum[i] = self._sum[i] + g * g if i in self._sum else g * g
        self._count[i] = self._count.get(i, 0) + 1

    def detach(self) -> None:
        """Remove the hooks."""
        self._handles.remove()

    def reset(self) -> None:
        """Forget the accumulated scores (after a prune step)."""
        self._sum, self._count, self.last = {}, {}, {}
        self._part.clear()
        self._pending.clear()
        self._seen.clear()

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
    crit = TaylorFO(coupled="gate").attach(model)  # the gradient itself, a coupled group's summed
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


# name -> factory ``(arch, dataset, convcut) -> criterion``
CRITERIA: dict[str, Callable[[str, Dataset, bool], Callable[[nn.Module], Scores]]] = {
    "taylor_fo": lambda arch, dataset="cifar10", convcut=False: TaylorFO(),
    "l1": L1Norm,
    "bn_scale": BNScale,
}


def make_criterion(name: str, arch: str, dataset: Dataset = "cifar10", convcut: bool = False):
    """The criterion registered as ``name`` in :data:`CRITERIA`, for that architecture."""
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; accepted: {', '.join(CRITERIA)}")
    return CRITERIA[name](arch, dataset, convcut)
