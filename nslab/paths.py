"""Where nslab keeps things on disk: the cache directory, the data root, a checkout's results and figures.

The single home of path resolution, read by every other module. It must import nothing from the rest of
nslab, so that any module can depend on it without creating an import cycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Paths", "default_cache_dir", "paths", "project_root", "resolve_data_root"]


def default_cache_dir() -> Path:
    """nslab's cache directory: ``$NSLAB_CACHE``, else ``$XDG_CACHE_HOME/nslab``, else ``~/.cache/nslab``."""
    if os.environ.get("NSLAB_CACHE"):
        return Path(os.environ["NSLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nslab"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root to use: ``data_root`` if given, else ``$NSLAB_DATA``, else ``<cache dir>/data``.

    Args:
        data_root: an explicit folder (``~`` is expanded); ``None`` falls back to the environment.

    Returns:
        The folder, not necessarily existing; ``<cache dir>`` is :func:`default_cache_dir`, so
        ``$NSLAB_CACHE`` and ``$XDG_CACHE_HOME`` move the default data root along with the cache.
    """
    if data_root is not None:
        return Path(data_root).expanduser()
    if os.environ.get("NSLAB_DATA"):
        return Path(os.environ["NSLAB_DATA"]).expanduser()
    return default_cache_dir() / "data"


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The checkout holding ``notebooks/`` and ``pyproject.toml``, searched upwards from ``start`` (cwd).

    Notebooks run from ``notebooks/`` in JupyterLab and from the root under papermill; both resolve to
    the same root. Outside a checkout, the start directory itself.
    """
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "notebooks").is_dir():
            return d
    return here


@dataclass(frozen=True)
class Paths:
    """Where a notebook reads and writes.

    Attributes:
        figures: figures and tables (``figures/``; smoke: ``build/smoke/figures/`` so it never overwrites
            real results).
        results: cached runs (``results/<profile>/``, git-ignored).
        data_root: datasets (``None``: nslab's default, ``$NSLAB_DATA`` or ``~/.cache/nslab/data``).
    """

    figures: Path
    results: Path
    data_root: Path | None


def paths(profile_name: str, figures_dir: str | os.PathLike | None = None,
          results_dir: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None) -> Paths:
    """Resolve a notebook's ``FIGURES_DIR``/``RESULTS_DIR``/``DATA_ROOT`` parameters (``None``: defaults)."""
    root = project_root()
    default_fig = root / "build" / "smoke" / "figures" if profile_name == "smoke" else root / "figures"
    return Paths(Path(figures_dir) if figures_dir else default_fig,
                 Path(results_dir) if results_dir else root / "results" / profile_name,
                 Path(data_root) if data_root else None)
