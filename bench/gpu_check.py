"""One prepared pass over nslab's CUDA path, for a borrowed GPU machine (a few minutes).

Checks that every architecture runs forward on CUDA, that training (bf16 autocast, channels-last) gives
finite losses, learns, and resumes from its checkpoint, that architecture descent (pruning with physical
shrinking) runs on CUDA, and measures latency (CUDA events) and training throughput. Prints one JSON
line per check; exits non-zero on the first failure.

    python bench/gpu_check.py [--epoch-images 50000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from nslab.train import recipe, scale_epochs, train

from nslab import create_model, param_count, uniform_widths
from nslab.config import preset
from nslab.data import smoke_data, synthetic_data
from nslab.scaling.latency import measure_latency
from nslab.search.descent import architecture_descent


def report(**kw) -> None:
    print(json.dumps(kw), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epoch-images", type=int, default=50_000, help="images in the timed full-width epoch")
    ap.add_argument("--device", default="cuda", help="cpu only for a dry run of this script")
    args = ap.parse_args()
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    report(check="device", name=name, torch=torch.__version__)

    for arch, ds, size in [("vgg11", "cifar10", 32), ("resnet18", "tinyimagenet", 64), ("mobilenetv2", "cifar100", 32)]:
        m = create_model(arch, None, ds).to(dev)
        with torch.autocast(dev.type, torch.bfloat16):
            y = m(torch.randn(8, 3, size, size, device=dev))
        assert torch.isfinite(y).all() and y.shape[0] == 8
        report(check="forward", arch=arch, dataset=ds, params=param_count(arch, None, ds), out=list(y.shape))

    data = synthetic_data(10, 128, 32)
    with tempfile.TemporaryDirectory() as run:
        r = scale_epochs(recipe("smoke", "cifar10"), 4)
        m = create_model("vgg11", uniform_widths("vgg11", 0.25), "cifar10")
        h = train(m, data, r, device=dev, seed=0, run_dir=run, progress=False)
        again = train(create_model("vgg11", uniform_widths("vgg11", 0.25), "cifar10"), data, r, device=dev,
                      seed=0, run_dir=run, progress=False)
        assert again.best_test_acc == h.best_test_acc, "resume from a finished run changed the result"
        report(check="train+resume", epochs=len(h), best_test_acc=h.best_test_acc, seconds=round(h.seconds, 2))
        assert h.best_test_acc > 30, "synthetic task not learnt on CUDA"

    # the CUDA-graph step against the eager one (bf16 both): the same SGD, so close losses
    runs = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        m = create_model("vgg11", uniform_widths("vgg11", 0.25), "cifar10")
        runs[graphs] = train(m, data, r, device=dev, seed=0, progress=False, cuda_graphs=graphs)
    eager, graphed = runs[False].column("train_loss"), runs[True].column("train_loss")
    report(check="cuda_graphs", eager_train_loss=eager, graphed_train_loss=graphed,
           eager_best=runs[False].best_test_acc, graphed_best=runs[True].best_test_acc)
    assert all(abs(a - b) <= 0.05 * abs(a) + 0.02 for a, b in zip(eager, graphed)), "graphed step diverges from eager"

    with tempfile.TemporaryDirectory() as run:
        t0 = time.perf_counter()
        res = architecture_descent("vgg11", "cifar10", smoke_data("cifar10"), preset("smoke").search, run,
                                   device=str(dev), progress=False)
        report(check="descent", iterations=len(res.iterations), seconds=round(time.perf_counter() - t0, 1),
               rows=[len(it.widths) for it in res.iterations])

    for arch, ds, ratio, size in [("vgg11", "cifar10", 0.25, 32), ("vgg11", "cifar10", 1.0, 32),
                                  ("mobilenetv2", "cifar100", 0.25, 32), ("resnet18", "tinyimagenet", 0.25, 64)]:
        m = create_model(arch, uniform_widths(arch, ratio), ds)
        mean, std = measure_latency(m, (3, size, size), dev)
        report(check="latency", arch=arch, dataset=ds, ratio=ratio, batch=100, mean_ms=round(mean, 3),
               std_ms=round(std, 3))

    # One full-width VGG11 epoch of CIFAR-10 size with the paper recipe's batch: seconds per epoch on this GPU.
    big = synthetic_data(10, args.epoch_images // 10, 100)
    r = scale_epochs(recipe("paper", "cifar10"), 1)
    for ratio, graphs in ((0.25, True), (0.25, False), (1.0, True)):
        h = train(create_model("vgg11", uniform_widths("vgg11", ratio), "cifar10"), big, r, device=dev,
                  progress=False, cuda_graphs=graphs)
        report(check="epoch", arch="vgg11", ratio=ratio, cuda_graphs=graphs, images=big.num_train,
               seconds=round(h.seconds, 2), images_per_s=round(big.num_train / h.seconds))


if __name__ == "__main__":
    main()
