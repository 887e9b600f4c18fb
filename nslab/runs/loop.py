"""The one training loop of every stage (training, pruning's pre-training, pruning itself) and its machinery.

:func:`train_one_epoch` is one pass over ``(x, y)`` batches: SGD steps with cross-entropy, a per-step
learning rate and an ``on_step`` hook that may swap the model and optimiser or stop the pass (see
:class:`Step`); it returns the pass's :class:`EpochStats` and raises :class:`NonFiniteLossError` on a
NaN/inf loss. :func:`evaluate` gives test loss and accuracy. Around them: the device and seed helpers
(:func:`resolve_device`, :func:`seed_everything`), the memory-format rule (:func:`channels_last_ok`)
and the per-step context managers (bf16 autocast on CUDA, cuDNN autotuning), and the training step as one
CUDA graph (:class:`GraphedStep`, kept per run by :class:`StepGraphs`). The full, checkpointed run is
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

__all__ = [
    "EpochStats",
    "GraphedStep",
    "NonFiniteLossError",
    "Step",
    "StepGraphs",
    "channels_last_ok",
    "cudnn_benchmark",
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


def _autocast(device: torch.device, cache: bool = True) -> contextlib.AbstractContextManager:
    # bf16 autocast only on CUDA: CPUs without native bf16 (AVX2) run it slower than fp32.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------------
# the training step as one CUDA graph


def sgd_update_(
    params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor], lr: torch.Tensor, *,
    momentum: float, dampening: float, nesterov: bool, weight_decay: float,
) -> None:
    """``torch.optim.SGD``'s update (its foreach path) with the learning rate as a 0-dim tensor, in place.

    A tensor lr can change between replays of a CUDA graph (``torch.optim.SGD`` turns one into a Python
    number, which a graph would freeze). ``bufs`` are the momentum buffers (zeros before the first step:
    ``m * 0 + g`` is SGD's first buffer ``g``). Equal to ``SGD.step()`` up to rounding of ``p - lr * d``.
    """
    d = torch._foreach_add(grads, params, alpha=weight_decay) if weight_decay else list(grads)
    if momentum:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, d, alpha=1 - dampening)
        if nesterov:
            d = torch._foreach_add(d, bufs, alpha=momentum)
        else:
            d = bufs
    torch._foreach_sub_(params, torch._foreach_mul(d, lr))


class GraphedStep:
    """One training step (forward under bf16 autocast, cross-entropy, backward, SGD update) as a CUDA graph.

    Eager PyTorch spends ~10-20 us of Python and kernel launches per op: a small network at batch 128 waits on
    the CPU. Replaying the captured step launches it all at once. The update is :func:`sgd_update_` over the
    optimiser's own momentum buffers (``optimizer.state[p]["momentum_buffer"]``), so checkpoints stay
    those of ``torch.optim.SGD``. Capture runs ``warmup`` real steps first (on a side stream: cuDNN picks its
    kernels, workspaces get allocated), then restores every parameter, buffer and momentum buffer, so the
    run's result does not depend on the capture.

    On a CPU device nothing is captured: the same step runs eagerly on the same static tensors (what the
    tests exercise).

    Args:
        model: on the batches' device, in training mode; no hooks that change between steps.
        optimizer: a ``torch.optim.SGD`` over ``model``'s parameters (one param group, no ``maximize``).
        x, y: a batch of the shape every replay will have (its values are used for the warm-up).
        label_smoothing: of the cross-entropy.
        warmup: eager steps before capture.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 label_smoothing: float = 0.0, warmup: int = 3):
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            raise ValueError(f"GraphedStep takes a torch.optim.SGD with one param group, got {optimizer!r}")
        g = optimizer.param_groups[0]
        if g.get("maximize") or g.get("differentiable") or g.get("dampening"):
            # dampening: SGD's first step copies the gradient into a fresh buffer, which a buffer
            # pre-filled with zeros (what a capture needs) only matches when dampening is 0
            raise ValueError("GraphedStep supports neither maximize, differentiable nor dampened SGD")
        self.model, self.optimizer, self.label_smoothing = model, optimizer, label_smoothing
        self.hyper = {k: g[k] for k in ("momentum", "dampening", "nesterov", "weight_decay")}
        self.params = [p for p in g["params"] if p.requires_grad]
        self.bufs = []
        if self.hyper["momentum"]:
            for p in self.params:
                st = optimizer.state[p]
                if st.get("momentum_buffer") is None:
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.bufs.append(st["momentum_buffer"])
        self.x, self.y = x.detach().clone(), y.detach().clone()  # clone keeps the memory format
        self.lr = torch.zeros((), device=x.device, dtype=torch.float32)
        self.graph = None
        self.loss = self.out = None
        if x.device.type == "cuda":
            self._capture(warmup)

    def matches(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> bool:
        """Whether a step of ``model`` / ``optimizer`` on ``x`` can replay this graph."""
        return (model is self.model and optimizer is self.optimizer and x.shape == self.x.shape
                and x.dtype == self.x.dtype and x.stride() == self.x.stride())

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        for p in self.params:
            p.grad = None  # backward writes the gradients (inside the graph: into its own memory)
        with _autocast(self.x.device, cache=False):  # autocast's weight cache would outlive the capture
            out = self.model(self.x)
        loss = F.cross_entropy(out.float(), self.y, label_smoothing=self.label_smoothing)
        loss.backward()
        with torch.no_grad():
            sgd_update_(self.params, [p.grad for p in self.params], self.bufs, self.lr, **self.hyper)
        return loss.detach(), out.detach()

    def _capture(self, warmup: int) -> None:
        state = self.params + self.bufs + list(self.model.buffers())
        saved = [t.detach().clone() for t in state]
        self.lr.fill_(0.0)
        side = torch.cuda.Stream(self.x.device)
        side.wait_stream(torch.cuda.current_stream(self.x.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream(self.x.device).wait_stream(side)
        for p in self.params:
            p.grad = None
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.out = self._step()
        with torch.no_grad():  # the warm-up steps trained: undo them
            for t, v in zip(state, saved):
                t.copy_(v)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on ``(x, y)`` at learning rate ``lr``: ``(loss, logits)``, both overwritten by the next call."""
        self.x.copy_(x)
        self.y.copy_(y)
        self.lr.fill_(lr)
        if self.graph is None:
            self.loss, self.out = self._step()
        else:
            self.graph.replay()
        return self.loss, self.out


class StepGraphs:
    """The :class:`GraphedStep` of a run, captured at its first full batch and replayed by every pass.

    Hand one to :func:`train_one_epoch` (``graphs=``) for every epoch of a run. A batch of another shape
    (an epoch's last, smaller one), another model or optimiser (one swapped in by ``on_step``), or a
    non-CUDA device (unless ``on_cpu``, for tests) takes the eager step.
    """

    def __init__(self, on_cpu: bool = False):
        self.on_cpu = on_cpu
        self.step: GraphedStep | None = None

    def get(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
            y: torch.Tensor, label_smoothing: float = 0.0) -> GraphedStep | None:
        """The graph for this step, capturing it on first use; ``None``: take the eager step."""
        if x.device.type != "cuda" and not self.on_cpu:
            return None
        if self.step is None:
            self.step = GraphedStep(model, optimizer, x, y, label_smoothing)
        return self.step if self.step.matches(model, optimizer, x) else None


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
) -> EpochStats:
    """Train ``model`` over one pass of ``batches`` (SGD steps with cross-entropy), in training mode.

    Per batch: set every param group's lr to ``lr_schedule(index)``, forward (bf16 autocast on CUDA
    only), cross-entropy, a NaN/inf check (every step on the CPU, every 50 steps and at the end on
    other devices, where it costs a synchronisation), backward, optimizer step, then ``on_step(step)``
    (see :class:`Step`: it may swap in a new model and optimiser, or stop the pass).

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
            graph = graphs.get(st.model, st.optimizer, x, y, label_smoothing) if graphs is not None else None
            if graph is not None:  # a graphed step checks its loss after the update (a NaN stops the run anyway)
                loss, out = graph(x, y, lr)
                loss = loss.clone()  # the next replay overwrites it
            else:
                with _autocast(x.device):
                    out = st.model(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
            losses.append(loss.detach())
            # .item() forces a device sync; on CPU it is free, so check every step, elsewhere every 50
            if x.device.type == "cpu" or len(losses) - checked >= 50:
                _check_finite(losses, checked, start, epoch)
                checked = len(losses)
            if graph is None:
                # beside a graph the gradients live in its memory: zero them there rather than drop them
                st.optimizer.zero_grad(set_to_none=graphs is None or graphs.step is None)
                loss.backward()
                st.optimizer.step()
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
    with torch.inference_mode(), _autocast(dev):
        for x, y in batches.iterate():
            out = model(x).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    n = batches.num_images
    return loss_sum.item() / n, 100.0 * correct.item() / n

