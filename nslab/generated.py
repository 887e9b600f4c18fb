"""Generated widths as a file (``widths.json``), and the way back from it to a module.

``nslab generate --run RUN --budget B --out widths.json`` writes :func:`generated_record`'s dict: the
architecture (and, for a traced network, the factory string that rebuilds it), the input size and dataset,
the width groups' names, the widths, their exact parameter and MAC counts, the budget and which fit of the
search produced them. :func:`load_generated` re-traces the factory, checks that the network still has the same
groups, and builds it at those widths. A search run of a traced network records only the factory string;
:func:`open_run` traces it again (at the run's dataset's image size) before reading the run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from . import io
from .data import dataset_spec
from .models import create_model, macs, param_count, resolve_arch
from .models.traced_arch import traced_network
from .scaling import powerlaw
from .search.descent import SETTINGS, SearchRun, load_run

__all__ = ["FORMAT", "generated_record", "law_source", "load_generated", "open_run", "write_generated"]

FORMAT = 1  # the version of widths.json's layout; a file of another version is refused
_KEYS = ("arch", "dataset", "groups", "widths")


def open_run(run_dir: str | os.PathLike) -> SearchRun:
    """:func:`nslab.search.descent.load_run`, after resolving the run's architecture (a factory string recorded
    by a search of a traced network is traced again at the run's dataset's image size and registered).

    Raises:
        ValueError: not a run directory, or an architecture that no longer resolves.
    """
    path = Path(run_dir) / SETTINGS
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a search run directory (no {SETTINGS})")
    s = io.read_json(path)
    resolve_arch(s["arch"], s["dataset"])
    return load_run(run_dir)


def law_source(run: str | None = None, fit: str | None = None, published: str | None = None,
               iteration: int | None = None, arch: str | None = None, dataset: str | None = None,
               convcut: bool = False) -> tuple[powerlaw.PowerLaw, str | None, str | None, bool, int | None]:
    """The power law to generate widths from (a search run, a fit file or a published fit), and its network.

    Args:
        run, fit, published: exactly one: a search run directory, a fit JSON (``nslab fit``'s or the authors'
            ``{"fits": [...]}``), or a published fit's name.
        iteration: which fit (1-based; default: the run's or file's last, the published run's 15th).
        arch, dataset, convcut: the caller's; a run's own replace them, a file's or published fit's fill them in.

    Returns:
        ``(law, arch, dataset, convcut, iteration)``; ``iteration`` is ``None`` where the file does not say.
    """
    if run:
        r = open_run(run)
        it = r.iteration(-1 if iteration is None else iteration)
        return it.law, r.arch, r.dataset, r.convcut, it.index
    if published:
        law, a, d = powerlaw.published_fit(published, iteration or 15)
        return law, arch or a, dataset or d, convcut, iteration or 15
    if not fit:
        raise ValueError("generate needs a law: --fit FIT.json, --published NAME or --run RUN_DIR")
    meta = io.read_json(fit)
    law = powerlaw.load_fit(fit, None if iteration is None else iteration - 1)
    if isinstance(meta, dict):
        arch, dataset = arch or meta.get("arch"), dataset or meta.get("dataset")
        convcut, iteration = convcut or bool(meta.get("convcut", False)), iteration or meta.get("iteration")
    return law, arch, dataset, convcut, iteration


def generated_record(arch: str, dataset: str, widths: Sequence[int], convcut: bool = False, **meta) -> dict:
    """What ``widths.json`` holds for ``widths`` of ``arch`` on ``dataset``.

    Args:
        arch: a registered architecture or a factory string (see :func:`nslab.models.resolve_arch`).
        dataset: the dataset name (sets K and the image size).
        widths: (L,) one width per group, in the architecture's order.
        convcut: the paper networks' 1x1 conv shortcuts.
        **meta: recorded as given after the counts (``budget``, ``iteration``, ``run``, ...).

    Returns:
        ``format``, ``arch``, ``factory`` (the factory string of a traced network, else ``None``), ``input_size``
        (C, H, W), ``dataset``, ``num_classes``, ``convcut``, ``groups`` (names), ``widths``, exact ``params`` and
        ``macs`` (per image), then ``meta``.
    """
    spec = dataset_spec(dataset)
    a = resolve_arch(arch, spec)
    t = traced_network(a)
    widths = [int(w) for w in widths]
    return {"format": FORMAT, "arch": a.name, "factory": a.name if t is not None and ":" in a.name else None,
            "input_size": [3, spec.image_size, spec.image_size], "dataset": spec.name,
            "num_classes": spec.num_classes, "convcut": bool(convcut), "groups": list(a.width_names),
            "widths": widths, "params": param_count(a.name, widths, spec, convcut),
            "macs": macs(a.name, widths, spec, convcut), **meta}


def write_generated(path: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` (from :func:`generated_record`) to ``path`` atomically: on any error the file already
    there is untouched."""
    return io.write_json(path, record)


def load_generated(path: str | os.PathLike) -> nn.Module:
    """The network a ``widths.json`` describes, freshly initialised at its widths.

    Re-traces the file's factory (or takes its registered architecture) at the file's dataset, checks that the
    network's width groups are the ones the file names, and builds it.

    Args:
        path: a file written by ``nslab generate --out`` (:func:`write_generated`).

    Returns:
        A CPU float32 module mapping (N, 3, H, W) images to (N, K) logits, K = the file's ``num_classes``.

    Raises:
        ValueError: one line: a missing or malformed file, a factory that no longer traces, groups that differ
            from the file's (the network changed since), or widths the network cannot take.
    """
    r = io.read_json(path)
    missing = [k for k in _KEYS if not isinstance(r, dict) or k not in r]
    if missing or r.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{path} is not a generated-widths file of format {FORMAT} (missing {missing or 'none'}, "
                         f"format {r.get('format') if isinstance(r, dict) else None!r}); write one with "
                         "`nslab generate ... --out FILE`")
    a = resolve_arch(r.get("factory") or r["arch"], r["dataset"])
    names, want = list(a.width_names), list(r["groups"])
    if names != want:
        i = next((i for i, (x, y) in enumerate(zip(names, want)) if x != y), min(len(names), len(want)))
        now, then = (names[i] if i < len(names) else "<none>"), (want[i] if i < len(want) else "<none>")
        raise ValueError(f"{path}: {a.name} now has {len(names)} width groups, the file names {len(want)}; first "
                         f"difference at entry {i}: network {now!r}, file {then!r} (regenerate the widths)")
    return create_model(a.name, r["widths"], r["dataset"], bool(r.get("convcut", False)))
