"""The ``nslab`` command: thin argument parsing over the package; every command prints one JSON object.

Errors (bad input of any kind) exit with status 2 and a one-line message on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import powerlaw
from .cli_reproduce import add_parser as add_reproduce_parser
from .cli_search import add_parsers as add_search_parsers
from .cli_train import add_latency_parser, add_train_parser
from .datasets import DATASETS
from .models import ARCHS, default_widths, param_count, uniform_widths
from .reproduce import NotebookFailed


def _widths(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths takes comma-separated integers, got {text!r}") from None


def _add_model_args(p: argparse.ArgumentParser, widths: bool = True) -> None:
    p.add_argument("arch", choices=list(ARCHS), help="architecture")
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS), help="dataset (sets classes)")
    if widths:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--widths", type=_widths, help="comma-separated widths, forward order")
        g.add_argument("--ratio", type=float, help="uniform scaling of the default widths, int(w * R)")
    p.add_argument("--convcut", action="store_true", help="conv shortcut in every block (resnet18/mobilenetv2)")


def model_widths(args: argparse.Namespace) -> list[int] | None:
    """The width vector a command asked for: ``--widths``, ``--ratio`` or ``None`` (default widths)."""
    if getattr(args, "widths", None) is not None:
        return args.widths
    if getattr(args, "ratio", None) is not None:
        return uniform_widths(args.arch, args.ratio)
    return None


def cmd_params(args: argparse.Namespace) -> dict:
    widths = model_widths(args)
    count = param_count(args.arch, widths, args.dataset, args.convcut)
    return {"arch": args.arch, "dataset": args.dataset, "widths": widths or default_widths(args.arch),
            "params": count}


def cmd_fit(args: argparse.Namespace) -> dict:
    law = powerlaw.fit_power_law(args.trajectory, args.arch, args.dataset, args.convcut)
    if args.out:
        powerlaw.save_fit(args.out, law, arch=args.arch, dataset=args.dataset, convcut=args.convcut)
    return law.to_dict()


def resolve_law(args: argparse.Namespace) -> powerlaw.PowerLaw:
    """The law ``generate`` uses: ``--run DIR``, ``--published NAME`` or ``--fit FILE`` (with its arch/dataset)."""
    if args.run:
        from .descent import law_from_run

        law, args.arch, args.dataset, args.convcut = law_from_run(args.run, args.iteration)
        return law
    if args.published:
        law, arch, dataset = powerlaw.published_fit(args.published, args.iteration or 15)
        args.arch, args.dataset = args.arch or arch, args.dataset or dataset
        return law
    if not args.fit:
        raise ValueError("generate needs a law: --fit FIT.json, --published NAME or --run RUN_DIR")
    meta = powerlaw.io.read_json(args.fit)
    if isinstance(meta, dict):
        args.arch = args.arch or meta.get("arch")
        args.dataset = args.dataset or meta.get("dataset")
        args.convcut = args.convcut or bool(meta.get("convcut", False))
    index = None if args.iteration is None else args.iteration - 1
    return powerlaw.load_fit(args.fit, index)


def cmd_generate(args: argparse.Namespace) -> dict:
    law = resolve_law(args)
    if not args.arch or not args.dataset:
        raise ValueError("--arch and --dataset are required: the fit file does not record them")
    if args.budget is not None:
        target = args.budget
    else:
        target = param_count(args.arch, uniform_widths(args.arch, args.ratio), args.dataset, args.convcut)
    s = powerlaw.widths_for_budget(law, args.arch, args.dataset, target, round_to=args.round_to,
                                   min_width=args.min_width, method=args.method, convcut=args.convcut)
    return {"widths": s.widths, "params": s.params, "target": s.target, "rel_error": s.rel_error}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nslab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="exact parameter count of a width vector")
    _add_model_args(p)
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("fit", help="fit the per-layer power law to a pruning trajectory (Algorithm 2)")
    p.add_argument("trajectory", help="trajectory CSV (nslab's, or the authors' header-less one)")
    p.add_argument("--arch", required=True, choices=list(ARCHS))
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS))
    p.add_argument("--convcut", action="store_true")
    p.add_argument("--out", help="write the fit as JSON here")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("generate", help="widths for a parameter budget (Algorithm 3)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--fit", help="fit JSON (from `nslab fit`, or the authors' {'fits': [...]} file)")
    src.add_argument("--published", choices=list(powerlaw.published_fits()),
                     help="the authors' published VGG11 fits, shipped with nslab")
    src.add_argument("--run", help="a search run directory (`nslab search --out`); --iteration picks the fit")
    p.add_argument("--iteration", type=int, help="which fit of a multi-fit file (1-based; default last)")
    p.add_argument("--arch", choices=list(ARCHS))
    p.add_argument("--dataset", choices=list(DATASETS))
    p.add_argument("--convcut", action="store_true")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--budget", type=float, help="target number of parameters")
    g.add_argument("--ratio", type=float, help="target = parameters of the uniform network int(w * R)")
    p.add_argument("--round-to", type=int, default=1, help="widths in multiples of K (8: hardware friendly)")
    p.add_argument("--min-width", type=int, default=1)
    p.add_argument("--method", choices=["bracket", "sgd"], default="bracket")
    p.set_defaults(func=cmd_generate)

    add_train_parser(sub)
    add_latency_parser(sub)
    add_search_parsers(sub)
    add_reproduce_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nslab`` command; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        out = args.func(args)
    except (ValueError, OSError, FloatingPointError) as e:
        print(f"nslab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NotebookFailed as e:
        print(f"nslab {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nslab {args.command}: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
