"""A request resolved once: the exact settings, data source, key and run directory of a task.

:func:`settings_for` is where the pipeline resolves a preset and a setting (the one resolution,
:meth:`nslab.config.Preset.resolve`, given the dataset's variant); :func:`search_spec` turns a search a notebook
asks for into a :class:`SearchSpec` (its resolved :class:`~nslab.config.SearchSettings`, data source and run
directory). Nothing here loads data until a key needs the data's fingerprint, and then only once per dataset:
:class:`DataSource` keeps the fingerprint of real data on disk beside the results (keyed by a stamp of the
data root's files), so listing and checking a grid decode no image; loading the data refreshes it.

Latency of a preset that packs several tasks on one device (:func:`shares_device`) is measured by a pass of
its own, alone on the device, and kept as a latency record (:func:`latency_key`, :func:`read_latency`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import io
from ..config import Preset, Recipe, SearchSettings, Setting, TaskSettings, digest, file_part, preset, resolve
from ..device import resolve_device
from ..paths import Paths, resolve_data_root

__all__ = ["DataSource", "Fingerprinted", "LATENCY_PROTOCOL", "SearchSpec", "alone_latencies", "data_of",
           "device_kind", "latency", "latency_key", "measure_alone", "read_latency", "recipe", "search_spec",
           "settings_for", "shares_device", "write_latency"]


def settings_for(p: Preset, setting: Setting, pretrain_epochs: int | None = None, iterations: int | None = None
                 ) -> TaskSettings:
    """The exact search and recipe of ``setting`` under ``p`` (:meth:`~nslab.config.Preset.resolve`, with the
    variant of the setting's dataset looked up in :mod:`nslab.data.specs`)."""
    from ..data import dataset_spec

    return p.resolve(setting, dataset_spec(setting.dataset).variant, pretrain_epochs, iterations)


def recipe(name: str | Preset, dataset: Any = "cifar10") -> Recipe:
    """The training recipe of preset ``name`` for ``dataset`` (a name, ``"synthetic"``, or a spec).

    The dataset's variant (CIFAR or TinyImageNet) picks the protocol; ``"synthetic"`` counts as CIFAR.

    Raises:
        ValueError: unknown preset or dataset name (the message lists the accepted ones).
    """
    from ..data import dataset_spec

    p = preset(name)
    if hasattr(dataset, "variant"):
        return p.recipe(dataset.variant)
    return p.recipe("cifar" if dataset == "synthetic" else dataset_spec(dataset).variant)


def device_kind() -> str:
    """The kind (``"cuda"``, ``"cpu"``) of the device a run picks here: part of every key."""
    return resolve_device(None).type


@lru_cache(maxsize=4)
def _load(name: str, root: str | None, synthetic: bool):
    from ..data import load_dataset, smoke_data

    return smoke_data(name) if synthetic else load_dataset(name, root, progress=False)


def _stamp(root: str) -> str:
    """Names, sizes and mtimes of the data root's entries two levels deep: changes when files come or go."""
    rows = []
    base = Path(root)
    for d in [base, *(x for x in sorted(base.iterdir()) if x.is_dir())] if base.is_dir() else [base]:
        for x in sorted(d.iterdir()) if d.is_dir() else [d]:
            st = x.stat()
            rows.append(f"{x.relative_to(base.parent)}:{st.st_size}:{st.st_mtime_ns}")
    return digest(rows)


@dataclass(frozen=True)
class DataSource:
    """Where a setting's data comes from; loads it only when asked.

    Attributes:
        dataset: dataset name.
        root: the data root (``None``: the loader's default place).
        synthetic: synthetic data of the dataset's shape (``nslab.data.smoke_data``).
        memo: the directory that keeps the fingerprint of real data (the results directory).
    """

    dataset: str
    root: str | None
    synthetic: bool
    memo: str | None = None

    def load(self):
        """The :class:`~nslab.data.ImageData` (once per process); refreshes the kept fingerprint."""
        data = _load(self.dataset, self.root, self.synthetic)
        path = self._memo_path()
        if path is not None:
            fp, stamp = data.fingerprint(), _stamp(self._where())
            saved = io.read_json(path) if path.is_file() else None
            if saved != {"stamp": stamp, "fingerprint": fp}:
                io.write_json(path, {"stamp": stamp, "fingerprint": fp})
        return data

    def _where(self) -> str:
        # the folder the loader reads (the root given, else $NSLAB_DATA, else nslab's cache): a run that relies
        # on the environment's data root keeps its fingerprint too
        return str(resolve_data_root(self.root))

    def _memo_path(self) -> Path | None:
        if self.synthetic or self.memo is None or not os.path.exists(self._where()):
            return None
        return Path(self.memo) / "data" / f"{self.dataset}_{digest(os.path.realpath(self._where()), n=10)}.json"

    def kept_fingerprint(self) -> dict | None:
        """The fingerprint kept on disk, while the data root's stamp still matches (else ``None``)."""
        path = self._memo_path()
        if path is None or not path.is_file():
            return None
        saved = io.read_json(path)
        return saved["fingerprint"] if saved.get("stamp") == _stamp(self._where()) else None

    def fingerprint(self, load: bool = True) -> dict | None:
        """:meth:`nslab.data.ImageData.fingerprint` of the data: kept, else loaded (``load=False``: ``None``)."""
        if not self.synthetic:
            kept = self.kept_fingerprint()
            if kept is not None:
                return kept
        return self.load().fingerprint() if load or self.synthetic else None


def data_of(p: Preset, setting: Setting, paths: Paths) -> DataSource:
    """The :class:`DataSource` of ``setting`` under ``p`` (synthetic under a synthetic search)."""
    root = str(paths.data_root) if paths.data_root else None
    return DataSource(setting.dataset, root, p.search.synthetic, str(paths.results))


class Fingerprinted:
    """Stands in for the data where a key needs only its fingerprint."""

    def __init__(self, fp: dict):
        self._fp = fp

    def fingerprint(self) -> dict:
        return dict(self._fp)


@dataclass(frozen=True)
class SearchSpec:
    """One search run directory, resolved: ``<results>/descent/<arch>_<dataset>_pe<P_e>_<key>``.

    Attributes:
        arch, dataset: the setting's.
        settings: the resolved search (``iterations``: how many the request searches; not part of the key).
        data: where its data comes from.
        results: the results directory.
        device: the device kind of the key.
    """

    arch: str
    dataset: str
    settings: SearchSettings
    data: DataSource
    results: str
    device: str

    @property
    def name(self) -> str:
        """``<arch>_<dataset>_pe<P_e>``: the run directory's readable part."""
        return file_part(f"{self.arch}_{self.dataset}_pe{self.settings.prune.pretrain_epochs}")

    @property
    def ident(self) -> str:
        """What identifies the run without its data's fingerprint (a grid's task key): name plus a digest."""
        s = {k: v for k, v in resolve(self.settings).items() if k != "iterations"}
        src = (self.data.dataset, self.data.root, self.data.synthetic)
        return f"{self.name}_{digest(self.arch, self.dataset, s, src, self.device, n=10)}"

    def run_dir(self, load: bool = True) -> Path | None:
        """The run directory (its key hashes the resolved search, the data's fingerprint and the device kind);
        ``None`` when the fingerprint is not known and ``load`` is false."""
        from ..search.descent import resolved_settings

        fp = self.data.fingerprint(load)
        if fp is None:
            return None
        key = digest(resolved_settings(self.arch, self.dataset, False, self.settings, 0, Fingerprinted(fp),
                                       self.device), n=10)
        return Path(self.results) / "descent" / f"{self.name}_{key}"


def search_spec(p: Preset, setting: Setting, paths: Paths, pretrain_epochs: int | None = None,
                iterations: int | None = None) -> SearchSpec:
    """The :class:`SearchSpec` of ``setting``'s search with P_e ``pretrain_epochs`` and ``iterations``."""
    ss = settings_for(p, setting, pretrain_epochs, iterations).search
    return SearchSpec(setting.arch, setting.dataset, ss, data_of(p, setting, paths), str(paths.results),
                      device_kind())


# --------------------------------------------------------------------------------------------------------
# latency measured alone on the device

LATENCY_PROTOCOL = "alone-v1"
"""How a shared-device preset's latency is measured: a task of its own holding a whole device, a fresh
network of the run's widths (latency does not depend on the weights), the preset's latency settings."""


def shares_device(p: Preset) -> bool:
    """Whether ``p`` packs several tasks on one GPU (``0 < resources.gpus < 1``): then a training run's own
    timing would include the others' load, and latency is measured by a pass of its own."""
    return 0 < p.resources.gpus < 1


def latency_key(p: Preset, arch: str, dataset: str, widths: tuple[int, ...], convcut: bool, device: str) -> str:
    """The key of a latency record: the network, the latency settings, the protocol and the device kind."""
    return digest({"arch": arch, "dataset": dataset, "widths": list(widths), "convcut": bool(convcut),
                   "latency": resolve(p.latency), "protocol": LATENCY_PROTOCOL, "device": device})


def _latency_path(results: str | os.PathLike, key: str) -> Path:
    return Path(results) / "latency" / f"{key}.json"


def read_latency(results: str | os.PathLike, key: str) -> dict | None:
    """The latency record of ``key`` (``{"latency_ms", "latency_std_ms", ...}``), or ``None``."""
    path = _latency_path(results, key)
    rec = io.read_json(path) if path.is_file() else None
    return rec if rec is not None and rec.get("key") == key else None


def write_latency(results: str | os.PathLike, key: str, record: dict[str, Any]) -> dict:
    """Write the latency record of ``key`` atomically; returns it."""
    rec = {**record, "protocol": LATENCY_PROTOCOL, "key": key}
    io.write_json(_latency_path(results, key), rec)
    return rec


def latency(model, size: int, device: str, p: Preset) -> tuple[float, float]:
    """``(mean, std)`` ms of ``model``'s forward pass of a batch under ``p``'s latency protocol."""
    import torch

    from ..scaling.latency import measure_latency

    # Training leaves the model channels-last; measure the plain layout, as a deployed model would
    # run (and torch's one-thread CPU kernels corrupt memory on channels-last tiny MobileNetV2s).
    model = model.to(memory_format=torch.contiguous_format)
    lat = p.latency
    return measure_latency(model, (3, size, size), device, batch=lat.batch, warmup=lat.warmup, repeat=lat.repeat,
                           protocol=lat.protocol)


def measure_alone(p: Preset, s, device: str | None = None) -> dict:
    """The latency record of ``s``'s network (a :class:`~nslab.runs.store.RunSpec`) under ``p``'s protocol,
    timed on a fresh network of its widths (latency does not depend on the weights); ``device``: this
    machine's kind by default."""
    from ..data import dataset_spec
    from ..models import create_model

    device = device or str(device_kind())
    size = dataset_spec(s.dataset).image_size
    ms, sd = latency(create_model(s.arch, list(s.widths), s.dataset, s.convcut), size, device, p)
    return {"latency_ms": ms, "latency_std_ms": sd, "device": device}


def alone_latencies(p: Preset, records: list[dict], specs: Sequence, results: str | os.PathLike) -> list[dict]:
    """``records`` (of ``specs``, :class:`~nslab.runs.store.RunSpec` s) with the latency measured alone on the
    device (a shared-device preset) read from its records under :func:`latency_key`, measuring the missing
    ones now (a notebook's process has the device to itself)."""
    out = []
    for r, s in zip(records, specs, strict=True):
        key = latency_key(p, s.arch, s.dataset, s.widths, s.convcut, device_kind())
        lat = read_latency(results, key) or write_latency(results, key, measure_alone(p, s))
        out.append({**r, "latency_ms": lat["latency_ms"], "latency_std_ms": lat["latency_std_ms"],
                    "latency_protocol": LATENCY_PROTOCOL})
    return out
