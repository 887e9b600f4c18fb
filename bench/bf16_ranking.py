"""How often bf16 autocast changes the channels a Taylor-FO prune step removes (CPU; a few minutes).

On CUDA the pruning steps run under bf16 autocast (``PruneSettings.precision="bf16"``): the gate outputs z and
their gradients dL/dz are bf16, and Taylor-FO's ``sum over batch, h, w of z * dL/dz`` cancels most for the
low-scored channels, which are the ones a prune step removes. This measures it on the CPU's bf16 kernels
(``torch.autocast("cpu", torch.bfloat16)``): a small network is trained briefly (the search prunes a trained
network), then for every window of ``--window`` minibatches (what the pruner accumulates between steps, the
weights held fixed) the Taylor-FO scores are computed twice on the same batches, in fp32 and under bf16
autocast, and the ``k`` lowest-ranked channels (ranked globally, as the pruner does) are compared.

Prints one JSON object: per k, the share of windows whose bottom-k set differs, the mean and max number of
channels that differ, and the median relative error of the bf16 scores of the fp32 bottom k.

    python bench/bf16_ranking.py                      # CIFAR-10 if cached, VGG11 r=0.25
    python bench/bf16_ranking.py --smoke              # seconds, synthetic data (the tests)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def _data(name: str, smoke: bool, root: str | None):
    from nslab.data import load_dataset, synthetic_data

    if smoke or name == "synthetic":
        return synthetic_data(10, 40 if smoke else 500, 10), "synthetic"
    try:
        return load_dataset(name, root, download=False), name
    except Exception as e:  # not cached here: the synthetic task still shows the effect's size
        print(f"{name} unavailable ({type(e).__name__}: {e}); using synthetic data", file=sys.stderr)
        return synthetic_data(10, 500, 10), "synthetic"


def _scores(model, crit, batches, bf16: bool) -> np.ndarray:
    """All channels' Taylor-FO scores over ``batches`` (weights unchanged), concatenated over the gates."""
    crit.reset()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        with ctx:
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
    return torch.cat(crit(model)).numpy()


def _forever(batches, seed: int):
    while True:
        yield from batches.iterate(seed)
        seed += 1


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vgg11")
    ap.add_argument("--ratio", type=float, default=0.25, help="uniform width ratio of the network")
    ap.add_argument("--data", default="cifar10", help="a dataset name (cached) or 'synthetic'")
    ap.add_argument("--data-root", default=None, help="where the dataset lies (default: $NSLAB_DATA, nslab's cache)")
    ap.add_argument("--train-images", type=int, default=10_000, help="images of the brief pre-training")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--window", type=int, default=5, help="minibatches per prune step (the cpu preset's m)")
    ap.add_argument("--windows", type=int, default=12, help="windows per seed")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--ks", default="4,10,40", help="comma-separated channels per prune step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny settings (seconds), for tests")
    args = ap.parse_args(argv)
    if args.smoke:
        args.ratio, args.train_images, args.batch, args.window, args.windows, args.seeds = 0.125, 64, 16, 1, 2, 1
    ks = [int(k) for k in args.ks.split(",")]
    from nslab import create_model, uniform_widths
    from nslab.data import DeviceBatches
    from nslab.runs.loop import train_one_epoch
    from nslab.search.criteria import TaylorFO

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data, name = _data(args.data, args.smoke, args.data_root)
    n = min(args.train_images, len(data.train_y))
    torch.manual_seed(0)
    model = create_model(args.arch, uniform_widths(args.arch, args.ratio), data.spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sub = data.subset(n, "balanced", 0)  # a folder dataset is stored class by class: the first n are few classes
    pre = DeviceBatches(sub.train_x, sub.train_y, data.spec, "cpu", args.batch, train=True)
    stats = train_one_epoch(model, pre.iterate(0), opt, lambda i: 0.05)
    crit = TaylorFO().attach(model)
    batches = DeviceBatches(data.train_x, data.train_y, data.spec, "cpu", args.batch, train=True)
    differ = {k: [] for k in ks}
    rel_err = {k: [] for k in ks}
    for seed in range(args.seeds):
        it = _forever(batches, 1000 * (seed + 1))
        for _ in range(args.windows):
            window = [next(it) for _ in range(args.window)]
            fp32, bf16 = _scores(model, crit, window, False), _scores(model, crit, window, True)
            lo32, lo16 = np.argsort(fp32, kind="stable"), np.argsort(bf16, kind="stable")
            for k in ks:
                a, b = set(lo32[:k].tolist()), set(lo16[:k].tolist())
                differ[k].append(len(a - b))
                sel = lo32[:k]
                rel_err[k].append(float(np.median(np.abs(bf16[sel] - fp32[sel]) / np.maximum(fp32[sel], 1e-30))))
    crit.detach()
    out = {"arch": args.arch, "ratio": args.ratio, "data": name, "train_images": n, "train_loss": stats.loss,
           "channels": int(len(fp32)), "window": args.window, "batch": args.batch,
           "windows": args.windows * args.seeds, "seconds": round(time.perf_counter() - t0, 1), "by_k": {}}
    for k in ks:
        d = np.asarray(differ[k])
        out["by_k"][str(k)] = {"share_differs": float((d > 0).mean()), "mean_channels_differ": float(d.mean()),
                               "max_channels_differ": int(d.max()), "median_rel_err": float(np.median(rel_err[k]))}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
