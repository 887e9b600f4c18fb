"""Coverage: which torchvision (and timm) classification networks nslab traces, counts exactly and searches.

For every model of ``torchvision.models.list_models(module=torchvision.models)`` (and, when timm is installed, a
few timm ones; timm is an optional extra, skipped with a note without it), through the path a user's
``nslab search torchvision:NAME`` takes (:func:`nslab.models.resolve_arch` at 32x32):

- groups: the coupled channel groups found (entries of the width vector) and the discovery seconds
  (``Architecture.from_module``: build, probe, Torch-Pruning's dependency graph, the compiled counts and their
  check at a second width vector);
- counts exact: the network built on the meta device at 2 random width vectors (0.3x..1.6x the defaults, in each
  group's multiple): ``params(w) == sum(p.numel())`` and ``macs(w) == FlopCounterMode total / 2``;
- shrinks exactly: how many entries a search rebuilds smaller (:attr:`~nslab.models.Architecture.shrinkable`), and
  whether the rebuilt network computes what the masked one did (40% of each entry's channels pruned at random, at
  the smoke search's start widths, per-channel parameters drawn in [0.5, 1.5] and BatchNorm statistics far from 0
  and 1; logits within 1e-4 relative);
- search (with ``--search``): a 1-iteration smoke architecture descent on 40 synthetic images (coarse steps: about
  40 prune steps from 1/8 width, or wider where a group would keep under 4 channels or one multiple of its grouped
  layers), which must fit a law and generate the next width vector, built on the meta device with the solver's
  parameters and MACs;
- or the one-line error nslab gives (naming the op or module), never a count.

Usage: ``python bench/coverage.py [--models resnet18,densenet121] [--search] [--json FILE]`` (``--smoke``: three
small models, one of them refused, for tests/test_bench.py). Prints a markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torchvision  # imported before timing: the first import costs ~1.5 s, once per process

from nslab import io
from nslab.config import preset
from nslab.data import synthetic_data
from nslab.device import torch_threads
from nslab.models import Architecture, create_model, get_arch, measured_counts, resolve_arch, uniform_widths, unregister
from nslab.models.traced_arch import width_multiples
from nslab.search.channels import apply_masks, shrink_model
from nslab.search.pruner import balanced_keep
from nslab.views.network import random_widths

SMOKE = ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:shufflenet_v2_x0_5"]
TIMM = ["timm:resnet18", "timm:efficientnet_b0", "timm:mobilenetv3_small_100", "timm:convnext_atto",
        "timm:regnetx_002", "timm:densenet121"]
CLASSES = 10
SHRINK_TOL = 1e-4  # largest |shrunk - masked| / max |masked| of the logits that counts as the same function


def model_names(timm_models: list[str]) -> tuple[list[str], str | None]:
    """Every torchvision classification model as a factory string, then ``timm_models`` when timm imports; and a
    note when it does not."""
    names = [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    try:
        import timm  # noqa: F401 -- only whether it is installed
    except ImportError:
        return names, "timm is not installed (pip install -e '.[models]'): its models were skipped"
    return names + timm_models, None


def counts_exact(arch: Architecture, seed: str, vectors: int = 2) -> tuple[bool, str]:
    """Whether the compiled counts equal the built module's at ``vectors`` random width vectors, and a note."""
    rng = random.Random(seed)
    for _ in range(vectors):
        w = random_widths(arch.name, rng)
        built = measured_counts(arch.name, w, "cifar10")  # the built module, on the meta device
        compiled = (arch.params(w, CLASSES, "cifar", False), arch.macs(w, CLASSES, "cifar", False, 32))
        if built != compiled:
            return False, f"at {w}: compiled {compiled}, built {built}"
    return True, f"{vectors}/{vectors}"


def search_ratio(name: str) -> float:
    """The smoke search's start: the smoke preset's ratio, or wider where a group would keep under 4 channels or
    one multiple of what its grouped layers need (a group at 1 channel never loses one)."""
    a = get_arch(name)
    return min(1.0, max(preset("smoke").search.start_ratio,
                        *(max(4, m) / w for w, m in zip(a.default_widths, width_multiples(a)))))


def shrink_exact(name: str) -> tuple[int, float]:
    """How many entries shrink physically, and the largest difference between the masked network and the shrunk
    one (eval mode, BatchNorm statistics and biases drawn far from 0 and 1) with 40% of each entry's channels
    pruned at random (a grouped entry keeps equal blocks, the rest masked), at the smoke search's start widths, every
    per-channel parameter drawn in [0.5, 1.5]."""
    a, w = get_arch(name), uniform_widths(name, search_ratio(name))
    torch.manual_seed(0)
    model = create_model(name, w, "cifar10").eval()
    with torch.no_grad():
        for p in model.parameters():  # scales (a BatchNorm's 1s, a layer scale's 1e-6) that let every channel count
            if p.numel() == max(p.shape, default=1):  # one channel dimension: (C,), a layer scale's (C, 1, 1)
                p.uniform_(0.5, 1.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.bias.uniform_(-1, 1)
    gen = torch.Generator().manual_seed(0)
    alive = [torch.rand(n, generator=gen) < 0.6 for n in w]
    for al in alive:
        al[0] = True
    mult = width_multiples(a)
    keep = {i: k for i in sorted(a.shrinkable) if (k := balanced_keep(alive[i], mult[i])) is not None}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = apply_masks(model, {i: al.float() for i, al in enumerate(alive)})
        ref = model(x)
        h.remove()
        new, _, _ = shrink_model(model, name, w, keep, "cifar10")
        apply_masks(new, {i: (alive[i][keep[i]] if i in keep else alive[i]).float() for i in range(len(w))})
        out = new(x)
    return len(a.shrinkable), float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def smoke_search(name: str) -> str:
    """A 1-iteration smoke descent of ``name`` on 40 synthetic images whose generated widths must build with the
    solver's counts; returns its rows and fit."""
    from dataclasses import replace

    from nslab.search.descent import architecture_descent

    s = preset("smoke").search
    # start where every group keeps >= 4 channels and one multiple of its grouped layers (search_ratio; the
    # trajectory records a row only once every group has lost one); ~40 prune steps whatever the network's size
    ratio = search_ratio(name)
    total = sum(uniform_widths(name, ratio))
    s = replace(s, iterations=1, start_ratio=ratio,
                prune=replace(s.prune, channels_per_step=max(2, math.ceil(total / 40))))
    data = synthetic_data(train_per_class=4, test_per_class=1)
    with tempfile.TemporaryDirectory() as d:
        run = architecture_descent(name, "cifar10", data, s, d, progress=False)
    it = run.iterations[0]
    # the generated network must build, with the counts the solver gave it (on the meta device)
    gen = it.generated
    built = measured_counts(name, gen.widths, "cifar10")
    compiled = (gen.params, get_arch(name).macs(gen.widths, CLASSES, "cifar", False, 32))
    if built != compiled:
        raise ValueError(f"the generated widths {gen.widths} build to {built} (params, MACs), not {compiled}")
    return f"{len(it.widths)} rows, median R2 {float(sorted(it.law.r2)[len(it.law.r2) // 2]):.2f}"


def published_size(name: str) -> int | None:
    """Parameters of a torchvision model by its weights' metadata (no build); ``None`` when it has none."""
    if not name.startswith("torchvision:"):
        return None
    sizes = [w.meta.get("num_params", 0) for w in torchvision.models.get_model_weights(name.split(":")[1])]
    return min(sizes) if sizes else None


def measure(name: str, search: bool, max_params: float | None = None) -> dict:
    """One row: groups and seconds, exact counts, the search, or the error (or why it was not measured)."""
    row = {"model": name, "groups": None, "discovery_s": None, "counts_exact": None, "search": None, "error": None}
    size = published_size(name)
    if max_params is not None and size is not None and size > max_params:
        row["skipped"] = f"not measured: {size / 1e6:.0f}M parameters, over --max-params {max_params:g}"
        return row
    t = time.perf_counter()
    try:
        arch = resolve_arch(name, (3, 32, 32))
    except ValueError as e:
        row.update(discovery_s=round(time.perf_counter() - t, 2), error=str(e))
        return row
    row.update(groups=len(arch.groups), discovery_s=round(time.perf_counter() - t, 2))
    try:
        row["counts_exact"], row["counts_note"] = counts_exact(arch, name)
        if row["counts_exact"]:
            row["shrinkable"], row["shrink_diff"] = shrink_exact(name)
        if search and row["counts_exact"]:
            row["search"] = smoke_search(name)
    except Exception as e:  # noqa: BLE001 -- recorded in the table: the survey goes on to the next model
        row["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        if not isinstance(e, ValueError):  # not nslab's one-line refusal: where it was raised, for a bug report
            frame = traceback.extract_tb(e.__traceback__)[-1]
            row["error"] += f" (at {Path(frame.filename).name}:{frame.lineno}, {frame.name})"
    finally:
        unregister(name)
    return row


def table(rows: list[dict], search: bool) -> str:
    """The markdown table of ``rows``."""
    head = ("| model | groups | discovery (s) | counts exact | shrinks exactly | "
            + ("search smoke-runs | " if search else "") + "error |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        exact = {True: "yes", False: f"**no**: {r.get('counts_note')}", None: ""}[r["counts_exact"]]
        cells = [f"`{r['model']}`", r["groups"] or "", "" if r["discovery_s"] is None else r["discovery_s"], exact,
                 shrink_cell(r)]
        if search:
            cells.append(("yes: " + r["search"]) if r["search"] else "")
        cells.append((r["error"] or r.get("skipped") or "").replace("|", "\\|"))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def shrink_cell(r: dict) -> str:
    """``yes: k of L groups`` when the shrunk network computes the masked one's outputs (relative 1e-4), else the
    difference; empty when not measured."""
    if r.get("shrinkable") is None:
        return ""
    ok = r["shrink_diff"] <= SHRINK_TOL
    return (f"yes: {r['shrinkable']} of {r['groups']} groups" if ok else f"**no**: {r['shrink_diff']:.1e}") + (
        "" if r["shrinkable"] == r["groups"] else " (the rest masked)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated factory strings (default: every torchvision model, then timm's)")
    ap.add_argument("--timm-models", default=",".join(TIMM), help="the timm models surveyed when timm is installed")
    ap.add_argument("--search", action="store_true", help="also a 1-iteration smoke search per model (slow)")
    ap.add_argument("--smoke", action="store_true", help=f"only {', '.join(SMOKE)} (seconds; tests)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-params", type=float, help="skip (and say so) torchvision models over this many parameters")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    note = None
    if args.smoke:
        names = SMOKE
    elif args.models:
        names = args.models.split(",")
    else:
        names, note = model_names(args.timm_models.split(","))
    rows, t0 = [], time.perf_counter()
    with torch_threads(args.threads):
        for name in names:
            rows.append(measure(name, args.search, args.max_params))
            r = rows[-1]
            print(f"{name:40s} groups {r['groups']!s:>4} {r['discovery_s']!s:>7} s exact {r['counts_exact']!s:5} "
                  f"search {r['search']!s:22.22} {(r['error'] or r.get('skipped') or '')[:90]}", flush=True)
            if args.json:  # after every model: an interrupted survey keeps what it measured
                io.write_json(args.json, summarise(rows, note, args.threads, time.perf_counter() - t0))
    print("\n" + table(rows, args.search) + ("\n\n" + note if note else "") + "\n")
    print(json.dumps(summarise(rows, note, args.threads, time.perf_counter() - t0)))


def summarise(rows: list[dict], note: str | None, threads: int, seconds: float) -> dict:
    """The JSON summary of a survey: counts of exact, refused and searched models, then every row."""
    ok = [r for r in rows if r["counts_exact"]]
    return {"models": len(rows), "exact": len(ok), "refused": sum(r["error"] is not None for r in rows),
            "shrink_exact": sum(r.get("shrink_diff") is not None and r["shrink_diff"] <= SHRINK_TOL for r in rows),
            "searched": sum(r["search"] is not None for r in rows), "skipped": sum("skipped" in r for r in rows),
            "note": note, "threads": threads,
            "seconds": round(seconds, 1), "max_discovery_s": max((r["discovery_s"] for r in ok), default=None),
            "rows": rows}


if __name__ == "__main__":
    main()
