"""The ``nslab`` command: thin argument parsing over the package; every command prints one JSON object.

Each subcommand parses its flags, calls the package and returns a dict; :func:`main` prints that dict as
one line of JSON on stdout and nothing else (progress bars and logs go to stderr). Bad input (including a
bad flag) exits with status 2 and a one-line ``nslab <cmd>: error: ...`` on stderr, a failed notebook
with 1, Ctrl-C with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import config, generated
from .data import DATASETS
from .device import torch_threads
from .models import ARCHS, default_widths, get_arch, macs, param_count, resolve_arch, uniform_widths
from .reproduce import GridFailed, NotebookFailed
from .scaling import powerlaw
from .scaling.metrics import LATENCY, METRICS, PARAMS, get_metric
from .scaling.solver import widths_for_budget

__all__ = ["build_parser", "main"]

ARCH_HELP = (f"a registered network ({', '.join(ARCHS)}) or a factory to trace: torchvision:NAME, timm:NAME, "
             "package.module:function")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``nslab <cmd>: error: ...``, with status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _csv(cast: Callable, what: str) -> Callable[[str], list]:
    """An argparse ``type``: comma-separated ``cast`` values, at least one."""

    def parse(text: str) -> list:
        try:
            values = [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        return values

    return parse


def _command(sub, name: str, func: Callable[[argparse.Namespace], dict], help: str, **kw) -> _Parser:
    p = sub.add_parser(name, help=help, description=kw.pop("description", help), **kw)
    p.set_defaults(func=func, prog=p.prog)
    return p


def _model_args(p: argparse.ArgumentParser, datasets: Sequence[str] = tuple(DATASETS)) -> None:
    p.add_argument("arch", help=ARCH_HELP)
    p.add_argument("--dataset", default="cifar10", choices=list(datasets), help="dataset (default cifar10)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--widths", type=_csv(int, "integers"), help="comma-separated widths, forward order")
    g.add_argument("--ratio", type=float, help="uniform scaling of the default widths, int(w * R)")
    p.add_argument("--convcut", action="store_true", help="conv shortcut in every block (resnet18/mobilenetv2)")


def _run_args(p: argparse.ArgumentParser) -> None:
    """``search`` and ``baseline``: the network, the preset, the data and the run directory."""
    p.add_argument("arch", help=ARCH_HELP)
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS), help="dataset (default cifar10)")
    p.add_argument("--profile", default="cpu", choices=list(config.PRESETS),
                   help="preset: smoke (synthetic data, seconds), cpu (default) or paper")
    p.add_argument("--data-root", help="dataset folder (default $NSLAB_DATA, else ~/.cache/nslab/data)")
    p.add_argument("--out", required=True, help="output/run directory (rerun the command to resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="training device (cpu, cuda, ...; default cpu)")
    p.add_argument("--convcut", action="store_true", help="conv shortcut in every block (resnet18/mobilenetv2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def _widths(args: argparse.Namespace) -> list[int]:
    """The width vector asked for: ``--widths``, ``--ratio`` or the default widths."""
    if args.widths is not None:
        return args.widths
    if args.ratio is not None:
        return uniform_widths(args.arch, args.ratio)
    return default_widths(args.arch)


def _search_data(args: argparse.Namespace, search: config.SearchSettings):
    """The data a search prunes on: ``None`` (synthetic, made by the search) or the loaded dataset."""
    if search.synthetic:
        return None
    from .data import load_dataset

    return load_dataset(args.dataset, args.data_root, progress=not args.quiet)


# --- commands: each returns the JSON-able dict main() prints ----------------------------------------------


def cmd_params(args: argparse.Namespace) -> dict:
    widths = _widths(args)
    return {"arch": args.arch, "dataset": args.dataset, "widths": widths,
            "params": param_count(args.arch, widths, args.dataset, args.convcut),
            "macs": macs(args.arch, widths, args.dataset, args.convcut),
            "groups": list(get_arch(args.arch).width_names)}


def cmd_fit(args: argparse.Namespace) -> dict:
    law = powerlaw.fit_power_law(args.trajectory, args.arch, args.dataset, args.convcut)
    if args.out:
        powerlaw.save_fit(args.out, law, arch=args.arch, dataset=args.dataset, convcut=args.convcut)
    return law.to_dict()


# generate's shorthand flags: dest -> (the metric, whether the value is a target or a uniform ratio)
_SHORTHANDS = {"macs": ("macs", "budget"), "macs_ratio": ("macs", "ratio"), "latency_ms": ("latency", "budget")}


def _generate_budget(args: argparse.Namespace) -> tuple[str, str, float]:
    """``(metric, "budget" | "ratio", value)`` from ``--metric`` with ``--budget``/``--ratio``, or a shorthand."""
    dest = next((d for d in _SHORTHANDS if getattr(args, d) is not None), None)
    if dest is None:
        kind = "budget" if args.budget is not None else "ratio"
        return args.metric or "params", kind, getattr(args, kind)
    metric, kind = _SHORTHANDS[dest]
    if args.metric not in (None, metric):
        raise ValueError(f"--{dest.replace('_', '-')} is a {metric} budget: not one in --metric {args.metric}")
    return metric, kind, getattr(args, dest)


def cmd_generate(args: argparse.Namespace) -> dict:
    # the law (--run, --published or --fit), which fills in the network and the fit's iteration
    law, args.arch, args.dataset, args.convcut, args.iteration = generated.law_source(
        args.run, args.fit, args.published, args.iteration, args.arch, args.dataset, args.convcut)
    if not args.arch or not args.dataset:
        raise ValueError("--arch and --dataset are required: the fit file does not record them")
    resolve_arch(args.arch, args.dataset)  # a factory string the run or fit file names is traced again
    name, kind, value = _generate_budget(args)
    m, table = get_metric(name), None
    if m is LATENCY:  # this device's per-layer table (timed on first use, cached), or a traced network's path
        from .scaling.path_latency import latency_model

        table = latency_model(law, args.arch, args.dataset, args.convcut, args.device, args.batch)
    count = m.counter(args.arch, args.dataset, args.convcut, latency=table)
    target = value if kind == "budget" else count(uniform_widths(args.arch, value))
    s = widths_for_budget(law, args.arch, args.dataset, target, round_to=args.round_to, min_width=args.min_width,
                          method=args.method, convcut=args.convcut, metric=m, latency=table)
    if m == PARAMS:  # the output of before, unchanged
        out = {"widths": s.widths, "params": s.params, "target": s.target, "rel_error": s.rel_error}
    else:
        out = {"widths": s.widths, "params": s.params, "macs": s.macs, "target": s.target, "rel_error": s.rel_error}
        out.update({"metric": s.metric}, **({} if m.field in out else {m.field or "value": s.achieved}))
        out.update({"device": args.device, "batch": args.batch} if table is not None else {})
        out.update(table.report(s.widths) if hasattr(table, "report") else {})  # the path's measured error
    if args.out:  # written last and atomically: an error above leaves the file already there untouched
        source = {k: getattr(args, k) for k in ("run", "fit", "published") if getattr(args, k)}
        rec = generated.generated_record(args.arch, args.dataset, s.widths, args.convcut, iteration=args.iteration,
                                         budget={"metric": m.name, "target": s.target, "achieved": s.achieved,
                                                 "rel_error": s.rel_error}, source=source)
        out["out"] = str(generated.write_generated(args.out, rec))
    return out


def cmd_train(args: argparse.Namespace) -> dict:
    from .data import dataset_spec, load_dataset, synthetic_spec
    from .models import create_model
    from .runs.train import resolve_device, seed_everything, train

    t0 = time.perf_counter()
    device = resolve_device(args.device)
    widths = _widths(args)
    spec = synthetic_spec() if args.dataset == "synthetic" else dataset_spec(args.dataset)
    params = param_count(args.arch, widths, spec, args.convcut)  # bad widths fail before any data is loaded
    r = config.preset(args.recipe).recipe(spec.variant)
    if args.epochs is not None:
        r = config.scale_epochs(r, args.epochs)
    if args.subset is not None:
        r = dataclasses.replace(r, subset=args.subset, subset_mode="balanced")
    data = load_dataset(args.dataset, args.data_root, download=not args.no_download, progress=not args.quiet)
    seed_everything(args.seed)
    model = create_model(args.arch, widths, dataset=data.spec, convcut=args.convcut)
    history = train(model, data, r, device=device, seed=args.seed, run_dir=args.out, progress=not args.quiet)
    return {"arch": args.arch, "dataset": args.dataset, "widths": widths, "params": params, "recipe": r.name,
            "epochs": len(history), "best_test_acc": round(history.best_test_acc, 2),
            "best_epoch": history.best_epoch, "last_test_acc": round(history.last_test_acc, 2),
            "seconds": round(time.perf_counter() - t0, 1), "device": str(device), "run_dir": args.out}


def cmd_latency(args: argparse.Namespace) -> dict:
    from .data import dataset_spec
    from .models import create_model
    from .scaling.latency import measure_latency

    widths = _widths(args)
    spec = dataset_spec(args.dataset)
    model = create_model(args.arch, widths, dataset=spec, convcut=args.convcut)
    shape = (3, spec.image_size, spec.image_size)
    mean, std = measure_latency(model, shape, args.device, args.batch, args.warmup, args.repeat, threads=args.threads)
    return {"arch": args.arch, "dataset": args.dataset, "widths": widths,
            "params": param_count(args.arch, widths, spec, args.convcut), "device": args.device,
            "batch": args.batch, "threads": args.threads if args.device == "cpu" else None,
            "mean_ms": round(mean, 3), "std_ms": round(std, 3)}


def cmd_search(args: argparse.Namespace) -> dict:
    from .data import dataset_spec
    from .search.descent import architecture_descent

    search = config.preset(args.profile).search_for(None, pretrain_epochs=args.pretrain_epochs,
                                                    iterations=args.iterations,
                                                    variant=dataset_spec(args.dataset).variant)
    if args.channels_per_step is not None:  # coarser steps: fewer, faster prune steps on a large network
        cps = args.channels_per_step
        search = dataclasses.replace(search, prune=dataclasses.replace(search.prune, channels_per_step=cps))
    data = _search_data(args, search)
    with torch_threads(search.threads):
        run = architecture_descent(args.arch, args.dataset, data, search, args.out, seed=args.seed,
                                   device=args.device, convcut=args.convcut, progress=not args.quiet)
    return run.to_dict()


def cmd_morphnet(args: argparse.Namespace) -> dict:
    from .scaling.baselines import morphnet_baseline

    p = config.preset(args.profile)
    data = _search_data(args, p.search)
    with torch_threads(p.search.threads):
        r = morphnet_baseline(args.arch, args.dataset, data, p.search, p.baseline, args.ratios, args.out,
                              args.seed, args.device, args.convcut, not args.quiet)
    return {"method": "morphnet", "out": str(args.out), **r.to_dict()}


def cmd_li(args: argparse.Namespace) -> dict:
    from .data import dataset_spec, load_dataset, smoke_data
    from .scaling.baselines import li_baseline
    from .scaling.methods import Context

    p = config.preset(args.profile)
    start = p.search.start_ratio
    budget = args.budget
    if budget is None:
        ratio = p.baseline.li_ratio if args.ratio is None else args.ratio
        budget = Context(args.arch, args.dataset, args.convcut, start_ratio=start).budget(ratio).target
    r = p.recipe(dataset_spec(args.dataset).variant)
    if args.epochs is not None:
        r = config.scale_epochs(r, args.epochs)
    if p.search.synthetic:
        data = smoke_data(args.dataset, args.seed)
    else:
        data = load_dataset(args.dataset, args.data_root, progress=not args.quiet)
    res = li_baseline(args.arch, args.dataset, data, r, p.baseline, budget, start_ratio=start, out_dir=args.out,
                      seed=args.seed, device=args.device, convcut=args.convcut, progress=not args.quiet)
    return {"method": "li", "out": str(args.out), **res.to_dict()}


def cmd_reproduce(args: argparse.Namespace) -> dict:
    from .reproduce import reproduce

    return reproduce(args.profile, only=args.only, data_root=args.data_root, notebooks_dir=args.notebooks_dir,
                     build_dir=args.build_dir, figures_dir=args.figures_dir, results_dir=args.results_dir,
                     executor=args.executor, address=args.address, num_cpus=args.num_cpus, retries=args.retries,
                     grid_only=args.grid_only, png=not args.no_png)


def cmd_plan(args: argparse.Namespace) -> dict:
    from .paths import paths
    from .runs.plan import plan

    return plan(config.preset(args.profile), paths(args.profile, None, args.results_dir, args.data_root),
                gpus=args.gpus, device=args.device, probe=not args.no_probe)


# --- the parser ---------------------------------------------------------------------------------------------


def _add_generate(sub) -> None:
    p = _command(sub, "generate", cmd_generate, "widths for a parameter, MACs or latency budget (Algorithm 3)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--fit", help="fit JSON (from `nslab fit`, or the authors' {'fits': [...]} file)")
    src.add_argument("--published", choices=list(powerlaw.published_fits()),
                     help="the authors' published VGG11 fits, shipped with nslab")
    src.add_argument("--run", help="a search run directory (`nslab search --out`); --iteration picks the fit")
    p.add_argument("--iteration", type=int, help="which fit of a multi-fit file or run (1-based; default last)")
    p.add_argument("--arch", help=ARCH_HELP + " (default: the run's or fit file's)")
    p.add_argument("--dataset", choices=list(DATASETS))
    p.add_argument("--convcut", action="store_true")
    p.add_argument("--out", help="also write widths.json here (groups, widths, exact counts, budget; atomically): "
                                 "nslab.load_generated(FILE) builds the network from it")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--budget", type=float, help="target number of parameters (in --metric's unit)")
    g.add_argument("--ratio", type=float, help="target = parameters (--metric) of the uniform network int(w * R)")
    g.add_argument("--macs", type=float, help="target number of multiply-accumulates of one image")
    g.add_argument("--macs-ratio", type=float, help="target = MACs of the uniform network int(w * R)")
    g.add_argument("--latency-ms", type=float, help="target latency (ms per batch), predicted by this machine's "
                   "per-layer table (timed on first use, then cached)")
    p.add_argument("--metric", choices=list(METRICS), help="what --budget and --ratio count (default params; "
                   "--macs, --macs-ratio and --latency-ms are shorthands)")
    p.add_argument("--round-to", type=int, default=1, help="widths in multiples of K (8: hardware friendly)")
    p.add_argument("--min-width", type=int, default=1)
    p.add_argument("--method", choices=["bracket", "sgd"], default="bracket")
    p.add_argument("--device", default="cpu", help="latency: the device the table times (cpu, cuda)")
    p.add_argument("--batch", type=int, default=1, help="latency: images per timed batch")


def _add_train(sub) -> None:
    p = _command(sub, "train", cmd_train, "train a network with a preset's recipe; resumable with --out")
    _model_args(p, [*DATASETS, "synthetic"])
    p.add_argument("--recipe", default="cpu", choices=list(config.PRESETS), help="the preset's recipe (default cpu)")
    p.add_argument("--epochs", type=int, help="override the epoch count (step milestones scale along)")
    p.add_argument("--subset", type=int, help="train on this many images (class-balanced, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and data order")
    p.add_argument("--data-root", help="data root (default $NSLAB_DATA, else ~/.cache/nslab/data)")
    p.add_argument("--out", help="run directory: log, checkpoint, settings; rerun to resume")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--no-download", action="store_true", help="never download CIFAR")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def _add_latency(sub) -> None:
    p = _command(sub, "latency", cmd_latency, "forward-pass latency of a batch (mean/std ms over repeats)")
    _model_args(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--batch", type=int, default=100, help="batch size (default 100, the paper's)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeat", type=int, default=80, help="timed passes (default 80, the paper's)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads during the measurement (default 1)")


def _add_search(sub) -> None:
    p = _command(sub, "search", cmd_search, "architecture descent (Algorithms 1, 2 and 4); runs or resumes")
    _run_args(p)
    p.add_argument("--iterations", type=int, help="total descent iterations (default: the profile's)")
    p.add_argument("--pretrain-epochs", type=int, help="epochs of training before pruning (default: profile's)")
    p.add_argument("--channels-per-step", type=int, help="channels pruned per step (default: the profile's)")


def _add_baseline(sub) -> None:
    b = sub.add_parser("baseline", help="MorphNet (Taylor-FO) or Li et al. baseline")
    methods = b.add_subparsers(dest="method", required=True)
    m = _command(methods, "morphnet", cmd_morphnet,
                 "prune the start network to half its channels, then one factor per budget")
    _run_args(m)
    m.add_argument("--ratios", type=_csv(float, "numbers"), default=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
                   help="budgets as uniform ratios, comma-separated")
    li = _command(methods, "li", cmd_li, "L1-norm filter pruning of a trained start network, then fine-tuning")
    _run_args(li)
    g = li.add_mutually_exclusive_group()
    g.add_argument("--budget", type=float, help="target parameters")
    g.add_argument("--ratio", type=float, help="budget of the uniform network at this ratio (default: the "
                                               "profile's, 0.75)")
    li.add_argument("--epochs", type=int, help="cut the profile's training recipe to this many epochs")


def _add_reproduce(sub) -> None:
    p = _command(sub, "reproduce", cmd_reproduce, "run the notebooks with papermill: every figure and table",
                 description="Compute the profile's grid (every search iteration and training run the notebooks "
                             "ask for) with an executor, then execute notebooks/NN_*.ipynb in order with papermill "
                             "(executed copies in build/notebooks/); figures and tables go to figures/ (smoke: "
                             "build/smoke/figures/). Rerun the same command after any interruption: finished tasks "
                             "are kept, unfinished ones resume from their checkpoints.")
    p.add_argument("--profile", default="cpu", choices=list(config.PRESETS),
                   help="smoke: synthetic data, seconds; cpu: CIFAR-10 on a CPU (default); paper: the released "
                        "protocol (GPU)")
    p.add_argument("--only", type=_csv(str.strip, "notebook numbers"), metavar="NN[,NN]",
                   help="run only these notebooks, e.g. 03,05")
    p.add_argument("--data-root", help="dataset root passed to every notebook (default: $NSLAB_DATA or "
                                       "~/.cache/nslab/data)")
    p.add_argument("--figures-dir", help="where figures and tables go (default: figures/)")
    p.add_argument("--results-dir", help="cached runs (default: results/<profile>/)")
    p.add_argument("--build-dir", help="executed notebooks (default: build/notebooks/)")
    p.add_argument("--notebooks-dir", help=argparse.SUPPRESS)
    p.add_argument("--executor", default="inprocess", choices=["inprocess", "ray"],
                   help="how the grid (searches, training runs) is computed before the notebooks run: in this "
                        "process (default) or on a Ray cluster (pip install -e '.[ray]')")
    p.add_argument("--address", help="ray: the cluster to use, auto or HOST:PORT (default: start a local cluster)")
    p.add_argument("--num-cpus", type=int, help="ray: CPUs of the local cluster (default: all)")
    p.add_argument("--retries", type=int, help="run a failed task again this many times (default: the profile's)")
    p.add_argument("--grid-only", action="store_true", help="compute the grid, run no notebook")
    p.add_argument("--no-png", action="store_true",
                   help="write figures as HTML only (no Chrome/Chromium needed); without it a machine that cannot "
                        "export PNGs is refused before anything is computed")


def _add_plan(sub) -> None:
    p = _command(sub, "plan", cmd_plan, "the grid of a profile and its cost on this device (a short probe)",
                 description="Count the profile's searches, training runs, epochs and images, price each "
                             "configuration with a throughput probe of this device (seconds per image = a + b * "
                             "MACs per network), and estimate device-hours and wall-hours on N devices.")
    p.add_argument("--profile", default="cpu", choices=list(config.PRESETS), help="the preset (default cpu)")
    p.add_argument("--gpus", type=int, default=1, help="devices of the wall-hours estimate (default 1)")
    p.add_argument("--device", help="device probed (default: cuda when available)")
    p.add_argument("--results-dir", help="cached runs, compared with their estimates (default: results/<profile>/)")
    p.add_argument("--data-root", help="dataset root (default: $NSLAB_DATA or ~/.cache/nslab/data)")
    p.add_argument("--no-probe", action="store_true", help="count only, no timing")


def build_parser() -> argparse.ArgumentParser:
    """The ``nslab`` parser; every subcommand sets ``func`` (args -> dict) and ``prog`` (for messages)."""
    parser = _Parser(prog="nslab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "params", cmd_params, "exact parameter and MACs (per image) counts of a width vector")
    _model_args(p)
    p = _command(sub, "fit", cmd_fit, "fit the per-layer power law to a pruning trajectory (Algorithm 2)")
    p.add_argument("trajectory", help="trajectory CSV (nslab's, or the authors' header-less one)")
    p.add_argument("--arch", required=True, help=ARCH_HELP)
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS))
    p.add_argument("--convcut", action="store_true")
    p.add_argument("--out", help="write the fit as JSON here")
    for add in (_add_generate, _add_train, _add_latency, _add_search, _add_baseline, _add_reproduce, _add_plan):
        add(sub)
    return parser


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nslab`` command; returns the process exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad flag (2, message already on stderr)
        return e.code if isinstance(e.code, int) else 2
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only, whatever the package prints
            if getattr(args, "arch", None):  # a factory string is traced at the dataset's image size, registered
                resolve_arch(args.arch, args.dataset if getattr(args, "dataset", None) in DATASETS else None)
            out = args.func(args)
    except (ValueError, OSError, FloatingPointError) as e:
        print(f"{args.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (NotebookFailed, GridFailed) as e:
        print(f"{args.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130
    print(json.dumps(config.resolve(out), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
