"""One prepared pass over nslab's CUDA path, for a borrowed GPU machine (a few minutes).

Checks that every architecture runs forward on CUDA, that training (bf16 autocast, channels-last) gives
finite losses, learns, and resumes from its checkpoint, that architecture descent (pruning with physical
shrinking) runs on CUDA, and measures latency (both protocols of ``nslab.scaling.latency``: the GPU's time
of a graphed forward, and the earlier eager events) and training throughput. Prints one JSON line per check;
exits non-zero on the first failure.

    python bench/gpu_check.py [--epoch-images 50000]
    python bench/gpu_check.py --device cpu --smoke    # a dry run of every check at tiny sizes (seconds)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from nslab import create_model, param_count, uniform_widths
from nslab.config import preset
from nslab.data import smoke_data, synthetic_data
from nslab.runs.train import recipe, scale_epochs, train
from nslab.scaling.latency import measure_latency, timing_protocol
from nslab.search.descent import architecture_descent


def report(**kw) -> None:
    print(json.dumps(kw), flush=True)


CHECKS = ("forward", "train+resume", "cuda_graphs", "latency", "epoch", "descent")  # the slowest last


def check_forward(dev, smoke: bool) -> None:
    for arch, ds, size in [("vgg11", "cifar10", 32), ("resnet18", "tinyimagenet", 64), ("mobilenetv2", "cifar100", 32)]:
        widths = uniform_widths(arch, 0.25) if smoke else None
        m = create_model(arch, widths, ds).to(dev)
        with torch.autocast(dev.type, torch.bfloat16):
            y = m(torch.randn(8, 3, size, size, device=dev))
        assert torch.isfinite(y).all() and y.shape[0] == 8
        report(check="forward", arch=arch, dataset=ds, params=param_count(arch, widths, ds), out=list(y.shape))


def _tiny(smoke: bool):
    return synthetic_data(10, 16 if smoke else 128, 32), scale_epochs(recipe("smoke", "cifar10"), 2 if smoke else 4)


def check_train_resume(dev, smoke: bool) -> None:
    data, r = _tiny(smoke)
    with tempfile.TemporaryDirectory() as run:
        m = create_model("vgg11", uniform_widths("vgg11", 0.25), "cifar10")
        h = train(m, data, r, device=dev, seed=0, run_dir=run, progress=False)
        again = train(create_model("vgg11", uniform_widths("vgg11", 0.25), "cifar10"), data, r, device=dev,
                      seed=0, run_dir=run, progress=False)
        assert again.best_test_acc == h.best_test_acc, "resume from a finished run changed the result"
        report(check="train+resume", epochs=len(h), best_test_acc=h.best_test_acc, seconds=round(h.seconds, 2))
        assert smoke or h.best_test_acc > 30, "synthetic task not learnt on CUDA"


def check_cuda_graphs(dev, smoke: bool) -> None:
    # the CUDA-graph step against the eager one (bf16 both): the same SGD, so close losses
    data, r = _tiny(smoke)
    runs = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        m = create_model("vgg11", uniform_widths("vgg11", 0.25), "cifar10")
        runs[graphs] = train(m, data, r, device=dev, seed=0, progress=False, cuda_graphs=graphs)
    eager, graphed = runs[False].column("train_loss"), runs[True].column("train_loss")
    report(check="cuda_graphs", eager_train_loss=eager, graphed_train_loss=graphed,
           eager_best=runs[False].best_test_acc, graphed_best=runs[True].best_test_acc)
    assert all(abs(a - b) <= 0.05 * abs(a) + 0.02 for a, b in zip(eager, graphed)), "graphed step diverges from eager"


def check_descent(dev, smoke: bool) -> None:
    if smoke:  # a minute of a 2-core CPU; tests/test_descent.py covers it there
        report(check="descent", skipped="the smoke run leaves architecture descent to the CUDA run")
        return
    with tempfile.TemporaryDirectory() as run:
        t0 = time.perf_counter()
        res = architecture_descent("vgg11", "cifar10", smoke_data("cifar10"), preset("smoke").search, run,
                                   device=str(dev), progress=False)
        report(check="descent", iterations=len(res.iterations), seconds=round(time.perf_counter() - t0, 1),
               rows=[len(it.widths) for it in res.iterations])


def check_latency(dev, smoke: bool) -> None:
    lat = dict(batch=4, warmup=1, repeat=2) if smoke else {}
    for arch, ds, ratio, size in [("vgg11", "cifar10", 0.25, 32), ("vgg11", "cifar10", 1.0, 32),
                                  ("mobilenetv2", "cifar100", 0.25, 32), ("resnet18", "tinyimagenet", 0.25, 64)]:
        m = create_model(arch, uniform_widths(arch, 0.125 if smoke else ratio), ds)
        mean, std = measure_latency(m, (3, size, size), dev, **lat)
        eager, _ = measure_latency(m, (3, size, size), dev, protocol="eager", **lat)
        report(check="latency", arch=arch, dataset=ds, ratio=ratio, batch=lat.get("batch", 100),
               protocol=timing_protocol(dev), mean_ms=round(mean, 3), std_ms=round(std, 3),
               eager_protocol=timing_protocol(dev, "eager"), eager_mean_ms=round(eager, 3),
               eager_over_graph=round(eager / mean, 3))


def check_epoch(dev, smoke: bool, epoch_images: int) -> None:
    # One full-width VGG11 epoch of CIFAR-10 size with the paper recipe's batch: seconds per epoch on this GPU.
    big = synthetic_data(10, (320 if smoke else epoch_images) // 10, 100)
    r = scale_epochs(recipe("paper", "cifar10"), 1)
    for ratio, graphs in ((0.25, True), (0.25, False), (1.0, True)):
        ratio = 0.125 if smoke else ratio
        h = train(create_model("vgg11", uniform_widths("vgg11", ratio), "cifar10"), big, r, device=dev,
                  progress=False, cuda_graphs=graphs)
        report(check="epoch", arch="vgg11", ratio=ratio, cuda_graphs=graphs, images=big.num_train,
               seconds=round(h.seconds, 2), images_per_s=round(big.num_train / h.seconds))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epoch-images", type=int, default=50_000, help="images in the timed full-width epoch")
    ap.add_argument("--device", default="cuda", help="cpu only for a dry run of this script")
    ap.add_argument("--smoke", action="store_true", help="tiny networks, data and epochs: the dry run of the tests")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, of {', '.join(CHECKS)}")
    args = ap.parse_args(argv)
    checks = [c for c in args.checks.split(",") if c]
    if set(checks) - set(CHECKS):
        ap.error(f"unknown checks {sorted(set(checks) - set(CHECKS))}; accepted: {', '.join(CHECKS)}")
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    report(check="device", name=name, torch=torch.__version__, smoke=args.smoke)
    run = {"forward": check_forward, "train+resume": check_train_resume, "cuda_graphs": check_cuda_graphs,
           "descent": check_descent, "latency": check_latency,
           "epoch": lambda d, s: check_epoch(d, s, args.epoch_images)}
    for c in CHECKS:
        if c in checks:
            run[c](dev, args.smoke)


if __name__ == "__main__":
    main()
