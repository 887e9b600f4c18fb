"""Pruning with and without physical shrinking: same schedule, same seed, on the CPU.

Both runs prune the default network (VGG11, 2752 channels; or with ``--model torchvision:NAME`` a torchvision
network traced at 32x32 by ``Architecture.from_module``, its coupled groups pruned as wholes) to 5% with the same
Taylor-FO schedule on synthetic CIFAR-shaped data; one rebuilds the network smaller after every step where it is
exact, the other only masks channels. Prints both wall times of the pruning phase and their ratio (target: at least
2x on VGG11, 1.5x on a torchvision network).

Usage: ``flock /tmp/nslab-heavy.lock python bench/prune_speed.py [--model torchvision:resnet18]
[--channels-per-step 100] [--threads 2]`` (``--smoke``: seconds, for tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from nslab.data import synthetic_data
from nslab.models import Architecture, register
from nslab.search.prune import PruneSettings, prune


def network(model: str) -> str:
    """The registered name to prune: a paper network's name as given, or ``torchvision:NAME`` traced and
    registered (as ``tv_NAME``)."""
    if ":" not in model:
        return model
    arch = Architecture.from_module(model, (3, 32, 32), name="tv_" + model.split(":")[1])
    register(arch)
    return arch.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg11", help="a registered network, or torchvision:NAME (traced)")
    ap.add_argument("--channels-per-step", type=int, default=100)
    ap.add_argument("--batches-per-step", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default=PruneSettings().precision,
                    help="fp32: shrinking and masking agree to rounding, the same rows until a 1e-7 difference flips a "
                         "near-tie (densenet121: the first 2 of 400-channel steps); bf16 rounds them apart")
    ap.add_argument("--smoke", action="store_true", help="a few images and 700-channel steps (seconds; tests)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.channels_per_step, args.batch_size = 700, 8
    data = synthetic_data(train_per_class=2 if args.smoke else 64)
    settings = PruneSettings(
        channels_per_step=args.channels_per_step,
        batches_per_step=args.batches_per_step,
        batch_size=args.batch_size,
        pretrain_epochs=0,
        channels_last=True,
        precision=args.precision,
    )
    arch, out = network(args.model), {}
    for shrink in (True, False):
        res = prune(
            arch, data, dataclasses.replace(settings, shrink=shrink), seed=args.seed, progress=False
        )
        out["shrink" if shrink else "mask"] = res
        print(
            f"{'shrink' if shrink else 'mask  '}: {res.seconds:7.1f} s pruning phase, {res.steps} steps, "
            f"{len(res.widths)} rows, final widths {res.final_widths}",
            flush=True,
        )
    a, b = out["shrink"], out["mask"]
    same = len(a.widths) == len(b.widths) and bool(np.array_equal(a.widths[:5], b.widths[:5]))
    print(
        json.dumps(
            {
                "shrink_s": round(a.seconds, 2),
                "mask_s": round(b.seconds, 2),
                "speedup": round(b.seconds / a.seconds, 2),
                "model": args.model,
                "same_first_rows": same,
                "settings": dataclasses.asdict(settings),
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
