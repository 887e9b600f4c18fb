"""``nslab reproduce``: execute the notebooks headlessly with papermill under a profile.

``nslab.cli`` mounts it with ``add_parser(subparsers)``; the parser sets ``func`` to :func:`run`, which
returns a JSON-able dict (the CLI prints it). A failing notebook raises
:class:`~nslab.reproduce.NotebookFailed` (a ``RuntimeError``) naming the notebook and the cell: the CLI
should print it and exit non-zero.
"""

from __future__ import annotations

import argparse
import time

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``reproduce`` to ``subparsers``: ``--profile smoke|cpu|paper [--only 03,05] [--data-root DIR]``."""
    from .reproduce import PROFILES

    p = subparsers.add_parser(
        "reproduce", help="run the notebooks with papermill: every figure and table of the paper",
        description="Execute notebooks/NN_*.ipynb in order with papermill (executed copies in "
                    "build/notebooks/); figures and tables go to figures/ (smoke: build/smoke/figures/).")
    p.add_argument("--profile", default="cpu", choices=list(PROFILES),
                   help="smoke: synthetic data, seconds; cpu: CIFAR-10 on a CPU (default); paper: the released "
                        "protocol (GPU)")
    p.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                   metavar="NN[,NN]", help="run only these notebooks, e.g. 03,05")
    p.add_argument("--data-root", help="dataset root passed to every notebook (default: $NSLAB_DATA or "
                                       "~/.cache/nslab/data)")
    p.add_argument("--figures-dir", help="where figures and tables go (default: figures/)")
    p.add_argument("--results-dir", help="cached runs (default: results/<profile>/)")
    p.add_argument("--build-dir", help="executed notebooks (default: build/notebooks/)")
    p.add_argument("--notebooks-dir", help=argparse.SUPPRESS)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> dict:
    """Run the notebooks; return ``{"profile", "notebooks": [{notebook, executed, seconds}], "seconds"}``.

    Raises:
        ValueError: unknown profile or notebook number.
        nslab.reproduce.NotebookFailed: a notebook raised (message: notebook, cell, error, executed copy).
    """
    from .reproduce import run_notebooks

    t0 = time.perf_counter()
    done = run_notebooks(args.profile, only=args.only, data_root=args.data_root,
                         notebooks_dir=getattr(args, "notebooks_dir", None), build_dir=args.build_dir,
                         figures_dir=args.figures_dir, results_dir=args.results_dir)
    return {"profile": args.profile, "notebooks": done, "seconds": round(time.perf_counter() - t0, 1)}
