"""The papermill runner: executes the ordered notebooks headlessly under a preset.

:func:`run_notebooks` executes ``notebooks/NN_*.ipynb`` in order with papermill, passing ``PROFILE``,
``INTERACTIVE = False`` (whatever the saved notebook says), ``DATA_ROOT``, ``RESULTS_DIR`` and
``FIGURES_DIR``; executed copies go to ``build/notebooks/``. A failing notebook raises
:class:`NotebookFailed` naming the notebook and the cell. The presets themselves live in
:mod:`nslab.config`, the folders in :mod:`nslab.paths`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .config import preset
from .paths import project_root

# --- the papermill runner ------------------------------------------------------------------------------------

class NotebookFailed(RuntimeError):
    """A notebook raised.

    Attributes:
        notebook: its file name.
        cell: 0-based index of the failing cell in the executed copy (papermill inserts an
            ``injected-parameters`` cell after the ``parameters`` cell, so later indices are one higher
            than in the committed notebook).
        error: ``"ExceptionName: message [cell starts: ...]"``.
        executed: path of the executed copy (its outputs hold the traceback).
    """

    def __init__(self, notebook: str, cell: int | None, error: str, executed: Path):
        self.notebook, self.cell, self.error, self.executed = notebook, cell, error, executed
        where = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(f"notebook {notebook} failed in {where}: {error} (executed copy: {executed})")


def list_notebooks(notebooks_dir: str | os.PathLike, only: Sequence[str] | None = None) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks in order, restricted to the numbers in ``only`` (e.g. ``["03", "5"]``)."""
    nbs = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        want = {f"{int(x):02d}" for x in only}
        unknown = want - {p.name[:2] for p in nbs}
        if unknown:
            raise ValueError(f"no notebook numbered {', '.join(sorted(unknown))} in {notebooks_dir}; "
                             f"accepted: {', '.join(p.name[:2] for p in nbs)}")
        nbs = [p for p in nbs if p.name[:2] in want]
    return nbs


def _running_cell(executed: Path) -> int | None:
    """Index of the cell papermill was running or marked failed in an executed copy (a kernel death)."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return None
    for i, c in enumerate(nb.cells):
        if c.metadata.get("papermill", {}).get("status") in ("running", "failed"):
            return i
    return None


def run_notebooks(profile_name: str, only: Sequence[str] | None = None, data_root: str | os.PathLike | None = None,
                  notebooks_dir: str | os.PathLike | None = None, build_dir: str | os.PathLike | None = None,
                  figures_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None,
                  progress: bool = True, kernel_name: str | None = None,
                  parameters: dict | None = None) -> list[dict]:
    """Execute the notebooks in order with papermill under ``profile_name``.

    Args:
        profile_name: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        only: notebook numbers to run (default all).
        data_root, figures_dir, results_dir: passed to every notebook (``None``: the notebook's defaults,
            see :func:`paths`).
        notebooks_dir: default ``<project root>/notebooks``.
        build_dir: executed copies, default ``<project root>/build/notebooks``.
        kernel_name: Jupyter kernel (default: the notebook's, ``python3``).
        parameters: more papermill parameters for every notebook (e.g. ``{"AUTHORS_DIR": ...}``; a notebook
            without that name simply gets an unused variable).

    Returns:
        One ``{"notebook", "executed", "seconds"}`` per notebook.

    Raises:
        NotebookFailed: the first notebook that raised (later ones are not run).
    """
    import papermill as pm

    preset(profile_name)
    root = project_root()
    nb_dir = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    out_dir = Path(build_dir) if build_dir else root / "build" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"PROFILE": profile_name, "INTERACTIVE": False, **(parameters or {})}
    for k, v in (("DATA_ROOT", data_root), ("FIGURES_DIR", figures_dir), ("RESULTS_DIR", results_dir)):
        if v is not None:
            params[k] = str(Path(v).resolve())
    done = []
    for nb in list_notebooks(nb_dir, only):
        out = out_dir / f"{nb.stem}.{profile_name}.ipynb"
        t0 = time.perf_counter()
        try:
            # the bar (stderr) counts cells: a long notebook shows where it is; stdout stays for the CLI's JSON
            pm.execute_notebook(str(nb), str(out), parameters=params, progress_bar=progress, cwd=str(root),
                                kernel_name=kernel_name, log_output=False)
        except Exception as e:  # noqa: BLE001 - a dead kernel or a bad parameter fails the same way
            if not isinstance(e, pm.PapermillExecutionError):
                raise NotebookFailed(nb.name, _running_cell(out), f"{type(e).__name__}: {e}", out) from e
            first = (e.source or "").strip().splitlines()[:1]
            msg = str(e.evalue)
            msg = msg if len(msg) <= 400 else msg[:300] + " ... " + msg[-80:]  # plotly errors list every option
            raise NotebookFailed(nb.name, e.cell_index, f"{e.ename}: {msg}"
                                 + (f" [cell starts: {first[0][:80]!r}]" if first else ""), out) from None
        done.append({"notebook": nb.name, "executed": str(out), "seconds": round(time.perf_counter() - t0, 1)})
        if progress:
            print(f"{nb.name}: ok in {done[-1]['seconds']:.1f} s -> {out}", file=sys.stderr, flush=True)
    return done
