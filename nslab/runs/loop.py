"""The one training loop of every stage (training, pruning's pre-training, pruning itself) and its machinery.

:func:`train_one_epoch` is one pass over ``(x, y)`` batches: SGD steps with cross-entropy, a per-step
learning rate and an ``on_step`` hook that may swap the model and optimiser or stop the pass (see
:class:`Step`); it returns the pass's :class:`EpochStats` and raises :class:`NonFiniteLossError` on a
NaN/inf loss. :func:`evaluate` gives test loss and accuracy. Around them: the device and seed helpers
(:func:`resolve_device`, :func:`seed_everything`), the memory-format rule (:func:`channels_last_ok`)
and the per-step context managers (bf16 autocast on CUDA, fp32 without TF32, cuDNN autotuning), and the
training step as one CUDA graph (:class:`GraphedStep`, kept per run by :class:`StepGraphs`; both in
:mod:`nslab.runs.graphs`, re-exported here). The full, checkpointed run is
:func:`nslab.runs.train.train`; the pruning run is :func:`nslab.search.prune.prune`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import DeviceBatches
from ..device import resolve_device
from .graphs import GraphedStep, StepGraphs, autocast, capture_refusal, full_fp32, sgd_update_

__all__ = [
    "EpochStats",
    "GraphedStep",
    "NonFiniteLossError",
    "Step",
    "StepGraphs",
    "autocast",
    "capture_refusal",
    "channels_last_ok",
    "cudnn_benchmark",
    "full_fp32",
    "sgd_update_",
    "evaluate",
    "resolve_device",
    "seed_everything",
    "train_one_epoch",
]


# --------------------------------------------------------------------------------------------------------
# the loop's error


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stopped before writing a checkpoint for it.

    Attributes:
        epoch: 1-based epoch of the bad step.
        step: 0-based step within that epoch.
        loss: the non-finite loss value.
        checkpoint: the last good checkpoint (unchanged), or None without a run directory / before epoch 1.
    """

    def __init__(self, epoch: int, step: int, loss: float, checkpoint: Path | None):
        self.epoch, self.step, self.loss, self.checkpoint = epoch, step, loss, checkpoint
        where = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written"
        super().__init__(
            f"training loss is {loss} at epoch {epoch}, step {step}; stopped ({where}). "
            "Lower the learning rate or check the data."
        )


# --------------------------------------------------------------------------------------------------------
# devices and seeds


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators, e.g. before building a model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def channels_last_ok(device: torch.device, model: nn.Module) -> bool:
    """Whether ``model`` should run in channels-last memory format on ``device`` (see the comment)."""
    # CUDA: channels_last feeds the tensor cores without layout transposes. CPU: oneDNN's convolutions
    # run natively in NHWC as well; measured on this project's 2-core AVX2 machine (VGG11 at ratio 0.25,
    # training steps of batch 128/256/512) it is 1.2-1.8x faster than NCHW, which makes oneDNN reorder
    # every conv's input and output. But with torch 2.14 on CPU, channels-last backward of grouped
    # (depthwise) convs aborts ("double free or corruption") or hangs, and the 1x1 weight-gradient kernel
    # (jit_avx2_1x1_convolution_bwd_weights) hung forever, at random, in a narrow ResNet18's projection
    # shortcut. So on CPU only networks of plain k x k convolutions (VGG11) go channels-last.
    if device.type == "cuda":
        return True
    return device.type == "cpu" and not any(
        isinstance(m, nn.Conv2d) and (m.groups > 1 or m.kernel_size == (1, 1)) for m in model.modules()
    )


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """Turn on ``torch.backends.cudnn.benchmark`` on CUDA for the duration (restored afterwards)."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = old or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


# --------------------------------------------------------------------------------------------------------
# one pass: the training loop of every stage (training, pre-training and pruning)


@dataclass
class Step:
    """Where :func:`train_one_epoch` stands after an optimizer step; handed to its ``on_step``.

    One object per pass, updated after every step. ``on_step`` steers the pass by assigning to it:
    a new ``model`` and ``optimizer`` (e.g. a physically smaller network and an optimiser over *its*
    parameters) are used from the next step on; ``stop = True`` ends the pass after this step.

    Attributes:
        epoch: the 1-based epoch number the loop was given.
        index: 0-based index of the batch just trained on, within the pass (counting from ``start``).
        loss: its loss, a detached 0-dim float32 tensor on the device (``.item()`` synchronises).
        model: the network the next step trains.
        optimizer: the optimiser of the next step (its learning rate is set per step by the loop).
        stop: set True to end the pass after this step.
    """

    epoch: int
    index: int
    loss: torch.Tensor
    model: nn.Module
    optimizer: torch.optim.Optimizer
    stop: bool = False


@dataclass
class EpochStats:
    """What one :func:`train_one_epoch` call did.

    Attributes:
        steps: optimizer steps taken.
        images: training images seen.
        loss: mean training loss per image (NaN without steps).
        acc: training accuracy, percent (NaN without steps).
        stopped: ``on_step`` ended the pass early.
        model: the network trained last (``on_step`` may have replaced the one passed in).
        optimizer: its optimiser.
    """

    steps: int
    images: int
    loss: float
    acc: float
    stopped: bool
    model: nn.Module
    optimizer: torch.optim.Optimizer


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    lr_schedule: Callable[[int], float],
    on_step: Callable[[Step], None] | None = None,
    *,
    start: int = 0,
    epoch: int = 1,
    label_smoothing: float = 0.0,
    progress: str | None = None,
    total: int | None = None,
    graphs: StepGraphs | None = None,
    amp: bool = True,
) -> EpochStats:
    """Train ``model`` over one pass of ``batches`` (SGD steps with cross-entropy), in training mode.

    Per batch: set every param group's lr to ``lr_schedule(index)``, forward (bf16 autocast on CUDA
    only, unless ``amp`` is False), cross-entropy, a NaN/inf check (every step on the CPU, every 50 steps and
    at the end on other devices, where it costs a synchronisation), backward, optimizer step, then
    ``on_step(step)`` (see :class:`Step`: it may swap in a new model and optimiser, or stop the pass).

    Args:
        model: on the batches' device.
        batches: ``(x, y)`` pairs, e.g. ``DeviceBatches.iterate(seed, start=k)``.
        optimizer: over ``model``'s trainable parameters.
        lr_schedule: learning rate of the batch of index i (0-based within the pass, from ``start``).
        on_step: called after every optimizer step with the pass's :class:`Step`.
        start: index of the first batch of ``batches`` within its pass (a resumed pass's offset).
        epoch: 1-based epoch number, for :attr:`Step.epoch` and error messages only.
        label_smoothing: of the cross-entropy.
        progress: a tqdm bar with this description (``None``: no bar); ``total``: its length.
        graphs: replay the step as a CUDA graph where it applies (:class:`StepGraphs`; keep one per run).
        amp: bf16 autocast on CUDA; ``False``: fp32 (wrap the pass in :func:`full_fp32` for TF32 off too).

    Returns:
        The pass's :class:`EpochStats`, with the model and optimiser it ended with.

    Raises:
        NonFiniteLossError: a loss was NaN or infinite (``checkpoint`` is None: the caller knows it).
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=progress, leave=False, unit="step", disable=progress is None)
    st = Step(epoch, start - 1, torch.zeros(()), model, optimizer)
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    correct, checked = 0, 0
    model.train()
    try:
        for i, (x, y) in enumerate(batches, start):
            lr = lr_schedule(i)
            for g in st.optimizer.param_groups:
                g["lr"] = lr
            graph = None if graphs is None else graphs.get(st.model, st.optimizer, x, y, label_smoothing, amp)
            loss, out = _forward(st.model, graph, x, y, lr, label_smoothing, amp)
            losses.append(loss.detach())
            # .item() forces a device sync; on CPU it is free, so check every step, elsewhere every 50
            if x.device.type == "cpu" or len(losses) - checked >= 50:
                _check_finite(losses, checked, start, epoch)
                checked = len(losses)
            if graph is None:
                _eager_update(st.optimizer, loss, graphs)
            correct = correct + (out.detach().argmax(1) == y).sum()
            sizes.append(y.shape[0])
            bar.update(1)
            if progress is not None and i % 20 == 0:
                bar.set_postfix(loss=f"{losses[-1].item():.3f}", lr=f"{lr:.4f}")
            if on_step is not None:
                st.index, st.loss = i, losses[-1]
                on_step(st)
                if st.model is not model:  # swapped in: it trains from the next step on
                    model = st.model.train()
                if st.stop:
                    break
        _check_finite(losses, checked, start, epoch)
    finally:
        bar.close()
    return _epoch_stats(losses, sizes, correct, st)


def _eager_update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, graphs: StepGraphs | None) -> None:
    """Backward and optimizer step of an eager step."""
    # beside this optimiser's graph the gradients live in the graph's memory: zero them there, not drop them
    optimizer.zero_grad(set_to_none=graphs is None or graphs.step is None or graphs.step.optimizer is not optimizer)
    loss.backward()
    optimizer.step()


def _forward(model: nn.Module, graph: GraphedStep | None, x: torch.Tensor, y: torch.Tensor, lr: float,
             label_smoothing: float, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, logits)`` of one step: a whole graphed step (which checks its loss after the update: a NaN
    stops the run anyway), or the eager forward and loss, whose backward and update follow the NaN check."""
    if graph is not None:
        loss, out = graph(x, y, lr)
        return loss.clone(), out  # the next replay overwrites the loss
    with autocast(x.device, enabled=amp):
        out = model(x)
    return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing), out



def _check_finite(losses: list[torch.Tensor], checked: int, start: int, epoch: int) -> None:
    if len(losses) <= checked:
        return
    part = torch.stack(losses[checked:])
    bad = ~torch.isfinite(part)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise NonFiniteLossError(epoch, start + checked + i, float(part[i]), None)


def _epoch_stats(losses: list[torch.Tensor], sizes: list[int], correct, st: Step) -> EpochStats:
    seen = sum(sizes)
    if not losses:
        return EpochStats(0, 0, float("nan"), float("nan"), st.stop, st.model, st.optimizer)
    loss = torch.stack(losses)
    # batch-size weighted mean: the last batch may be smaller
    w = torch.tensor(sizes, dtype=loss.dtype, device=loss.device)
    mean = float((loss * w).sum() / seen)
    return EpochStats(len(losses), seen, mean, 100.0 * int(correct) / seen, st.stop, st.model, st.optimizer)


# --------------------------------------------------------------------------------------------------------
# evaluation


def evaluate(model: nn.Module, batches: DeviceBatches) -> tuple[float, float]:
    """Mean cross-entropy per image and accuracy (percent) of ``model`` over ``batches``, in eval mode.

    ``model`` must be on ``batches.device``; its train/eval mode is restored afterwards.
    """
    dev = batches.device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros((), device=dev, dtype=torch.int64)
    with torch.inference_mode(), autocast(dev):
        for x, y in batches.iterate():
            out = model(x).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    n = batches.num_images
    return loss_sum.item() / n, 100.0 * correct.item() / n

