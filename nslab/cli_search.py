"""The search-side commands of ``nslab``: ``search``, ``baseline morphnet|li``, and ``generate --run``.

``nslab.cli`` calls :func:`add_parsers` on its subparsers; every handler takes the parsed arguments and
returns a JSON-able dict (the CLI prints it). Bad input raises ``ValueError`` (or ``OSError`` for data
roots), which the CLI turns into a one-line error.
"""

from __future__ import annotations

import argparse

from .datasets import DATASETS
from .models import ARCHS, param_count, uniform_widths

__all__ = ["add_parsers", "cmd_baseline", "cmd_search"]


def _data(args: argparse.Namespace, profile):
    from .data import load_dataset

    if profile.synthetic:
        return None
    return load_dataset(args.dataset, args.data_root, progress=not args.quiet)


def cmd_search(args: argparse.Namespace) -> dict:
    """``nslab search``: run or resume architecture descent; returns the fit of every iteration."""
    from .descent import architecture_descent, get_profile

    prof = get_profile(args.profile)
    result = architecture_descent(
        args.arch,
        args.dataset,
        _data(args, prof),
        iterations=args.iterations,
        profile=prof,
        run_dir=args.out,
        pretrain_epochs=args.pretrain_epochs,
        seed=args.seed,
        device=args.device,
        convcut=args.convcut,
        progress=not args.quiet,
    )
    return result.to_dict()


def cmd_baseline(args: argparse.Namespace) -> dict:
    """``nslab baseline morphnet|li``: compute the baseline, write it under ``--out``, return its summary."""
    from .baselines import li_baseline, morphnet_baseline
    from .descent import get_profile

    prof = get_profile(args.profile)
    data = _data(args, prof)
    if args.method == "morphnet":
        r = morphnet_baseline(
            args.arch,
            args.dataset,
            data,
            ratios=args.ratios,
            profile=prof,
            out_dir=args.out,
            seed=args.seed,
            device=args.device,
            convcut=args.convcut,
            progress=not args.quiet,
        )
        return {"method": "morphnet", "out": str(args.out), **r.to_dict()}
    budget = args.budget
    if args.ratio is not None:
        budget = param_count(
            args.arch, uniform_widths(args.arch, args.ratio * prof.start_ratio), args.dataset, args.convcut
        )
    r = li_baseline(
        args.arch,
        args.dataset,
        data,
        profile=prof,
        budget=budget,
        out_dir=args.out,
        seed=args.seed,
        device=args.device,
        convcut=args.convcut,
        progress=not args.quiet,
    )
    return {"method": "li", "out": str(args.out), **r.to_dict()}


def _ratios(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratios takes comma-separated numbers, got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", choices=list(ARCHS), help="architecture")
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS), help="dataset")
    p.add_argument("--profile", default="cpu", help="search profile: paper, cpu or smoke (default cpu)")
    p.add_argument("--data-root", help="dataset folder (default $NSLAB_DATA or the cache)")
    p.add_argument("--out", required=True, help="output/run directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="training device (cpu, cuda, ...)")
    p.add_argument(
        "--convcut", action="store_true", help="conv shortcut in every block (resnet18/mobilenetv2)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_parsers(subparsers) -> None:
    """Register ``search`` and ``baseline`` on the ``nslab`` subparsers (``generate --run`` lives in cli)."""
    p = subparsers.add_parser("search", help="architecture descent (Algorithms 1, 2 and 4); runs or resumes")
    _common(p)
    p.add_argument("--iterations", type=int, help="total descent iterations (default: the profile's)")
    p.add_argument(
        "--pretrain-epochs", type=int, help="epochs of training before pruning (default: profile's)"
    )
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("baseline", help="MorphNet (Taylor-FO) or Li et al. baseline")
    sub = p.add_subparsers(dest="method", required=True)
    m = sub.add_parser("morphnet", help="prune the default network to 50%%, then one factor per budget")
    _common(m)
    m.add_argument(
        "--ratios",
        type=_ratios,
        default=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
        help="budgets as uniform ratios, comma-separated",
    )
    m.set_defaults(func=cmd_baseline)
    li = sub.add_parser("li", help="L1-norm filter pruning of a trained default network, then fine-tuning")
    _common(li)
    g = li.add_mutually_exclusive_group()
    g.add_argument("--budget", type=float, help="target parameters")
    g.add_argument("--ratio", type=float, help="budget of the uniform network at this ratio (default 0.75)")
    li.set_defaults(func=cmd_baseline)
