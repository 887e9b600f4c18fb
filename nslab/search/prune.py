"""Algorithm 1's run: pre-training, then pruning epochs, with checkpoint and resume.

:func:`prune` builds a fresh network, pre-trains it, then keeps training it with the
:class:`~nslab.search.pruner.Pruner` (the state object of Algorithm 1, in :mod:`nslab.search.pruner`) stepping in
through the loop's ``on_step`` hook (:func:`~nslab.runs.loop.train_one_epoch`) until the stop fraction, and
returns the pruner's :class:`~nslab.search.pruner.PruneResult`. With a ``run_dir`` it writes a checkpoint after
every pre-training epoch and every prune step, and a second call with the same directory resumes at the
last of them (on CPU the trajectory is bit for bit the uninterrupted one).

The names pruning is used with (:class:`Pruner`, :class:`PruneResult`, the criteria, the channel
helpers of :mod:`nslab.search.channels`, :class:`~nslab.config.PruneSettings`) are re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import PruneSettings, resolve
from ..data import DatasetSpec, DeviceBatches, ImageData, dataset_spec
from ..models import create_model, default_widths
from ..runs import checkpoint
from ..runs.loop import (
    NonFiniteLossError,
    Step,
    StepGraphs,
    channels_last_ok,
    cudnn_benchmark,
    evaluate,
    full_fp32,
    train_one_epoch,
)
from .channels import Dataset, apply_masks, channel_map, empty_model, find_gates, shrink_model, shrinkable_layers
from .criteria import CRITERIA, BNScale, L1Norm, Scores, TaylorFO, gate_gradients, make_criterion
from .pruner import Pruner, PruneResult

__all__ = [
    "CHECKPOINT",
    "CRITERIA",
    "BNScale",
    "L1Norm",
    "PruneResult",
    "PruneSettings",
    "Pruner",
    "TaylorFO",
    "apply_masks",
    "channel_map",
    "find_gates",
    "gate_gradients",
    "load_weights",
    "prune",
    "search_lr",
    "shrink_model",
    "shrinkable_layers",
    "weights_digest",
]

CHECKPOINT = "prune_checkpoint.pt"
_FORMAT = 1
_DEFAULT = PruneSettings()  # the release's numbers, not all its details (see PruneSettings)


# --------------------------------------------------------------------------------------------------------
# prune(): pre-training, pruning epochs, checkpoints

_NAMES = {TaylorFO: "taylor_fo", L1Norm: "l1", BNScale: "bn_scale"}


def _criterion(criterion, arch: str, dataset: Dataset, convcut: bool) -> tuple[Callable | None, str]:
    """The criterion object and its name for the run settings (``None``: the :class:`Pruner`'s default,
    Taylor-FO reading MobileNetV2's stem and head gates where the settings say)."""
    if criterion is None or criterion == "taylor_fo":
        return None, "taylor_fo"
    if isinstance(criterion, str):
        return make_criterion(criterion, arch, dataset, convcut), criterion
    return criterion, _NAMES.get(type(criterion)) or getattr(criterion, "__qualname__", type(criterion).__qualname__)


def search_lr(s: PruneSettings, epoch: int) -> float:
    """The learning rate of search epoch ``epoch`` (1-based, pre-training included; ``s.lr_schedule``).

    ``"nslab"``: epochs ``1..P`` (P = ``s.pretrain_epochs``) at ``pretrain_lr`` (a ``"linear"``
    ``pretrain_schedule`` starts each from there, see :func:`prune`), then epoch ``e > P`` at
    ``lr / lr_decay ** ((e - P - 1) // lr_decay_every)``. ``"release"``: epochs ``1..P-1`` at ``pretrain_lr``,
    epoch ``e >= P`` at ``lr / lr_decay ** ((e - P) // lr_decay_every)`` (the release's last pre-training epoch
    already runs at ``lr``, its first decay comes at epoch ``P + lr_decay_every``); with ``P = 0`` the release
    never switches to ``lr`` (its switch fires at epoch P, which does not occur), so the decays start from
    ``pretrain_lr``. Pruning runs from epoch ``P + 1`` either way.
    """
    p = s.pretrain_epochs
    if s.lr_schedule == "release":
        base = s.lr if p >= 1 else s.pretrain_lr
        return s.pretrain_lr if epoch < p else base / s.lr_decay ** ((epoch - p) // s.lr_decay_every)
    return s.pretrain_lr if epoch <= p else s.lr / s.lr_decay ** ((epoch - p - 1) // s.lr_decay_every)


def _sgd(model: nn.Module, s: PruneSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=s.pretrain_lr, momentum=s.momentum, weight_decay=s.weight_decay)


@dataclass
class _Run:
    """Where a :func:`prune` run stands, and its checkpoint file (``path`` None: none is written)."""

    path: Path | None
    settings: dict
    pretrained: int = 0  # pre-training epochs done
    epoch: int = 0  # 0-based index of the current pruning epoch
    position: int = 0  # batches of it done
    pretrain_seconds: float = 0.0
    pretrain_accuracy: float | None = None  # test accuracy (%) when pruning starts, measured once
    seconds: float = 0.0  # pruning wall time of earlier sessions
    clock: float | None = None  # perf_counter() when this session's pruning started

    def elapsed(self) -> float:
        """Pruning wall time so far, all sessions."""
        return self.seconds + (0.0 if self.clock is None else time.perf_counter() - self.clock)

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, pruner: Pruner, epoch: int, position: int) -> None:
        """Atomically write where the run stands (no-op without a path)."""
        if self.path is None:
            return
        where = {"pretrained": self.pretrained, "epoch": epoch, "position": position, "seconds": self.elapsed()}
        state = {"format": _FORMAT, "settings": self.settings, **where, "pretrain_seconds": self.pretrain_seconds,
                 "pretrain_accuracy": self.pretrain_accuracy,
                 "model": model.state_dict(), "optimizer": opt.state_dict(), "pruner": pruner.state_dict(),
                 "rng": checkpoint.rng_state()}
        checkpoint.save(self.path, state)

    def resume(self, model: nn.Module, pruner: Pruner, channels_last: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Load the checkpoint: returns the network at its physical widths and its optimiser."""
        ckpt = checkpoint.load(self.path, pruner.device)
        if ckpt.get("format") != _FORMAT:
            raise ValueError(f"{self.path} has checkpoint format {ckpt.get('format')!r}, expected {_FORMAT}")
        checkpoint.check_settings(ckpt["settings"], self.settings, self.path.parent)
        pruner.load_state_dict(ckpt["pruner"])
        if pruner.phys != pruner.start:
            ref = next(model.parameters())
            model = empty_model(
                pruner.arch, pruner.phys, pruner.dataset, pruner.convcut, ref.device, ref.dtype, channels_last
            )
        model.load_state_dict(ckpt["model"])
        model.train()
        opt = _sgd(model, pruner.settings)
        opt.load_state_dict(ckpt["optimizer"])
        checkpoint.set_rng_state(ckpt["rng"])
        self.pretrained, self.epoch, self.position = ckpt["pretrained"], ckpt["epoch"], ckpt["position"]
        self.pretrain_seconds, self.seconds = ckpt["pretrain_seconds"], ckpt["seconds"]
        self.pretrain_accuracy = ckpt.get("pretrain_accuracy")
        return model, opt


def _run_settings(arch, spec, convcut, start, seed, s: PruneSettings, data: ImageData, crit_name: str,
                  weights: str | None = None) -> dict:
    """What must match for a checkpoint to be resumed (flat, so a mismatch names the exact setting).
    ``weights``: the digest of the start weights, listed only when given (a run from a fresh init keeps its key)."""
    out = {"arch": arch, "dataset": spec.name, "convcut": bool(convcut), "start_widths": list(start),
           "seed": int(seed), "num_train": int(len(data.train_y)), "criterion": crit_name}
    if weights is not None:
        out["weights"] = weights
    out.update({f"prune.{k}": v for k, v in resolve(s).items()})
    return out


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A short sha256 of a state dict's tensors (names, dtypes, shapes and bytes): what keys a run started from
    given weights, so that a rerun with other weights never resumes this run's checkpoint."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = torch.as_tensor(state[k]).detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor] | str) -> str:
    """Load the start weights of a search into ``model`` (the fresh network at the start widths), in place.

    Args:
        model: the network.
        weights: a state dict of the same network at these widths (the user's trained weights), or ``"factory"``:
            keep the weights the network was built with (a traced network's factory's own, e.g. pretrained ones).

    Returns:
        :func:`weights_digest` of the weights the network now holds.

    Raises:
        ValueError: another string, or a state dict whose names or shapes do not fit (one line naming them).
    """
    own = model.state_dict()
    if isinstance(weights, str):
        if weights != "factory":
            raise ValueError(f"weights must be a state dict or 'factory', got {weights!r}")
        return weights_digest(own)
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a state dict (name -> tensor) or 'factory', got {type(weights).__name__}")
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [f"{k} {tuple(weights[k].shape)} (network: {tuple(own[k].shape)})" for k in own
              if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        raise ValueError(f"weights do not fit the start network: missing {missing[:3]}, unexpected {extra[:3]}, "
                         f"shapes {shapes[:3]} (give the state dict of this network at its start widths)")
    model.load_state_dict(weights)
    return weights_digest(weights)


def _pretrain(model, opt, batches: DeviceBatches, s: PruneSettings, seed: int, run: _Run, pruner, progress) -> None:
    from tqdm.auto import tqdm

    t0 = time.perf_counter() - run.pretrain_seconds
    n, total = len(batches), s.pretrain_epochs * len(batches)
    linear = s.pretrain_schedule == "linear"  # to zero at the end: a short run settles, as the cpu recipe's
    # No hooks before pruning starts (the pruner attaches them after): on CUDA every full-size step can replay
    # one graph (nslab.runs.graphs.GraphedStep); StepGraphs refuses a hooked model and takes the eager step.
    graphs = StepGraphs()  # off CUDA it hands out no graph: the eager step
    # cuDNN autotuning, as training has (nslab.runs.train): the shapes stay fixed for all of pre-training
    with cudnn_benchmark(batches.device):
        for epoch in tqdm(range(run.pretrained, s.pretrain_epochs), desc="pre-train", disable=not progress,
                          leave=False):
            lr = search_lr(s, epoch + 1)  # pretrain_lr, or lr for the release's last pre-training epoch
            train_one_epoch(model, batches.iterate(seed * 100_003 + epoch), opt,
                            lambda i, e=epoch, lr=lr: lr * ((1 - (e * n + i) / total) if linear else 1.0),
                            epoch=epoch + 1, graphs=graphs, amp=s.precision != "fp32")
            run.pretrained, run.pretrain_seconds = epoch + 1, time.perf_counter() - t0
            run.save(model, opt, pruner, 0, 0)


def _check_pretrained(model, data: ImageData, s: PruneSettings, run: _Run, opt, pruner, channels_last: bool) -> None:
    """Measure the test accuracy pruning starts from (once; it is checkpointed) and enforce the floor.

    Raises:
        ValueError: below ``s.min_pretrain_accuracy``: a power law fitted while pruning an untrained
            network describes the initialisation, not what the data needs.
    """
    if run.pretrain_accuracy is None:
        device = next(model.parameters()).device
        test = DeviceBatches(data.test_x, data.test_y, data.spec, device, 500, channels_last=channels_last)
        run.pretrain_accuracy = evaluate(model, test)[1]
        run.save(model, opt, pruner, 0, 0)
    floor = s.min_pretrain_accuracy
    if floor is not None and run.pretrain_accuracy < floor:
        raise ValueError(
            f"pre-training reached {run.pretrain_accuracy:.2f}% test accuracy after {s.pretrain_epochs} epoch(s), "
            f"below the search's floor of {floor:g}%; pruning was not started. Raise pretrain_epochs or adjust "
            f"pretrain_lr (or lower min_pretrain_accuracy)")


def _prune_epochs(model, opt, batches: DeviceBatches, s: PruneSettings, seed: int, run: _Run, pruner: Pruner,
                  progress: bool, on_row) -> nn.Module:
    """Train epoch after epoch at the pruning lr, the pruner stepping in, until it is done."""
    from tqdm.auto import tqdm

    total, n = sum(pruner.start), len(batches)
    bar = tqdm(total=total - pruner.target, initial=total - pruner.n_alive, desc="prune", unit="ch",
               disable=not progress, leave=False)

    def on_step(st: Step) -> None:
        rows = len(pruner.rows)
        if not pruner.on_step(st):
            return
        bar.update(total - pruner.n_alive - bar.n)
        if not pruner.done:  # a finished run's checkpoint is removed anyway
            at_end = st.index + 1 == n
            run.save(st.model, st.optimizer, pruner, run.epoch + at_end, 0 if at_end else st.index + 1)
        if on_row is not None and len(pruner.rows) > rows:
            on_row(*pruner.trajectory())

    # No StepGraphs here: the pruner's gate and Taylor-FO hooks make every step eager (a graph replay would skip
    # them; nslab.runs.graphs.capture_refusal), so the networks a prune step rebuilds are never captured.
    pruner.attach(model)
    run.clock = time.perf_counter()
    try:
        while not pruner.done:
            lr = search_lr(s, s.pretrain_epochs + run.epoch + 1)
            stats = train_one_epoch(
                model,
                batches.iterate(seed * 100_003 + s.pretrain_epochs + run.epoch, start=run.position),
                opt,
                lambda i, lr=lr: lr,
                on_step,
                start=run.position,
                epoch=s.pretrain_epochs + run.epoch + 1,
                amp=s.precision != "fp32",  # the Taylor-FO scores accumulate in these steps
            )
            model, opt = stats.model, stats.optimizer
            if not stats.stopped:
                run.epoch, run.position = run.epoch + 1, 0
    finally:
        bar.close()
    run.seconds, run.clock = run.elapsed(), None
    return model


def prune(
    arch: str,
    data: ImageData,
    settings: PruneSettings = _DEFAULT,
    widths: Sequence[int] | None = None,
    dataset: Dataset = "cifar10",
    convcut: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    criterion: Callable[[nn.Module], Scores] | str | None = None,
    progress: bool = True,
    on_row: Callable[[np.ndarray, np.ndarray], None] | None = None,
    run_dir: str | Path | None = None,
    weights: Mapping[str, torch.Tensor] | str | None = None,
) -> PruneResult:
    """Algorithm 1: train a fresh network while pruning it, recording the width trajectory.

    A fresh network (``widths``, default widths when ``None``; initialised from ``seed``) is trained
    ``pretrain_epochs`` epochs at ``pretrain_lr``; then training continues at ``lr`` (divided by
    ``lr_decay`` every ``lr_decay_every`` epochs; :func:`search_lr` gives each epoch's lr) and every
    ``batches_per_step`` minibatches the ``channels_per_step`` lowest-scored channels (ranked globally) are
    removed (:class:`Pruner`). Once every layer has lost a channel, each step records a row; pruning stops at
    ``stop_fraction`` of the channels. Epoch e (0-based, pre-training included) draws its batches from
    ``seed * 100003 + e``.

    Args:
        arch: architecture name.
        data: the dataset (its training split is used, batches built on ``device``).
        settings: the schedule.
        widths: (L,) start widths.
        dataset, convcut: architecture variant (class count must match ``data``).
        device: training device.
        seed: initialisation, batch order and augmentation.
        criterion: importance callable ``model -> [(w_i,) scores]`` (higher = keep), or a name in
            :data:`~nslab.search.criteria.CRITERIA`; default :class:`TaylorFO`. Objects with ``attach``/``reset``
            are attached to each rebuilt network and reset after each prune step.
        progress: show tqdm bars.
        on_row: called after every recorded row (and after its checkpoint) with the trajectory so far,
            ``(rows, L)`` widths and ``(rows,)`` parameter counts (int64 arrays): a live plot redraws from it.
        run_dir: when given, ``prune_checkpoint.pt`` there (model at its physical widths, optimiser, pruner
            state, epoch and batch position, RNG states) is rewritten atomically after every pre-training
            epoch and every prune step; a call with the same directory and settings resumes from it (on
            CPU, with the same thread count, the trajectory equals the uninterrupted one bit for bit). It
            is removed when the run finishes (and ``run_dir`` too if that leaves it empty): the caller keeps
            the trajectory.
        weights: start from a trained state dict of the network at ``widths``, or ``"factory"`` (the builder's
            own weights, e.g. a traced factory's pretrained ones; :func:`load_weights`), with ``pretrain_epochs=0``
            (or a few); their digest keys the checkpoint, so other weights never resume this run.

    Returns:
        A :class:`PruneResult`.

    Raises:
        ValueError: the class count or image size of ``data`` does not fit ``dataset``, ``run_dir`` holds
            a checkpoint of other settings (the message names them), or pre-training stayed below
            ``settings.min_pretrain_accuracy`` (nothing is pruned).
        NonFiniteLossError: the training loss became NaN/inf.
    """
    s, device = settings, torch.device(device)
    start = [int(w) for w in (default_widths(arch) if widths is None else widths)]
    spec = _checked_spec(dataset, data)
    crit, crit_name = _criterion(criterion, arch, dataset, convcut)
    model, channels_last, batches = _fresh(arch, start, dataset, convcut, device, seed, s, data)
    opt, pruner = _sgd(model, s), Pruner(arch, start, s, dataset, convcut, crit, device)
    path = None if run_dir is None else Path(run_dir) / CHECKPOINT
    run = _Run(path, _run_settings(arch, spec, convcut, start, seed, s, data, crit_name,
                                   None if weights is None else load_weights(model, weights)))
    if path is not None and path.exists():
        model, opt = run.resume(model, pruner, channels_last)
    try:
        with full_fp32(device) if s.precision == "fp32" else contextlib.nullcontext():
            _pretrain(model, opt, batches, s, seed, run, pruner, progress)
            _check_pretrained(model, data, s, run, opt, pruner, channels_last)
            model = _prune_epochs(model, opt, batches, s, seed, run, pruner, progress, on_row)
    except NonFiniteLossError as e:
        last_good = path if path is not None and path.exists() else None
        raise NonFiniteLossError(e.epoch, e.step, e.loss, last_good) from None
    result = pruner.finish(model, run.seconds, run.pretrain_seconds, run.pretrain_accuracy)
    _finished(path)
    return result


def _finished(path: Path | None) -> None:
    """A finished run's checkpoint goes (the caller keeps the trajectory), and its run_dir if that empties it."""
    if path is not None:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()


def _checked_spec(dataset: Dataset | DatasetSpec, data: ImageData) -> DatasetSpec:
    """The spec of the network's dataset; raises ValueError unless ``data`` has its class count and image size."""
    spec = dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)
    if spec.num_classes != data.spec.num_classes or spec.image_size != data.spec.image_size:
        raise ValueError(
            f"the network is built for {spec.name} ({spec.num_classes} classes, {spec.image_size} px) "
            f"but the data has {data.spec.num_classes} classes, {data.spec.image_size} px"
        )
    return spec


def _fresh(arch: str, start: list[int], dataset, convcut: bool, device: torch.device, seed: int, s: PruneSettings,
           data: ImageData) -> tuple[nn.Module, bool, DeviceBatches]:
    """The fresh network (initialised from ``seed``), whether it runs channels-last, and its training batches."""
    torch.manual_seed(seed)
    model = create_model(arch, start, dataset, convcut).to(device)
    channels_last = s.channels_last and channels_last_ok(device, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = DeviceBatches(data.train_x, data.train_y, data.spec, device, s.batch_size, train=True, augment=s.augment,
                            drop_last=s.drop_last and len(data.train_y) >= s.batch_size, channels_last=channels_last)
    return model, channels_last, batches
