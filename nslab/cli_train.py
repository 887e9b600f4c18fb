"""``nslab train`` and ``nslab latency``: argument parsers and the functions they call.

``nslab.cli`` mounts them with ``add_train_parser(sub)`` / ``add_latency_parser(sub)``; each sets
``func`` to a ``run_*(args) -> dict`` whose result the CLI prints as one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from .datasets import DATASETS

__all__ = ["add_latency_parser", "add_train_parser", "run_latency", "run_train"]


def _widths(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths takes comma-separated integers, got {text!r}") from None


def _model_args(p: argparse.ArgumentParser, datasets: list[str]) -> None:
    from .models import ARCHS

    p.add_argument("arch", choices=list(ARCHS), help="architecture")
    p.add_argument("--dataset", default="cifar10", choices=datasets, help="dataset (default cifar10)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--widths", type=_widths, help="comma-separated widths, forward order")
    g.add_argument("--ratio", type=float, help="uniform scaling of the default widths, int(w * R)")
    p.add_argument("--convcut", action="store_true", help="conv shortcut in every block (resnet18/mobilenetv2)")


def _widths_of(args: argparse.Namespace) -> list[int]:
    from .models import default_widths, uniform_widths

    if args.widths is not None:
        return args.widths
    if args.ratio is not None:
        return uniform_widths(args.arch, args.ratio)
    return default_widths(args.arch)


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``sub`` (the result of ``parser.add_subparsers()``)."""
    p = sub.add_parser("train", help="train a network with a recipe; prints params and accuracies as JSON")
    _model_args(p, [*DATASETS, "synthetic"])
    p.add_argument("--recipe", default="cpu", choices=["paper", "cpu", "smoke"], help="settings (default cpu)")
    p.add_argument("--epochs", type=int, help="override the epoch count (step milestones scale along)")
    p.add_argument("--subset", type=int, help="train on this many images (class-balanced, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and data order")
    p.add_argument("--data-root", help="data root (default $NSLAB_DATA, else ~/.cache/nslab/data)")
    p.add_argument("--out", help="run directory: log, checkpoint, settings; rerun to resume")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--no-download", action="store_true", help="never download CIFAR")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> dict:
    """Load the data, build the model, train it; return the JSON summary.

    Returns:
        ``{"arch", "dataset", "widths", "params", "recipe", "epochs", "best_test_acc", "best_epoch",
        "last_test_acc", "seconds", "device", "run_dir"}``; accuracies in percent, ``seconds`` is the
        command's wall time including data loading.

    Raises:
        ValueError: bad arguments, or a NaN/inf loss (the message names epoch and step).
        OSError: an unreadable data root (:class:`~nslab.data.DatasetLayoutError`).
    """
    from .data import load_dataset
    from .models import create_model, param_count
    from .train import NonFiniteLossError, recipe, resolve_device, scale_epochs, seed_everything, train

    t0 = time.perf_counter()
    device = resolve_device(args.device)
    widths = _widths_of(args)
    data = load_dataset(args.dataset, args.data_root, download=not args.no_download, progress=not args.quiet)
    r = recipe(args.recipe, data.spec)
    if args.epochs is not None:
        r = scale_epochs(r, args.epochs)
    if args.subset is not None:
        r = dataclasses.replace(r, subset=args.subset, subset_mode="balanced")
    seed_everything(args.seed)
    model = create_model(args.arch, widths, dataset=data.spec, convcut=args.convcut)
    try:
        history = train(model, data, r, device=device, seed=args.seed, run_dir=args.out, progress=not args.quiet)
    except NonFiniteLossError as e:
        raise ValueError(str(e)) from e
    return {
        "arch": args.arch,
        "dataset": args.dataset,
        "widths": widths,
        "params": param_count(args.arch, widths, data.spec, args.convcut),
        "recipe": r.name,
        "epochs": len(history),
        "best_test_acc": round(history.best_test_acc, 2),
        "best_epoch": history.best_epoch,
        "last_test_acc": round(history.last_test_acc, 2),
        "seconds": round(time.perf_counter() - t0, 1),
        "device": str(device),
        "run_dir": args.out,
    }


def add_latency_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``latency`` subcommand to ``sub``."""
    p = sub.add_parser("latency", help="forward-pass latency of a batch (mean/std ms over repeats)")
    _model_args(p, list(DATASETS))
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--batch", type=int, default=100, help="batch size (default 100, the paper's)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeat", type=int, default=80, help="timed passes (default 80, the paper's)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads during the measurement (default 1)")
    p.set_defaults(func=run_latency)
    return p


def run_latency(args: argparse.Namespace) -> dict:
    """Build the model and time it; return ``{"arch", ..., "mean_ms", "std_ms"}``."""
    from .datasets import dataset_spec
    from .latency import measure_latency
    from .models import create_model, param_count

    widths = _widths_of(args)
    spec = dataset_spec(args.dataset)
    model = create_model(args.arch, widths, dataset=spec, convcut=args.convcut)
    size = spec.image_size
    mean, std = measure_latency(
        model, (3, size, size), args.device, args.batch, args.warmup, args.repeat, threads=args.threads
    )
    return {
        "arch": args.arch,
        "dataset": args.dataset,
        "widths": widths,
        "params": param_count(args.arch, widths, spec, args.convcut),
        "device": args.device,
        "batch": args.batch,
        "threads": args.threads if args.device == "cpu" else None,
        "mean_ms": round(mean, 3),
        "std_ms": round(std, 3),
    }
