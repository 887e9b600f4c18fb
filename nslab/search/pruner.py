"""Algorithm 1's pruner: the state it carries between prune steps, as a resumable object.

:class:`Pruner` holds everything Algorithm 1 carries between steps (alive channels per width entry,
physical widths, masks, the recorded rows and their exact parameter counts, losses, the stop reason) and
is driven by the one training loop, :func:`~nslab.runs.loop.train_one_epoch`, through its ``on_step`` hook:
every ``batches_per_step`` optimizer steps it ranks the channels with a criterion
(:mod:`nslab.search.criteria`), removes the ``channels_per_step`` lowest globally (:func:`_select`), rebuilds
the network smaller where that is exact and worth it (:mod:`nslab.search.channels`), records a row once every
layer has lost a channel, and stops the pass at the stop fraction. :meth:`Pruner.finish` gives the
:class:`PruneResult`. The run around it (pre-training, pruning epochs, checkpoints) is
:func:`nslab.search.prune.prune`.

Masked channels are excluded from the ranking and counted as removed: trajectory rows are always the
logical widths (alive channels) and their exact :func:`~nslab.models.param_count`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..config import PruneSettings
from ..models import get_arch, param_count
from ..models.traced_arch import width_multiples
from ..runs.loop import NonFiniteLossError, Step
from .channels import Dataset, apply_masks, shrink_model, shrinkable_layers
from .criteria import Scores, TaylorFO

__all__ = ["HALF_KEEP", "PruneResult", "Pruner"]

# MorphNet's network (the paper's baseline) is the start network when pruning has removed half of its channels:
# the pruner keeps the alive widths at exactly N - int(HALF_KEEP * N) channels as it passes that point.
HALF_KEEP = 0.5

_DEFAULT = PruneSettings()  # the release's numbers, not all its details (see PruneSettings)


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
        seconds: wall time of the pruning phase (pre-training excluded), s; summed over resumed sessions.
        pretrain_seconds: wall time of the pre-training phase, s.
        losses: (steps,) mean training loss over each step's minibatches.
        pretrain_accuracy: test accuracy (%) of the network when pruning started (after pre-training).
        at_half: (L,) alive channels when exactly ``N - int(HALF_KEEP * N)`` of the start network's N were
            left, layers never pruned included (MorphNet's network); ``None`` if pruning stopped before.
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
    pretrain_accuracy: float | None = None
    at_half: list[int] | None = None


def _select(
    scores: Scores, alive: list[torch.Tensor], n: int, empties_stop: bool, ties: bool = False
) -> list[tuple[int, int]] | None:
    """The ``n`` lowest-ranked alive channels, ranked globally; ``None`` when the released rule stops.

    A layer at one channel leaves the ranking unless ``empties_stop`` (then picking its last channel
    stops pruning, which is signalled by returning ``None``). With ``ties`` (``prune_ties="at_or_below"``,
    the release) ``n`` grows to every candidate scoring at or below the ``n``-th lowest score.
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
    if ties and n > 0:
        n = int((val_t <= val_t[order[min(n, len(order)) - 1]]).sum())
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


def balanced_keep(alive: torch.Tensor, multiple: int) -> torch.Tensor | None:
    """The channels a shrink keeps of one width entry: its alive ones, and where the width must stay a multiple of
    ``multiple`` (a grouped conv's input or output, split into that many equal blocks) as many dead ones as keep
    every block the same size: each block loses as many dead channels as the block with the fewest has. ``None``
    when nothing can be removed.

    Args:
        alive: (w,) bool, w a multiple of ``multiple``.

    Returns:
        Sorted int64 indices (a superset of the alive channels), or ``None``.
    """
    if multiple == 1:
        return None if bool(alive.all()) else torch.nonzero(alive).flatten()
    blocks = alive.view(multiple, -1)
    drop = int((~blocks).sum(1).min())
    if not drop:
        return None
    # in each block, the dead channels after its first (dead - drop) stay (masked) and the rest go
    dead_rank = torch.cumsum((~blocks).long(), 1)
    extra = (~blocks).sum(1, keepdim=True) - drop
    kept = blocks | (~blocks & (dead_rank <= extra))
    return torch.nonzero(kept.flatten()).flatten()


# --------------------------------------------------------------------------------------------------------
# the pruner


class Pruner:
    """Algorithm 1's state between prune steps, driven by :func:`~nslab.runs.loop.train_one_epoch`.

    Usage: ``pruner.attach(model)``, then pass ``pruner.on_step`` (or a function calling it) as the
    loop's ``on_step`` until ``pruner.done``; ``pruner.finish(model)`` gives the :class:`PruneResult`.
    Every ``batches_per_step`` calls, :meth:`on_step` takes a prune step: it ranks the alive channels
    with the criterion, removes the ``channels_per_step`` lowest (masks them at their gates), rebuilds
    the network smaller when enough shrinkable channels are masked (assigning the new model and optimiser
    to the :class:`~nslab.runs.loop.Step`, so the loop continues with them), records a row once every entry
    has lost a channel, and sets ``step.stop`` once the stop fraction is reached.

    :meth:`state_dict` / :meth:`load_state_dict` carry the state across processes. They hold no
    criterion state: a checkpoint is meant to be taken right after a prune step, when the criterion has
    just been reset (and no loss is accumulated).

    Args:
        arch, start, dataset, convcut: the network pruning starts from (``start``: its (L,) widths).
        settings: the schedule (``channels_per_step``, ``batches_per_step``, stop and shrink rules).
        criterion: importance callable ``model -> [(w_i,) scores]`` (higher = keep); default
            :class:`~nslab.search.criteria.TaylorFO`. One with ``attach``/``detach``/``reset`` is attached to
            every rebuilt network and reset after every prune step.
        device: where the masks live (the model's device).
    """

    def __init__(
        self,
        arch: str,
        start: Sequence[int],
        settings: PruneSettings = _DEFAULT,
        dataset: Dataset = "cifar10",
        convcut: bool = False,
        criterion: Callable[[nn.Module], Scores] | None = None,
        device: torch.device | str = "cpu",
    ):
        self.arch, self.dataset, self.convcut, self.settings = arch, dataset, convcut, settings
        self.start = [int(w) for w in start]
        self.criterion = TaylorFO(settings.relu6_gates, settings.coupled_scores) if criterion is None else criterion
        self.device = torch.device(device)
        self.shrinkable = shrinkable_layers(arch) if settings.shrink else frozenset()
        self.multiples = width_multiples(get_arch(arch))  # a grouped entry shrinks in equal blocks (balanced_keep)
        self.onset = get_arch(arch).fit_from_onset  # a row after every step (Architecture.fit_from_onset)
        self.target = settings.target_channels(sum(self.start))
        self.half = sum(self.start) - int(HALF_KEEP * sum(self.start))  # MorphNet's channel count
        self.at_half: list[int] | None = None
        self.phys = list(self.start)  # physical widths of the current network
        self.alive = [torch.ones(w, dtype=torch.bool) for w in self.start]  # per physical channel
        self.masks: dict[int, torch.Tensor] = {}  # read by the gate hooks at every forward: mutate, never rebind
        self.rows: list[list[int]] = []
        self.row_params: list[int] = []
        self.history: list[list[int]] = []  # the widths after every step: the trajectory when an entry is never pruned
        self.losses: list[float] = []
        self.steps = 0
        self.stop_reason: str | None = "fraction" if self.n_alive <= self.target else None
        self._since, self._loss = 0, None
        self._hooks = None

    @property
    def n_alive(self) -> int:
        """Alive channels over all entries."""
        return sum(int(a.sum()) for a in self.alive)

    @property
    def done(self) -> bool:
        """Pruning has stopped (see :attr:`stop_reason`)."""
        return self.stop_reason is not None

    def widths(self) -> list[int]:
        """The logical widths: alive channels per entry."""
        return [int(a.sum()) for a in self.alive]

    def never_pruned(self) -> list[int]:
        """Entries still at their start width (after :attr:`done`: never pruned)."""
        return [i for i, (w, w0) in enumerate(zip(self.widths(), self.start)) if w == w0]

    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows so far: ``(rows, L)`` widths and ``(rows,)`` exact parameter counts, int64.

        Rows are recorded once every entry has lost a channel (the release's rule), or after every step where the
        architecture fits from each group's onset (:attr:`~nslab.models.Architecture.fit_from_onset`). A finished
        run of the release's rule that never pruned some entry (a group whose channels always ranked high) would
        have none; its rows are then taken from the step where every *pruned* entry had lost one, the others
        constant in them (a power law with beta = 0, which the budget solver holds at that width).
        """
        rows, params, never = self.rows, self.row_params, self.never_pruned()
        if self.done and never and len(never) < len(self.start) and not self.onset:
            rows = [h for h in self.history if all(w < w0 for i, (w, w0) in enumerate(zip(h, self.start))
                                                    if i not in never)]
            params = [param_count(self.arch, r, self.dataset, self.convcut) for r in rows]
        w = np.asarray(rows, dtype=np.int64).reshape(-1, len(self.start))
        return w, np.asarray(params, dtype=np.int64)

    def attach(self, model: nn.Module) -> None:
        """Hook ``model``'s gates: masks first, then the criterion (which thus sees masked outputs)."""
        self.detach()
        self._hooks = apply_masks(model, self.masks)
        if hasattr(self.criterion, "attach"):
            self.criterion.attach(model)

    def detach(self) -> None:
        """Remove the hooks :meth:`attach` placed."""
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None
        if hasattr(self.criterion, "detach"):
            self.criterion.detach()

    def on_step(self, step: Step) -> bool:
        """Count one optimizer step; every ``batches_per_step`` of them, take a prune step.

        Returns:
            Whether channels were removed (a checkpoint may be written now).

        Raises:
            NonFiniteLossError: the mean loss since the last prune step is NaN/inf (nothing was pruned).
        """
        loss = step.loss.double()
        self._loss = loss if self._loss is None else self._loss + loss
        self._since += 1
        if self.done or self._since < self.settings.batches_per_step:
            return False
        s = self.settings
        if s.stop_rule == "release" and any(int(a.sum()) == 1 < w0 for a, w0 in zip(self.alive, self.start)):
            picked = None  # the release's sum(gates) == 1 check fires on that layer's dead channels
        else:
            picked = _select(
                self.criterion(step.model), self.alive, min(s.channels_per_step, self.n_alive - self.target),
                s.stop_when_layer_empties, s.prune_ties == "at_or_below",
            )
        if not picked:
            self.stop_reason = "layer_empties" if picked is None else "no_candidates"
            step.stop = True
            return False
        mean = float(self._loss) / self._since
        if not np.isfinite(mean):
            raise NonFiniteLossError(step.epoch, step.index, mean, None)
        self._keep_half(picked)
        self._remove(picked, mean)
        self._maybe_shrink(step)
        if hasattr(self.criterion, "reset"):
            self.criterion.reset()
        logical = self.widths()
        self.history.append(logical)
        if self.onset or all(w < w0 for w, w0 in zip(logical, self.start)):
            self.rows.append(logical)
            self.row_params.append(param_count(self.arch, logical, self.dataset, self.convcut))
        if self.n_alive <= self.target:
            self.stop_reason = "fraction"
            step.stop = True
        return True

    def _keep_half(self, picked: list[tuple[int, int]]) -> None:
        # The step that crosses the half point: a run stopping there removes the lowest-ranked of ``picked``
        # until exactly ``half`` channels remain (``picked`` is in rank order), and so does MorphNet's.
        over = self.n_alive - self.half
        if self.at_half is None and 0 < over <= len(picked):
            w = self.widths()
            for i, _ in picked[:over]:
                w[i] -= 1
            self.at_half = w

    def _remove(self, picked: list[tuple[int, int]], mean_loss: float) -> None:
        for i, c in picked:
            self.alive[i][c] = False
        for i in {i for i, _ in picked}:
            self.masks[i] = self._mask(i)
        self.steps += 1
        self.losses.append(mean_loss)
        self._since, self._loss = 0, None

    def _mask(self, i: int) -> torch.Tensor:
        """(w_i,) float 0/1 of entry i's alive channels, where the gate hooks read it."""
        return self.alive[i].to(device=self.device, dtype=torch.float32)

    def _maybe_shrink(self, step: Step) -> None:
        # Rebuild once the masked share of the shrinkable channels is worth it: each rebuild costs a copy of
        # the weights and new kernel shapes, so rebuilding after every small step loses part of what the
        # smaller network saves.
        keep = {i: k for i in self.shrinkable if (k := balanced_keep(self.alive[i], self.multiples[i])) is not None}
        removable = sum(self.phys[i] - len(k) for i, k in keep.items())
        if not removable or removable < self.settings.shrink_min_fraction * sum(self.phys[i] for i in self.shrinkable):
            return
        self.detach()
        step.model, self.phys, step.optimizer = shrink_model(
            step.model, self.arch, self.phys, keep, self.dataset, self.convcut, step.optimizer
        )
        for i, k in keep.items():
            self.alive[i] = self.alive[i][k]  # a grouped entry may keep dead channels: they stay masked
            if self.alive[i].all():
                del self.masks[i]
            else:
                self.masks[i] = self._mask(i)
        self.attach(step.model)

    def state_dict(self) -> dict:
        """Plain state (lists, ints, CPU bool tensors) for a checkpoint; see the class docstring."""
        return {
            "phys": list(self.phys),
            "alive": [a.clone() for a in self.alive],
            "masked": sorted(self.masks),
            "rows": [list(r) for r in self.rows],
            "row_params": list(self.row_params),
            "history": [list(h) for h in self.history],
            "losses": list(self.losses),
            "steps": self.steps,
            "stop_reason": self.stop_reason,
            "at_half": self.at_half,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (then :meth:`attach` the network built at ``phys`` widths)."""
        self.phys = [int(w) for w in state["phys"]]
        self.alive = [a.to(dtype=torch.bool, device="cpu").clone() for a in state["alive"]]
        self.masks.clear()
        self.masks.update({i: self._mask(i) for i in state["masked"]})
        self.rows = [list(r) for r in state["rows"]]
        self.row_params = list(state["row_params"])
        self.history = [list(h) for h in state.get("history", [])]  # none in an older nslab's checkpoint
        self.losses = list(state["losses"])
        self.steps = int(state["steps"])
        self.stop_reason = state["stop_reason"]
        self.at_half = state.get("at_half")  # a checkpoint of an older nslab has none (MorphNet falls back)
        self._since, self._loss = 0, None

    def finish(self, model: nn.Module, seconds: float, pretrain_seconds: float,
               pretrain_accuracy: float | None = None) -> PruneResult:
        """Detach from ``model`` and return the result; ``model`` keeps computing the pruned function."""
        self.detach()
        apply_masks(model, self.masks)
        w, p = self.trajectory()
        masks = {i: m.cpu() for i, m in self.masks.items()}
        return PruneResult(
            w, p, list(self.start), self.widths(), model, masks, self.steps, self.stop_reason or "fraction",
            seconds, pretrain_seconds, list(self.losses), pretrain_accuracy, self.at_half,
        )
