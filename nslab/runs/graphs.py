"""The training step as one CUDA graph, and the arithmetic context of every step.

:class:`GraphedStep` captures one SGD step (forward, cross-entropy, backward, update) as a CUDA graph and
replays it; :class:`StepGraphs` keeps a run's one, re-capturing it when the step changes and refusing models
with hooks (:func:`capture_refusal`). :func:`autocast` (bf16 on CUDA) and :func:`full_fp32` (TF32 off) set
the arithmetic; :func:`sgd_update_` is ``torch.optim.SGD``'s update with a tensor learning rate. The loop
that uses them is :func:`nslab.runs.loop.train_one_epoch` (which re-exports these names).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GraphedStep", "StepGraphs", "autocast", "capture_refusal", "full_fp32", "sgd_update_"]


# --------------------------------------------------------------------------------------------------------
# the arithmetic of a step


def autocast(device: torch.device, cache: bool = True, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled`` (``cache``: autocast's weight cache); a no-op elsewhere.

    Only on CUDA: CPUs without native bf16 (AVX2) run it slower than fp32, so CPU steps stay fp32.
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


@contextlib.contextmanager
def full_fp32(device: torch.device) -> Iterator[None]:
    """Turn TF32 off for cuDNN convolutions and cuBLAS matmuls on CUDA for the duration (restored after).

    With autocast off this makes CUDA steps true fp32, as the released code ran (TF32 keeps 10 of fp32's 23
    mantissa bits). A no-op elsewhere.
    """
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


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


# hooks a CUDA graph cannot honour: it replays the kernels its capture launched, and no Python runs in a replay
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = tuple(f"_global{k}" for k in _MODULE_HOOKS)


def capture_refusal(model: nn.Module) -> str | None:
    """Why a training step of ``model`` must not be captured as a CUDA graph; ``None`` when it may be.

    A replay runs the kernels the capture launched and no Python: a forward or backward hook (the pruner's gate
    masks, Taylor-FO's score hooks) would run once, at capture, and be skipped silently by every replay.
    Checked: every module's forward (pre-)hooks and backward (pre-)hooks, torch's global module hooks, and
    gradient hooks on the parameters. Cheap and device-independent (it runs on a CPU model).
    """
    glob = torch.nn.modules.module
    for kind in _GLOBAL_HOOKS:
        if getattr(glob, kind, None):
            return f"global module hooks are registered ({kind.lstrip('_')}); a graph replay would skip them"
    for name, m in model.named_modules():
        for kind in _MODULE_HOOKS:
            if getattr(m, kind, None):
                where = name or type(m).__name__
                return f"module {where!r} has {kind.strip('_').replace('_', ' ')}; a graph replay would skip them"
    for name, p in model.named_parameters():
        if getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None):
            return f"parameter {name!r} has gradient hooks; a graph replay would skip them"
    return None


def _hooked(modules: list[nn.Module]) -> bool:
    """Fast form of :func:`capture_refusal` over a captured step's modules (checked before every replay)."""
    glob = torch.nn.modules.module
    return any(getattr(glob, k, None) for k in _GLOBAL_HOOKS) or any(
        getattr(m, k) for m in modules for k in _MODULE_HOOKS)


class GraphedStep:
    """One training step (forward under bf16 autocast, cross-entropy, backward, SGD update) as a CUDA graph.

    Eager PyTorch spends ~10-20 us of Python and kernel launches per op: a small network at batch 128 waits on
    the CPU. Replaying the captured step launches it all at once. The update is :func:`sgd_update_` over the
    optimiser's own momentum buffers (``optimizer.state[p]["momentum_buffer"]``), so checkpoints stay
    those of ``torch.optim.SGD``. Capture runs ``warmup`` real steps first (cuDNN picks its kernels, workspaces
    get allocated), then restores every parameter, buffer and momentum buffer, so the run's result does not
    depend on the capture.

    Graph safety: warm-up and capture run on this step's own CUDA stream (not the process-wide default capture
    stream), so graphs captured side by side (k runs in one process) get their own cuBLAS workspaces instead of
    sharing one. A model with hooks is refused (:func:`capture_refusal`: a replay would skip them), and
    :meth:`matches` fails once hooks appear, or once the optimiser's parameters change shape or identity.

    On a CPU device nothing is captured: the same step runs eagerly on the same static tensors (what the
    tests exercise).

    Args:
        model: on the batches' device, in training mode, without hooks.
        optimizer: a ``torch.optim.SGD`` over ``model``'s parameters (one param group, no ``maximize``).
        x, y: a batch of the shape every replay will have (its values are used for the warm-up).
        label_smoothing: of the cross-entropy.
        warmup: eager steps before capture.
        amp: bf16 autocast (on CUDA); ``False``: fp32 (with :func:`full_fp32` around the capture, true fp32).

    Raises:
        ValueError: not a plain SGD (see the checks), over other parameters than ``model``'s, or ``model``
            has hooks.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 label_smoothing: float = 0.0, warmup: int = 3, amp: bool = True):
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            raise ValueError(f"GraphedStep takes a torch.optim.SGD with one param group, got {optimizer!r}")
        g = optimizer.param_groups[0]
        if g.get("maximize") or g.get("differentiable") or g.get("dampening"):
            # dampening: SGD's first step copies the gradient into a fresh buffer, which a buffer
            # pre-filled with zeros (what a capture needs) only matches when dampening is 0
            raise ValueError("GraphedStep supports neither maximize, differentiable nor dampened SGD")
        why = capture_refusal(model)
        if why is not None:
            raise ValueError(f"GraphedStep refuses to capture: {why}")
        self.model, self.optimizer, self.label_smoothing, self.amp = model, optimizer, label_smoothing, amp
        self.hyper = {k: g[k] for k in ("momentum", "dampening", "nesterov", "weight_decay")}
        self.params = [p for p in g["params"] if p.requires_grad]
        mine = {id(p) for p in model.parameters()}
        if not all(id(p) in mine for p in self.params):  # e.g. a deep copy of the optimiser alone
            raise ValueError("GraphedStep: the optimiser's parameters are not the model's")
        self.shapes = [p.shape for p in self.params]
        self.modules = list(model.modules())
        self.bufs = []
        if self.hyper["momentum"]:
            for p in self.params:
                st = optimizer.state[p]
                if st.get("momentum_buffer") is None:
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.bufs.append(st["momentum_buffer"])
        self.x, self.y = x.detach().clone(), y.detach().clone()  # clone keeps the memory format
        self.lr = torch.zeros((), device=x.device, dtype=torch.float32)
        self.graph = self.stream = None
        self.loss = self.out = None
        if x.device.type == "cuda":
            self.stream = torch.cuda.Stream(x.device)
            self._capture(warmup)

    def same_run(self, model: nn.Module, optimizer: torch.optim.Optimizer, amp: bool = True) -> bool:
        """Whether ``model`` / ``optimizer`` are this graph's, unchanged (same parameters and shapes, no hooks)."""
        if model is not self.model or optimizer is not self.optimizer or amp != self.amp:
            return False
        now = [p for p in optimizer.param_groups[0]["params"] if p.requires_grad]
        return (len(now) == len(self.params) and all(a is b and a.shape == s for a, b, s in
                                                     zip(now, self.params, self.shapes))
                and not _hooked(self.modules))

    def matches(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, amp: bool = True) -> bool:
        """Whether a step of ``model`` / ``optimizer`` on ``x`` (at ``amp``) can replay this graph."""
        return (x.shape == self.x.shape and x.dtype == self.x.dtype and x.stride() == self.x.stride()
                and self.same_run(model, optimizer, amp))

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        for p in self.params:
            p.grad = None  # backward writes the gradients (inside the graph: into its own memory)
        with autocast(self.x.device, cache=False, enabled=self.amp):  # autocast's cache would outlive the capture
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
        side, dev = self.stream, self.x.device
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream(dev).wait_stream(side)
        for p in self.params:
            p.grad = None
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side):  # this step's own stream: its own cuBLAS workspace
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
    """The :class:`GraphedStep` of a run, captured at its first full batch, replayed by every pass, re-captured
    when the step changes.

    Hand one to :func:`train_one_epoch` (``graphs=``) for every epoch of a run. A smaller batch of the graph's
    run (an epoch's last one) takes the eager step. A larger batch (the first one captured was short), another
    model or optimiser (one swapped in by ``on_step``: the physically smaller network a prune step rebuilds has
    other parameter shapes), or another ``amp`` is captured anew, the old graph released first, instead of
    running eagerly from then on (:attr:`captures` counts them). A model with hooks is never captured
    (:func:`capture_refusal`; a replay would skip them): :attr:`refused` says why, and the step runs eagerly.
    Off CUDA (unless ``on_cpu``, for tests) it hands out no graph.
    """

    def __init__(self, on_cpu: bool = False):
        self.on_cpu = on_cpu
        self.step: GraphedStep | None = None
        self.captures = 0
        self.refused: str | None = None

    def get(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
            y: torch.Tensor, label_smoothing: float = 0.0, amp: bool = True) -> GraphedStep | None:
        """The graph for this step, capturing it when needed (see the class); ``None``: take the eager step."""
        if x.device.type != "cuda" and not self.on_cpu:
            return None
        old = self.step
        if old is not None and old.matches(model, optimizer, x, amp):
            return old
        self.refused = capture_refusal(model)
        if self.refused is not None:
            return None
        if (old is not None and old.same_run(model, optimizer, amp) and x.shape[1:] == old.x.shape[1:]
                and x.shape[0] <= old.x.shape[0]):
            return None  # an epoch's short last batch: eager, the graph stays for the full ones
        self.step = old = None  # release the old graph's memory before capturing the new one
        self.step = GraphedStep(model, optimizer, x, y, label_smoothing, amp=amp)
        self.captures += 1
        return self.step
