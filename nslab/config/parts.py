"""The parts of the one configuration: frozen settings of every stage (:mod:`.preset` composes them).

Every class here is a frozen dataclass that resolves to plain JSON (:func:`resolve`); :func:`digest` of
the *resolved* settings (plus a fingerprint of the data) keys every cached artifact, so changing a
setting that changes a result never reuses an old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "BaselineSettings",
    "LatencySettings",
    "PruneSettings",
    "Recipe",
    "Resources",
    "SearchSettings",
    "digest",
    "file_part",
    "resolve",
    "scale_epochs",
]


def resolve(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses become dicts, tuples lists, floats stay floats."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # a field marked ``omit_default`` (added after results were cached) resolves only when set away from
        # its default, so the keys of settings that leave it alone stay what they were
        return {f.name: resolve(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, dict):
        return {str(k): resolve(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [resolve(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):  # numpy / torch scalars
        return obj.item()
    return obj


def file_part(name: str) -> str:
    """``name`` as part of a file name (a run directory, a record): a factory string such as
    ``nslab.models.zoo:cifar_resnet18`` has a colon, not allowed in Windows file names; every character but letters,
    digits and ``._-`` becomes ``-``."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def digest(*parts: Any, n: int = 16) -> str:
    """``n`` hex digits of the SHA-1 of the canonical JSON of ``parts`` (resolved): an artifact key."""
    blob = json.dumps(resolve(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:n]


# --------------------------------------------------------------------------------------------------------
# pruning (Algorithm 1)


@dataclass(frozen=True)
class PruneSettings:
    """Settings of one pruning run (Algorithm 1).

    The defaults take the released CIFAR protocol's numbers (k = 10 channels every m = 50 minibatches of
    256, 10 pre-training epochs, lr 0.1 then 0.01 divided by 1.5 every 10 epochs, SGD momentum 0.5, wd 5e-4,
    stop at 5%) but are NOT the release in these details, which keep nslab's earlier readings so that cached
    searches keep their keys: ``relu6_gates="after"``, ``drop_last=True``, bf16 on CUDA
    (``precision="bf16"``), no stop when a layer empties (``stop_when_layer_empties=False``,
    ``stop_rule="rank"``), the lr drop and decays one epoch later than the release (``lr_schedule="nslab"``)
    and exactly k channels per step (``prune_ties="exact_k"``). The ``paper`` preset
    (:mod:`nslab.config.presets`) sets the release's value of each; smoke, cpu and gpu keep the defaults of
    the last three (their cached searches and the committed cpu figures were made with them; gpu sets
    ``relu6_gates`` and ``drop_last`` as the release).

    Attributes:
        channels_per_step: k, channels removed per prune step.
        batches_per_step: m, training minibatches between prune steps.
        batch_size: images per minibatch.
        pretrain_epochs: epochs of plain training of the fresh network before pruning starts.
        pretrain_lr: learning rate of those epochs.
        pretrain_schedule: ``"constant"`` (the release) or ``"linear"`` (from ``pretrain_lr`` to zero over the
            pre-training epochs, step by step: a few epochs then end on a settled network).
        lr: learning rate once pruning starts; divided by ``lr_decay`` every ``lr_decay_every`` epochs
            (from which epoch: ``lr_schedule``).
        lr_decay: divisor of the learning-rate schedule during pruning.
        lr_decay_every: epochs between learning-rate divisions during pruning.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (L2).
        stop_fraction: pruning stops once ``N - int((1 - stop_fraction) * N)`` of the N starting
            channels remain (0.05: 138 of VGG11's 2752); in (0, 1).
        stop_when_layer_empties: stop everything when the k lowest-ranked channels would empty a layer
            (part of the release's rule, see ``stop_rule``). Otherwise (default) a layer at one channel
            leaves the ranking.
        stop_rule: ``"rank"`` (default): a layer down to one channel stops pruning only when that channel
            ranks among the channels a step removes (with ``stop_when_layer_empties``). ``"release"``: also
            stop at the first prune step at which some layer (wider at the start) is down to one channel,
            whatever it ranks: the release scores pruned channels 0, at or below every threshold, so its
            ``sum(gates) == 1`` check fires on that layer's dead channels (its ``prune.py``). ``paper`` uses
            ``"release"``; smoke, cpu and gpu ``"rank"``, so their cached searches stay valid.
        lr_schedule: which epochs run at which lr, counting epochs e = 1, 2, ... from the first pre-training
            epoch (P = ``pretrain_epochs``, pruning runs from epoch P + 1 on in both). ``"nslab"`` (default):
            epochs 1..P at ``pretrain_lr`` (``pretrain_schedule``), epoch e > P at
            ``lr / lr_decay ** ((e - P - 1) // lr_decay_every)``: with the defaults epochs 1-10 at 0.1,
            11-20 at 0.01, 21-30 at 0.01 / 1.5, ... ``"release"`` (its ``utils.adjust_learning_rate(search=
            True)``; needs a constant ``pretrain_schedule``): epochs 1..P-1 at ``pretrain_lr``, epoch e >= P
            at ``lr / lr_decay ** ((e - P) // lr_decay_every)``: epochs 1-9 at 0.1, the last pre-training
            epoch (10) already at 0.01, 11-19 at 0.01, 20-29 at 0.01 / 1.5, 30-39 at 0.01 / 1.5**2, ...
            (with P = 0 the release never switches to ``lr``: epochs 1-9 at ``pretrain_lr``, 10-19 at
            ``pretrain_lr / 1.5``, ...). :func:`nslab.search.prune.search_lr` computes it. ``paper`` uses
            ``"release"``; smoke, cpu and gpu ``"nslab"`` (their cached searches stay valid; cpu's linear
            pre-training has no release form).
        prune_ties: ``"exact_k"`` (default): a step removes exactly the k (``channels_per_step``, fewer
            near the stop fraction) lowest-ranked channels, ties broken by position. ``"at_or_below"`` (the
            release): it removes every candidate channel scoring at or below the k-th lowest score, so
            channels tied at the threshold (e.g. dead channels all scoring 0) go in the same step, possibly
            more than k. ``paper`` uses ``"at_or_below"``; smoke, cpu and gpu ``"exact_k"``.
        shrink: rebuild the network smaller where that is exact (else mask only).
        shrink_min_fraction: rebuild once at least this fraction of the physical channels of the
            shrinkable layers is masked (0: after every step); in [0, 1).
        augment: random crop + flip on training batches.
        channels_last: run convolutions in channels-last memory format (faster on CPU).
        min_pretrain_accuracy: test accuracy (%) the pre-trained network must reach before pruning
            starts (``None``: no floor, e.g. on synthetic data or when studying pre-training itself).
        relu6_gates: where Taylor-FO reads MobileNetV2's stem and head gates: ``"before"`` ReLU6 (the
            release: right after the BatchNorm, like every other gate) or ``"after"`` it (nslab's earlier
            reading; the default only so that cached searches keep their keys). They differ only where
            the BatchNorm output is >= 6 (see :class:`nslab.search.criteria.TaylorFO`).
        drop_last: drop the last incomplete minibatch of every pass (the release's DataLoader keeps it:
            it counts towards ``batches_per_step`` like any other).
        precision: arithmetic of the run's steps on CUDA, where the Taylor-FO scores accumulate: ``"bf16"``
            (bf16 autocast) or ``"fp32"`` (no autocast, TF32 off: the release). CPU runs are fp32 either way.
        coupled_scores: how Taylor-FO scores a traced network's coupled group (``"mean"``: the members' mean, or
            ``"gate"``: their sum; :class:`nslab.search.criteria.TaylorFO`'s ``coupled``). Hand-written networks
            have one gate per entry: the same scores either way.

    ``relu6_gates``, ``drop_last``, ``precision``, ``stop_rule``, ``lr_schedule``, ``prune_ties`` and
    ``coupled_scores`` came after results were cached: at their defaults they are left out of the resolved settings
    (:func:`resolve`), so those results keep their keys.
    """

    channels_per_step: int = 10
    batches_per_step: int = 50
    batch_size: int = 256
    pretrain_epochs: int = 10
    pretrain_lr: float = 0.1
    pretrain_schedule: str = "constant"
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
    min_pretrain_accuracy: float | None = None
    relu6_gates: str = dataclasses.field(default="after", metadata={"omit_default": True})
    drop_last: bool = dataclasses.field(default=True, metadata={"omit_default": True})
    # "bf16": bf16 autocast on CUDA (CPUs run fp32 anyway); "fp32": fp32 with TF32 off, as the release ran.
    # Taylor-FO sums z * dL/dz over a channel, which cancels most for the low-scored channels pruning removes.
    precision: str = dataclasses.field(default="bf16", metadata={"omit_default": True})
    stop_rule: str = dataclasses.field(default="rank", metadata={"omit_default": True})
    lr_schedule: str = dataclasses.field(default="nslab", metadata={"omit_default": True})
    prune_ties: str = dataclasses.field(default="exact_k", metadata={"omit_default": True})
    coupled_scores: str = dataclasses.field(default="mean", metadata={"omit_default": True})

    def __post_init__(self) -> None:
        if self.relu6_gates not in ("after", "before"):
            raise ValueError(f"unknown relu6_gates {self.relu6_gates!r}; accepted: before, after")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"unknown precision {self.precision!r}; accepted: bf16, fp32")
        for name, accepted in (("stop_rule", ("rank", "release")), ("lr_schedule", ("nslab", "release")),
                               ("prune_ties", ("exact_k", "at_or_below")), ("coupled_scores", ("mean", "gate"))):
            if getattr(self, name) not in accepted:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; accepted: {', '.join(accepted)}")
        if self.lr_schedule == "release" and self.pretrain_schedule != "constant":
            raise ValueError("lr_schedule='release' runs the last pre-training epoch at lr: it needs "
                             f"pretrain_schedule='constant', got {self.pretrain_schedule!r}")
        for name in ("channels_per_step", "batches_per_step", "batch_size", "lr_decay_every"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.pretrain_epochs, numbers.Integral) or self.pretrain_epochs < 0:
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
        if self.pretrain_schedule not in ("constant", "linear"):
            raise ValueError(f"unknown pretrain_schedule {self.pretrain_schedule!r}; accepted: constant, linear")
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
# training


@dataclass(frozen=True)
class Recipe:
    """A named, frozen set of training settings (saved next to every run it produced).

    Attributes:
        name: recipe name (``"paper"``, ``"cpu"``, ``"smoke"`` or your own).
        epochs: passes over the training set.
        batch_size: training images per SGD step.
        lr: base (peak) learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty on all parameters (BatchNorm included, as in the release).
        nesterov: Nesterov momentum.
        schedule: ``"step"``: ``lr * gamma**k`` where k counts the milestones m with ``epoch >= m``
            (1-based epochs, the release's ``adjust_learning_rate``); ``"linear"``: linear warm-up over
            ``warmup_epochs`` then linear decay to 0 at the end, updated every step.
        milestones: 1-based epochs from which the step schedule multiplies the lr by ``gamma`` again.
        gamma: step-schedule factor.
        warmup_epochs: linear schedule warm-up length, epochs (fractions allowed).
        label_smoothing: cross-entropy label smoothing.
        subset: keep only this many training images (``None``: all).
        subset_mode: ``"balanced"`` (seeded, class-balanced) or ``"first"`` (storage order: the first
            classes only, for a class-sorted folder dataset); see ``ImageData.subset``.
        augment: random crop/flip(/rotation) on training batches.
        crop_padding: zero padding of the random crop, pixels (the paper: 4; offsets are uniform in
            ``0..2 * crop_padding``).
        drop_last: drop the last incomplete training batch of each epoch.
        eval_batch_size: images per evaluation batch (no effect on results).
    """

    name: str
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.5
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    subset: int | None = None
    subset_mode: str = "balanced"
    augment: bool = True
    crop_padding: int = 4
    drop_last: bool = False
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.schedule not in ("step", "linear"):
            raise ValueError(f"unknown schedule {self.schedule!r}; accepted: step, linear")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be >= 1 or None, got {self.subset}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.subset_mode not in ("first", "balanced"):
            raise ValueError(f"unknown subset_mode {self.subset_mode!r}; accepted: first, balanced")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def to_dict(self) -> dict:
        """JSON-ready dict (``milestones`` as a list)."""
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "milestones": tuple(d.get("milestones", ()))})


def scale_epochs(r: Recipe, epochs: int) -> Recipe:
    """``r`` with ``epochs`` passes, step milestones (and warm-up) scaled in proportion.

    ``dataclasses.replace(r, epochs=n)`` keeps the milestones as they are; this keeps their positions
    relative to the run length (e.g. paper 300 -> 30 epochs: milestones 100/200/250 -> 10/20/25).
    """
    f = epochs / r.epochs
    milestones = tuple(max(1, round(m * f)) for m in r.milestones)
    return dataclasses.replace(r, epochs=epochs, milestones=milestones, warmup_epochs=r.warmup_epochs * f)


# --------------------------------------------------------------------------------------------------------
# search, baselines, latency


@dataclass(frozen=True)
class SearchSettings:
    """How architecture descent (Algorithms 1, 2, 4) searches.

    Attributes:
        prune: the pruning schedule of every descent iteration (Algorithm 1).
        iterations: descent iterations.
        train_subset: prune on this many training images (class-balanced, seeded); ``None``: all.
        synthetic: search on synthetic data shaped like the dataset (``nslab.data.smoke_data``).
        start_ratio: iteration 1 prunes ``uniform_widths(arch, start_ratio)`` (1.0: the default
            network); its parameter count is the budget of every generated start network.
        threads: torch CPU threads while searching (``None``: torch's default). Tiny smoke networks
            lose more to a second, shared core than they gain.
    """

    prune: PruneSettings = PruneSettings()
    iterations: int = 15
    train_subset: int | None = None
    synthetic: bool = False
    start_ratio: float = 1.0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, numbers.Integral) or isinstance(self.iterations, bool) \
                or self.iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if not 0 < self.start_ratio <= 4:
            raise ValueError(f"start_ratio must be in (0, 4], got {self.start_ratio!r}")


@dataclass(frozen=True)
class BaselineSettings:
    """The paper's baselines.

    Attributes:
        morphnet_keep: fraction of the start network's channels MorphNet (Taylor-FO) prunes to before
            scaling uniformly (the paper: 0.5).
        li_ratio: the uniform ratio whose budget Li et al. prune to (the paper: 0.75).
        li_finetune_epochs: fine-tuning epochs after the L1 pruning.
        li_finetune_lr: fine-tuning learning rate (constant).
        li_finetune_momentum: fine-tuning SGD momentum.
    """

    morphnet_keep: float = 0.5
    li_ratio: float = 0.75
    li_finetune_epochs: int = 40
    li_finetune_lr: float = 0.001
    li_finetune_momentum: float = 0.5


@dataclass(frozen=True)
class LatencySettings:
    """Latency protocol: ``repeat`` timed forward passes of ``batch`` images after ``warmup`` untimed ones."""

    batch: int = 100
    warmup: int = 20
    repeat: int = 80
    # how CUDA passes are timed (nslab.scaling.latency.PROTOCOLS); the CPU always times the wall clock
    protocol: str = dataclasses.field(default="graph", metadata={"omit_default": True})


@dataclass(frozen=True)
class Resources:
    """What one task of the reproduction grid (a search, a training run) asks an executor for.

    Scheduling only: no result depends on it, so it keys no artifact.

    Attributes:
        cpus: CPU cores per task (fractions allowed).
        gpus: GPUs per task; a fraction (e.g. 0.25) so several small runs share one GPU.
        retries: how many times a failed task is run again before it is reported as failed.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 2

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Resources.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.retries, numbers.Integral) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValueError(f"Resources.retries must be an integer >= 0, got {self.retries!r}")
