"""Training throughput on one GPU: one VGG11 r=0.25 run at the paper's batch size, and k runs sharing the GPU.

Every run is nslab's own training step (``nslab.runs.loop``: uint8 images resident on the device, crop/flip and
normalisation there, channels-last, bf16 autocast, and the step replayed as a CUDA graph) on random
CIFAR-shaped images, with the paper's SGD (lr 0.1, momentum 0.5, weight decay 5e-4). Measured:

- ``single``: images/s of one run, with CUDA graphs and eager (the same step launched op by op);
- ``processes``: aggregate images/s of k runs in k processes started together (what a ``gpus=1/k``
  executor does);
- ``streams``: aggregate images/s of k runs in one process, each on its own CUDA stream, stepped in turn.

Each measurement trains for ``--seconds`` after a warm-up (graph capture, cuDNN autotuning), synchronises,
and counts the images. Prints progress on stderr and one JSON object on stdout (with the device name).
The default mode takes about 2-3 minutes on an H200; ``--device cpu --smoke`` is a few-second dry run.

    python bench/gpu_throughput.py                   # CUDA: k = 1, 2, 4, 8
    python bench/gpu_throughput.py --device cpu --smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue as queue_mod
import sys
import time

import torch

GOAL = 100_000  # images/s aggregate on an H100/H200-class GPU (the goal)
READY_TIMEOUT = 300.0  # s a run may take to start (CUDA context, capture) before the others give up on it


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_parts(device: torch.device, arch: str, ratio: float, batch: int, images: int, seed: int,
              drop_last: bool = True):
    """A model, its SGD and a device-resident batch pipeline of ``images`` random CIFAR-10-shaped images
    (also ``bench/device_check.py``'s, which keeps the short last batch: ``drop_last=False``)."""
    from nslab import create_model, uniform_widths
    from nslab.data import DeviceBatches, dataset_spec
    from nslab.runs.loop import channels_last_ok

    spec = dataset_spec("cifar10")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randint(0, 256, (images, 3, spec.image_size, spec.image_size), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, spec.num_classes, (images,), generator=gen)
    torch.manual_seed(seed)
    model = create_model(arch, uniform_widths(arch, ratio), spec).to(device)
    cl = channels_last_ok(device, model)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5, weight_decay=5e-4)
    batches = DeviceBatches(x, y, spec, device, batch, train=True, drop_last=drop_last, channels_last=cl)
    return model, opt, batches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_run(device: str, arch: str, ratio: float, batch: int, images: int, seconds: float, graphs: bool,
                seed: int = 0, barrier=None, warmup_steps: int | None = None) -> dict:
    """Images/s of one run of ``nslab.runs.loop.train_one_epoch`` over ``seconds`` (after ``warmup_steps`` steps:
    default 20 on CUDA, 2 on the CPU).

    With a ``barrier`` (a ``multiprocessing.Barrier``) the timed window starts when every run is ready.
    """
    from nslab.runs.loop import StepGraphs, cudnn_benchmark, train_one_epoch

    dev = torch.device(device)
    if dev.type == "cpu" and barrier is not None:
        torch.set_num_threads(1)
    model, opt, batches = run_parts(dev, arch, ratio, batch, images, seed)
    sg = StepGraphs() if graphs else None
    if warmup_steps is None:
        warmup_steps = 20 if dev.type == "cuda" else 2
    clock = {"t0": None, "steps": 0, "limit": warmup_steps, "timed": False}

    def on_step(st) -> None:
        clock["steps"] += 1
        if not clock["timed"]:
            st.stop = clock["steps"] >= clock["limit"]
        elif time.perf_counter() - clock["t0"] >= seconds:
            st.stop = True

    def run(epoch_seed: int) -> bool:
        stats = train_one_epoch(model, batches.iterate(epoch_seed), opt, lambda i: 0.1, on_step, graphs=sg)
        return stats.stopped

    with cudnn_benchmark(dev):
        while not run(10**6):  # warm-up: capture, autotuning, allocator
            pass
        _sync(dev)
        if barrier is not None:
            barrier.wait()
        clock.update(t0=time.perf_counter(), steps=0, timed=True)
        e = 0
        while not run(e):
            e += 1
        _sync(dev)
    elapsed = time.perf_counter() - clock["t0"]
    n = clock["steps"] * batch
    return {"images": n, "seconds": elapsed, "images_per_s": n / elapsed}


def _worker(args: tuple, barrier, queue) -> None:
    try:
        queue.put(measure_run(*args, barrier=barrier))
    except BaseException as e:  # reported by the parent; the others stop waiting at the barrier
        queue.put({"error": f"{type(e).__name__}: {e}"})
        barrier.abort()


def measure_processes(k: int, device: str, arch: str, ratio: float, batch: int, images: int, seconds: float,
                      graphs: bool = True, ready_timeout: float = READY_TIMEOUT) -> float:
    """Aggregate images/s of ``k`` runs in ``k`` processes whose timed windows start together.

    One crash cannot hang it: the barrier times out after ``ready_timeout`` s (a run that never gets ready
    breaks it for all), the workers are daemons, and a worker that neither reports nor exits within
    ``ready_timeout + 4 * seconds`` is terminated and counted as failed.

    Raises:
        RuntimeError: a run failed or did not report in time (the message says which and why).
    """
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k, timeout=ready_timeout), ctx.Queue()
    procs = [ctx.Process(target=_worker, daemon=True, args=((device, arch, ratio, batch, images, seconds, graphs, i),
                                                            barrier, queue)) for i in range(k)]
    for p in procs:
        p.start()
    results, deadline = [], time.monotonic() + ready_timeout + 4 * seconds + 30
    try:
        while len(results) < k:
            try:
                results.append(queue.get(timeout=max(0.1, min(5.0, deadline - time.monotonic()))))
            except queue_mod.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if time.monotonic() > deadline or len(dead) > 0 and len(results) + len(dead) >= k:
                    results += [{"error": f"no result within {ready_timeout + 4 * seconds + 30:.0f} s or the "
                                 f"worker died (exit codes {[p.exitcode for p in procs]})"}] * (k - len(results))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} of {k} runs failed: {errors[0]}")
    return sum(r["images_per_s"] for r in results)  # concurrent windows: the rates add up


def measure_streams(k: int, device: str, arch: str, ratio: float, batch: int, images: int, seconds: float,
                    warmup_steps: int | None = None) -> float:
    """Aggregate images/s of ``k`` runs in this process, each stepping on its own CUDA stream, in turn.

    Each run is a :class:`~nslab.runs.loop.GraphedStep` fed by its own :class:`~nslab.data.DeviceBatches` (on a
    CPU device the steps run one after the other: a dry run of the code path). Every GraphedStep captures on
    a stream of its own, so the k graphs do not share one cuBLAS workspace; each replays on its run's stream.
    """
    from nslab.runs.loop import GraphedStep, cudnn_benchmark

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if warmup_steps is None:
        warmup_steps = 20 if cuda else 1
    runs = []
    with cudnn_benchmark(dev):
        for i in range(k):
            stream = torch.cuda.Stream(dev) if cuda else None
            if cuda:
                stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(stream):  # None (off CUDA): no-op
                model, opt, batches = run_parts(dev, arch, ratio, batch, images, i)
                model.train()
                it = _forever(batches)
                x, y = next(it)
                step = GraphedStep(model, opt, x, y)
            runs.append((stream, it, step))

        def round_() -> None:
            for stream, it, step in runs:
                with torch.cuda.stream(stream):  # None (off CUDA): no-op
                    x, y = next(it)
                    step(x, y, 0.1)

        for _ in range(warmup_steps):
            round_()
        _sync(dev)
        t0, rounds = time.perf_counter(), 0
        while True:
            round_()
            rounds += 1
            if cuda and rounds % 10 == 0:  # bound the queue so the clock measures the GPU, not the launches
                runs[-1][0].synchronize()
            if time.perf_counter() - t0 >= seconds:
                break
        _sync(dev)
    return rounds * k * batch / (time.perf_counter() - t0)


def _forever(batches):
    e = 0
    while True:
        yield from batches.iterate(e)
        e += 1


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--arch", default="vgg11")
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=128, help="the paper's training batch")
    ap.add_argument("--ks", default="1,2,4,8", help="comma-separated numbers of concurrent runs")
    ap.add_argument("--modes", default="processes,streams", help="processes and/or streams")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed window of every measurement")
    ap.add_argument("--images", type=int, default=50_000, help="images resident per run (CIFAR-10: 50,000)")
    ap.add_argument("--smoke", action="store_true", help="tiny settings (seconds on a CPU), for tests")
    args = ap.parse_args(argv)
    if args.smoke:
        args.ks, args.seconds, args.images, args.batch, args.ratio = "1,2", 0.2, 64, 16, 0.125
    ks = [int(k) for k in args.ks.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in ("processes", "streams")]
    if bad or any(k < 1 for k in ks):
        raise ValueError(f"--modes takes processes and/or streams (got {args.modes!r}); --ks integers >= 1 "
                         f"(got {args.ks!r})")
    from nslab import uniform_widths
    from nslab.models import macs
    from nslab.runs.loop import resolve_device

    dev = resolve_device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # as the worker processes do: comparable runs on a shared CPU
    device = str(dev)
    common = (args.arch, args.ratio, args.batch, args.images, args.seconds)
    out = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "arch": args.arch, "ratio": args.ratio, "batch": args.batch, "seconds": args.seconds,
           "macs_per_image": macs(args.arch, uniform_widths(args.arch, args.ratio), "cifar10")}
    _log(f"{out['device']}: {args.arch} r={args.ratio} batch {args.batch}")
    single = {}
    for graphs in ((True, False) if dev.type == "cuda" else (False,)):
        r = measure_run(device, *common, graphs=graphs)
        single["graphs" if graphs else "eager"] = round(r["images_per_s"])
        _log(f"  one run, {'CUDA graphs' if graphs else 'eager'}: {r['images_per_s']:,.0f} img/s")
    out["single"] = single
    out["single_images_per_s"] = max(single.values())
    for mode in modes:
        agg = {}
        for k in ks:
            if mode == "processes":
                v = out["single_images_per_s"] if k == 1 else measure_processes(k, device, *common)
            else:
                v = measure_streams(k, device, *common)
            agg[str(k)] = round(v)
            _log(f"  {k} run(s) in {mode}: {v:,.0f} img/s aggregate")
        out[mode] = agg
    best = max([out["single_images_per_s"]] + [v for m in modes for v in out[m].values()])
    out.update(best_aggregate=best, goal=GOAL, goal_met=best >= GOAL)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
