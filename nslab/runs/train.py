"""Full training runs: the learning-rate schedule, per-epoch history, checkpoint and resume.

``train(model, data, recipe)`` runs :func:`~nslab.runs.loop.train_one_epoch` (the one SGD loop, in
:mod:`nslab.runs.loop`) epoch after epoch on a device-resident :class:`~nslab.data.DeviceBatches` pipeline at
the :func:`learning_rate` schedule, evaluates after every epoch and returns a :class:`History` whose
``best_test_acc`` is the paper's metric (max test accuracy over epochs). With a ``run_dir`` every epoch
appends a JSON line to ``log.jsonl`` and atomically rewrites ``checkpoint.pt``; calling ``train`` again on
the same directory resumes after the last finished epoch and reproduces the uninterrupted run (bit for bit
on CPU). The loop's names (:class:`~nslab.runs.loop.Step`, :func:`~nslab.runs.loop.evaluate`,
:class:`~nslab.runs.loop.NonFiniteLossError`, ...) are re-exported here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Recipe, scale_epochs
from ..data import DeviceBatches, ImageData
from ..io import atomic_write_text, write_json
from . import checkpoint
from .loop import (
    EpochStats,
    NonFiniteLossError,
    Step,
    StepGraphs,
    channels_last_ok,
    cudnn_benchmark,
    evaluate,
    resolve_device,
    seed_everything,
    train_one_epoch,
)
from .specs import recipe  # re-exported: a preset's recipe for a dataset name

__all__ = [
    "EpochRecord",
    "EpochStats",
    "History",
    "NonFiniteLossError",
    "Recipe",
    "Step",
    "channels_last_ok",
    "evaluate",
    "learning_rate",
    "recipe",
    "resolve_device",
    "scale_epochs",
    "seed_everything",
    "train",
    "train_one_epoch",
]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
SETTINGS = "settings.json"
_FORMAT = 1


# --------------------------------------------------------------------------------------------------------
# the learning-rate schedule


def learning_rate(r: Recipe, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The learning rate of step ``step`` of (0-based) epoch ``epoch`` under ``r``'s schedule.

    A pure function of its arguments, so resuming needs no scheduler state.
    """
    if r.schedule == "step":
        return r.lr * r.gamma ** sum(epoch + 1 >= m for m in r.milestones)
    t = epoch + step / steps_per_epoch  # epochs elapsed, fractional
    if t < r.warmup_epochs:
        return r.lr * (t + 1 / steps_per_epoch) / r.warmup_epochs
    return r.lr * max(0.0, (r.epochs - t) / (r.epochs - r.warmup_epochs))


# --------------------------------------------------------------------------------------------------------
# history


@dataclass(frozen=True)
class EpochRecord:
    """Statistics of one finished epoch.

    Attributes:
        epoch: 1-based epoch number.
        lr: learning rate of the epoch's first step.
        train_loss: mean training cross-entropy over the epoch's batches (per image, augmented data).
        train_acc: training accuracy over the epoch, percent.
        test_loss: mean test cross-entropy per image.
        test_acc: test accuracy, percent.
        seconds: wall time of the epoch (training and evaluation), seconds.
    """

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float


@dataclass
class History:
    """Per-epoch records of a training run, oldest first."""

    records: list[EpochRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def best_test_acc(self) -> float:
        """Max test accuracy over epochs, percent (the paper's reported metric); NaN before any epoch."""
        return max((r.test_acc for r in self.records), default=float("nan"))

    @property
    def best_epoch(self) -> int:
        """1-based epoch of :attr:`best_test_acc` (the first one on ties); 0 before any epoch."""
        best = self.best_test_acc
        return next((r.epoch for r in self.records if r.test_acc == best), 0)

    @property
    def last_test_acc(self) -> float:
        """Test accuracy after the last epoch, percent; NaN before any epoch."""
        return self.records[-1].test_acc if self.records else float("nan")

    @property
    def seconds(self) -> float:
        """Total wall time of the recorded epochs, seconds."""
        return sum(r.seconds for r in self.records)

    def column(self, name: str) -> list:
        """One field over all epochs, e.g. ``column("test_acc")``."""
        return [getattr(r, name) for r in self.records]

    def to_dict(self) -> dict:
        """JSON-ready dict ``{"records": [...]}``."""
        return {"records": [asdict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls([EpochRecord(**r) for r in d["records"]])


# --------------------------------------------------------------------------------------------------------
# a full training run: settings, checkpoints, resume


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for the data pipeline of one epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _settings(model: nn.Module, data: ImageData, r: Recipe, seed: int, device: torch.device) -> dict:
    return {
        "recipe": r.to_dict(),
        "seed": seed,
        "dataset": data.spec.name,
        "num_train": data.num_train,
        "num_test": data.num_test,
        "model": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        "torch": str(torch.__version__),
    }


# a resumed run may move to another device or torch version; everything else must match
_MUST_MATCH = ("recipe", "seed", "dataset", "num_train", "num_test", "model", "params")


def _open_run(rd: Path, settings: dict, model: nn.Module, opt: torch.optim.Optimizer, dev: torch.device) -> History:
    """Create/check ``rd``; load its checkpoint into ``model`` and ``opt``. Returns the history so far."""
    rd.mkdir(parents=True, exist_ok=True)
    if (rd / SETTINGS).exists():
        checkpoint.check_settings(json.loads((rd / SETTINGS).read_text()), settings, rd, _MUST_MATCH)
    history = History()
    if (rd / CHECKPOINT).exists():
        ckpt = checkpoint.load(rd / CHECKPOINT, dev)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        history = History.from_dict(ckpt["history"])
        checkpoint.set_rng_state(ckpt["rng"])
    write_json(rd / SETTINGS, settings)
    # the checkpoint is the truth: rewrite the log to match it (a crash may have cut it short)
    atomic_write_text(rd / LOG, "".join(json.dumps(asdict(r)) + "\n" for r in history.records))
    return history


def _save_epoch(rd: Path, model, opt, history: History, settings: dict) -> None:
    state = {
        "format": _FORMAT,
        "epoch": len(history),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "history": history.to_dict(),
        "rng": checkpoint.rng_state(),
        "settings": settings,
    }
    checkpoint.save(rd / CHECKPOINT, state)
    with open(rd / LOG, "a") as f:
        f.write(json.dumps(asdict(history.records[-1])) + "\n")


def _batches(data: ImageData, r: Recipe, dev: torch.device, channels_last: bool) -> tuple[DeviceBatches, ...]:
    train_batches = DeviceBatches(data.train_x, data.train_y, data.spec, dev, r.batch_size, train=True,
                                  augment=r.augment, drop_last=r.drop_last, channels_last=channels_last,
                                  padding=r.crop_padding)
    test = DeviceBatches(data.test_x, data.test_y, data.spec, dev, r.eval_batch_size, channels_last=channels_last)
    return train_batches, test


def train(
    model: nn.Module,
    data: ImageData,
    recipe: Recipe,
    device: torch.device | str | None = None,
    seed: int = 0,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    cuda_graphs: bool = True,
) -> History:
    """Train ``model`` on ``data`` with ``recipe``; evaluate on the test split after every epoch.

    The model is moved to ``device`` (and to channels-last memory format) in place and stays there. On
    CUDA the forward pass runs under bf16 autocast. Seeds: ``seed`` fixes the data order and augmentation
    of every epoch; seed the global generators (:func:`seed_everything`) before building the model to fix
    its initialisation too. With the same seed, data and thread count, CPU runs repeat bit for bit.
    Every epoch is one :func:`~nslab.runs.loop.train_one_epoch`.

    Args:
        model: maps (B, 3, H, W) float images to (B, K) logits; trainable parameters are those with
            ``requires_grad``.
        data: the dataset; ``recipe.subset`` is applied to its training split.
        recipe: the settings (:func:`recipe` gives the named ones).
        device: training device; default CUDA when available, else CPU.
        seed: data-order/augmentation seed.
        run_dir: when given: ``settings.json`` (recipe, seed, dataset, model summary), ``log.jsonl`` (one
            JSON object per finished epoch) and ``checkpoint.pt`` (model, optimiser, history, RNG states;
            rewritten atomically after every epoch). If the directory already holds a checkpoint of the
            same settings, training resumes after its last epoch (a finished run returns at once).
        progress: tqdm bar per epoch.
        on_epoch_end: called with each epoch's record after its checkpoint is written (an exception
            raised there stops the run, e.g. to interrupt it in tests).
        cuda_graphs: on CUDA, replay every full-size training step as one CUDA graph
            (:class:`~nslab.runs.loop.GraphedStep`: the same SGD, launched at once); no effect elsewhere.

    Returns:
        The :class:`History` of all epochs (including those of a resumed run).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (no checkpoint is written for that epoch).
        ValueError: ``run_dir`` holds a run with different settings.
    """
    dev = resolve_device(device)
    if recipe.subset is not None:
        data = data.subset(recipe.subset, recipe.subset_mode, seed)
    channels_last = channels_last_ok(dev, model)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov
    )
    settings = _settings(model, data, recipe, seed, dev)
    rd = None if run_dir is None else Path(run_dir)
    history = History() if rd is None else _open_run(rd, settings, model, opt, dev)
    train_batches, test_batches = _batches(data, recipe, dev, channels_last)
    graphs = StepGraphs() if cuda_graphs else None  # off CUDA it hands out no graph: the eager step
    # cuDNN autotuning (as in the release): picks the fastest conv kernels for these fixed shapes
    with cudnn_benchmark(dev):
        for epoch in range(len(history), recipe.epochs):
            rec = _epoch(model, opt, train_batches, test_batches, recipe, seed, epoch, progress, rd, graphs)
            history.records.append(rec)
            if rd is not None:
                _save_epoch(rd, model, opt, history, settings)
            if on_epoch_end is not None:
                on_epoch_end(rec)
    return history


def _epoch(model, opt, train_batches, test_batches, r: Recipe, seed, epoch, progress, rd, graphs=None) -> EpochRecord:
    """Train and evaluate one epoch of :func:`train`; returns its record."""
    t0 = time.perf_counter()
    steps = len(train_batches)
    try:
        stats = train_one_epoch(
            model,
            train_batches.iterate(_epoch_seed(seed, epoch)),
            opt,
            lambda i: learning_rate(r, epoch, i, steps),
            epoch=epoch + 1,
            label_smoothing=r.label_smoothing,
            progress=f"epoch {epoch + 1}/{r.epochs}" if progress else None,
            total=steps,
            graphs=graphs,
        )
    except NonFiniteLossError as e:
        last_good = rd / CHECKPOINT if rd is not None and (rd / CHECKPOINT).exists() else None
        raise NonFiniteLossError(e.epoch, e.step, e.loss, last_good) from None
    test_loss, test_acc = evaluate(model, test_batches)
    first_lr = learning_rate(r, epoch, 0, steps)
    rec = EpochRecord(epoch + 1, first_lr, stats.loss, stats.acc, test_loss, test_acc, time.perf_counter() - t0)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(
            f"epoch {rec.epoch}/{r.epochs}  lr {rec.lr:.4g}  train {rec.train_loss:.3f} / "
            f"{rec.train_acc:.2f}%  test {rec.test_loss:.3f} / {rec.test_acc:.2f}%  {rec.seconds:.1f}s",
            file=sys.stderr,  # stdout stays clean for the CLI's JSON
        )
    return rec
