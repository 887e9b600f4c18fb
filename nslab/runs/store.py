"""Training-run records: computed once, keyed by everything that changes them, one JSON per run.

A run is one network (method x arch x dataset x ratio x seed, its widths and its training recipe)
trained from scratch and measured (best test accuracy, parameters, latency). :class:`ResultsStore`
keeps each finished run as ``<root>/runs/<run_id>.json`` (written atomically) plus a consolidated
``<root>/results.csv``/``results.json`` over all runs; :meth:`ResultsStore.ensure` computes only the
runs that are missing, with a progress bar (stderr). The key (:attr:`RunSpec.key`) hashes the resolved
recipe, the widths, the evaluation protocol (test subset, latency settings, device kind) and the data's
fingerprint: any change gives new runs instead of silently reusing old ones.
"""

from __future__ import annotations

import csv
import io as _io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import io
from ..config import digest, file_part

__all__ = ["ResultsStore", "RunSpec"]


@dataclass(frozen=True, eq=False)
class RunSpec:
    """The settings of one training run; everything that changes its result is part of its key.

    Attributes:
        method: scaling method id (see :data:`METHOD_LABELS`).
        arch: architecture name.
        dataset: dataset name (``"synthetic"`` for smoke runs).
        ratio: the uniform ratio whose parameter count was the budget.
        seed: training seed (also seeds the initialisation).
        widths: (L,) width vector trained.
        recipe: the training recipe as a dict (``Recipe.to_dict()``), or any JSON-able settings.
        convcut: conv shortcuts in every block.
        tags: extra settings as sorted ``(name, value)`` pairs, e.g. ``(("iteration", 15),
            ("pretrain_epochs", 10))``; they become columns of the run's record.
        protocol: how the run is evaluated and where: test subset, latency protocol, device kind, the
            data's fingerprint, a baseline's own settings. Part of the key, not a column.
    """

    method: str
    arch: str
    dataset: str
    ratio: float
    seed: int
    widths: tuple[int, ...]
    recipe: Mapping[str, Any] = field(default_factory=dict)
    convcut: bool = False
    tags: tuple[tuple[str, Any], ...] = ()
    protocol: Mapping[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def settings(self) -> dict:
        """All settings as a JSON-able dict (the key's preimage)."""
        return {
            "method": self.method,
            "arch": self.arch,
            "dataset": self.dataset,
            "ratio": float(self.ratio),
            "seed": int(self.seed),
            "widths": [int(w) for w in self.widths],
            "recipe": dict(self.recipe),
            "convcut": bool(self.convcut),
            **{k: v for k, v in self.tags},
        }

    @property
    def key(self) -> str:
        """16 hex digits of the SHA-1 of the canonical JSON of :meth:`settings` and the protocol."""
        return digest(self.settings(), self.protocol)

    @property
    def run_id(self) -> str:
        """A readable, unique file stem: ``<method>_<arch>_<dataset>_r<ratio>_s<seed>_<key[:8]>`` (a factory
        string's ``:`` as ``-``, :func:`nslab.config.file_part`)."""
        return file_part(f"{self.method}_{self.arch}_{self.dataset}_r{self.ratio:g}_s{self.seed}_{self.key[:8]}")


class ResultsStore:
    """A results directory: ``runs/<run_id>.json`` per finished run, ``results.csv``/``.json`` over all.

    Args:
        root: the results directory (created on first write).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, spec: RunSpec) -> Path:
        """Where the record of ``spec`` lives."""
        return self.root / "runs" / f"{spec.run_id}.json"

    def work_dir(self, spec: RunSpec) -> Path:
        """A scratch directory for the run's checkpoints (lets an interrupted run resume)."""
        return self.root / "work" / spec.run_id

    def get(self, spec: RunSpec) -> dict | None:
        """The finished record of ``spec``, or ``None``."""
        p = self.path(spec)
        if not p.exists():
            return None
        rec = io.read_json(p)
        return rec if rec.get("key") == spec.key else None

    def put(self, spec: RunSpec, result: Mapping[str, Any]) -> dict:
        """Store ``result`` (the measured values) for ``spec``; returns the full record."""
        rec = {
            **spec.settings(),
            **{k: v for k, v in spec.tags},
            **dict(result),
            "protocol": dict(spec.protocol),
            "key": spec.key,
            "run_id": spec.run_id,
        }
        io.write_json(self.path(spec), rec)
        return rec

    def ensure(
        self,
        specs: Sequence[RunSpec],
        compute: Callable[[RunSpec], Mapping[str, Any]],
        desc: str = "training runs",
        progress: bool = True,
    ) -> list[dict]:
        """Records of all ``specs``, computing (in order, with a tqdm bar) only the missing ones.

        Each record is written as soon as its run finishes, so an interruption loses at most the run in
        progress (and that one resumes from its checkpoints when ``compute`` uses :meth:`work_dir`).
        Duplicate specs are computed once. The consolidated table is rewritten at the end.

        Args:
            specs: the runs wanted.
            compute: ``spec -> {"acc": ..., "params": ..., ...}`` for one missing run.
            desc: progress-bar label.
            progress: show the bar.

        Returns:
            One record per spec, in order.
        """
        from tqdm.auto import tqdm

        unique = {s.key: s for s in specs}  # by key: tags may hold dicts, which do not hash
        done = {k: self.get(s) for k, s in unique.items()}
        missing = [s for k, s in unique.items() if done[k] is None]
        if missing:
            bar = tqdm(missing, desc=f"{desc} ({len(unique) - len(missing)} cached)", disable=not progress, unit="run")
            for s in bar:
                bar.set_postfix_str(s.run_id[:48])
                t0 = time.perf_counter()
                result = dict(compute(s))
                result.setdefault("seconds", time.perf_counter() - t0)
                done[s.key] = self.put(s, result)
            self.write_table()
        return [done[s.key] for s in specs]

    def records(self) -> list[dict]:
        """Every finished record in the directory (sorted by run id)."""
        d = self.root / "runs"
        return [io.read_json(p) for p in sorted(d.glob("*.json"))] if d.is_dir() else []

    def write_table(self) -> Path:
        """Rewrite ``results.json`` and ``results.csv`` (one row per run, widths space-separated)."""
        recs = self.records()
        io.write_json(self.root / "results.json", recs)
        cols = list(dict.fromkeys(k for r in recs for k in r if k not in ("recipe", "protocol")))
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in recs:
            w.writerow([" ".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c, "") for c in cols])
        return io.atomic_write_text(self.root / "results.csv", buf.getvalue())
