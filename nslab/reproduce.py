"""The reproduction: the grid of the preset through an executor, then the notebooks with papermill.

:func:`reproduce` computes every search and training run the notebooks will ask for (:mod:`nslab.runs.grid`)
with an executor (:mod:`nslab.runs.executors`: in this process, or on Ray), then runs the notebooks, which find
everything cached. A task that fails (after its retries) keeps the notebooks that need it from running;
the others run, and :class:`GridFailed` names the failed tasks at the end.

:func:`run_notebooks` executes ``notebooks/NN_*.ipynb`` in order with papermill, passing ``PROFILE``,
``INTERACTIVE = False`` (whatever the saved notebook says), ``DATA_ROOT``, ``RESULTS_DIR`` and
``FIGURES_DIR``; executed copies go to ``build/notebooks/``. A failing notebook raises
:class:`NotebookFailed` naming the notebook and the cell. The presets themselves live in
:mod:`nslab.config`, the folders in :mod:`nslab.paths`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
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
                  parameters: dict | None = None, png: bool = True) -> list[dict]:
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
        png: ``False``: HTML figures only (the kernels inherit ``NSLAB_PNG=0``, see
            :func:`nslab.views.figures.png_enabled`).

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
    with _png_env(png):
        for nb in list_notebooks(nb_dir, only):
            done.append(_execute(pm, nb, out_dir / f"{nb.stem}.{profile_name}.ipynb", params, root, progress,
                                 kernel_name))
    return done


@contextlib.contextmanager
def _png_env(png: bool) -> Iterator[None]:
    """The notebooks' kernels inherit this process's environment: ``NSLAB_PNG=0`` reaches their figures."""
    from .views.figures import PNG_ENV

    before = os.environ.get(PNG_ENV)
    if not png:
        os.environ[PNG_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PNG_ENV, None)
        else:
            os.environ[PNG_ENV] = before


def _execute(pm, nb: Path, out: Path, params: dict, root: Path, progress: bool, kernel_name: str | None) -> dict:
    """Run one notebook with papermill into ``out``: ``{"notebook", "executed", "seconds"}``."""
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
    seconds = round(time.perf_counter() - t0, 1)
    if progress:
        print(f"{nb.name}: ok in {seconds:.1f} s -> {out}", file=sys.stderr, flush=True)
    return {"notebook": nb.name, "executed": str(out), "seconds": seconds}


# --- the grid, then the notebooks ----------------------------------------------------------------------------

def check_ready(png: bool = True) -> None:
    """Refuse, in the first second, a machine the notebooks cannot run on: before hours of grid.

    Checks that papermill and a Python kernel are installed and, with ``png``, that figures can be exported
    as PNG (kaleido and a Chrome/Chromium: :func:`nslab.views.figures.png_problem`).

    Raises:
        ValueError: what is missing, with the line that installs it (and ``--no-png`` as the way around a
            missing browser).
    """
    import importlib.util

    missing = [m for m in ("papermill", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"the notebooks need {' and '.join(missing)}: pip install {' '.join(missing)} "
                         "(or pip install -e . in the checkout)")
    if png:
        from .views.figures import png_problem

        problem = png_problem()
        if problem:
            raise ValueError(f"{problem} Nothing was computed. Or run with --no-png for HTML-only figures.")


class GridFailed(RuntimeError):
    """Tasks of the grid failed after their retries; the notebooks that did not need them ran.

    Attributes:
        report: the executor's :class:`~nslab.runs.executors.GridReport` (``failed``: name -> error).
        notebooks: what ran (``{"notebook", "executed", "seconds"}`` each).
        not_run: the notebooks left out because a task they need failed or was skipped.
    """

    def __init__(self, report, notebooks: list[dict], not_run: list[str]):
        self.report, self.notebooks, self.not_run = report, notebooks, not_run
        failed = "; ".join(f"{k}: {v}" for k, v in report.failed.items())
        super().__init__(f"{len(report.failed)} grid task(s) failed ({failed}); {len(report.skipped)} skipped; "
                         f"notebooks not run: {', '.join(not_run) or 'none'}. Finished work is kept: fix the cause "
                         "and rerun the same command")


def reproduce(profile_name: str, only: Sequence[str] | None = None, data_root: str | os.PathLike | None = None,
              notebooks_dir: str | os.PathLike | None = None, build_dir: str | os.PathLike | None = None,
              figures_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None,
              executor: str = "inprocess", address: str | None = None, num_cpus: int | None = None,
              retries: int | None = None, grid_only: bool = False, grid: bool | None = None, progress: bool = True,
              kernel_name: str | None = None, parameters: dict | None = None, png: bool = True) -> dict:
    """Run the preset's grid through ``executor``, then the notebooks (which then only read the cache).

    Args:
        profile_name: the preset.
        only: notebook numbers (their tasks and the notebooks themselves; default all).
        data_root, notebooks_dir, build_dir, figures_dir, results_dir, kernel_name, parameters: as
            :func:`run_notebooks`.
        executor: ``"inprocess"`` (default) or ``"ray"``.
        address: Ray cluster address (``"auto"``, ``"HOST:PORT"``); ``None``: a local cluster of ``num_cpus``.
        num_cpus: the local Ray cluster's CPUs (default all).
        retries: runs again a failed task this many times (default: the preset's ``resources.retries``).
        grid_only: compute the grid, run no notebook.
        grid: compute the grid first (``None``: when the notebooks are the project's own, which
            :func:`nslab.runs.studies.requests` declares; other notebooks compute on demand).
        progress: bars on stderr.
        png: ``False``: HTML figures only. With ``True`` (default) a machine that cannot export PNGs is
            refused before anything is computed (:func:`check_ready`), not after the grid's hours.

    Returns:
        ``{"profile", "executor", "grid": report, "notebooks": [...], "seconds"}``.

    Raises:
        GridFailed: some task failed after its retries (after the notebooks that did not need it ran).
        NotebookFailed: a notebook raised.
        ValueError: an unknown profile, executor or notebook number; Ray missing for ``"ray"``; the notebooks
            cannot run or export PNGs here (raised first, before any computation).
    """
    from .paths import paths as resolve_paths
    from .runs import grid as grid_
    from .runs.executors import GridReport, make_executor

    t0 = time.perf_counter()
    p = preset(profile_name)
    root = project_root()
    nbs = list_notebooks(Path(notebooks_dir) if notebooks_dir else root / "notebooks", only)
    if not grid_only and nbs:
        check_ready(png)
    numbers = [nb.name[:2] for nb in nbs]
    where = resolve_paths(profile_name, figures_dir, results_dir, data_root)
    ex = make_executor(executor, address=address, num_cpus=num_cpus, retries=retries, progress=progress,
                       **({"cluster_key": str(where.results.resolve())} if executor == "ray" else {}))
    if grid is None:
        grid = notebooks_dir is None
    tasks = grid_.tasks(p, where, numbers if only else None) if grid else []
    report = ex.run(tasks) if tasks else GridReport()
    if progress and tasks:
        r = report.to_dict()
        print(f"grid ({executor}): {r['tasks']} tasks, {r['ran']} ran, {r['cached']} cached, {len(r['failed'])} "
              f"failed, {len(r['skipped'])} skipped in {r['seconds']:.0f} s", file=sys.stderr, flush=True)
    bad = set(report.failed) | set(report.skipped)
    blocked = sorted({n for t in tasks if t.name in bad for n in t.notebooks})
    todo = [n for n in numbers if n not in blocked]
    done = [] if grid_only or not todo else run_notebooks(
        profile_name, todo, data_root, notebooks_dir, build_dir, figures_dir, results_dir, progress, kernel_name,
        parameters, png)
    if not report.ok:
        raise GridFailed(report, done, [n for n in numbers if n in blocked])
    return {"profile": profile_name, "executor": executor, "grid": report.to_dict(), "notebooks": done,
            "seconds": round(time.perf_counter() - t0, 1)}
