"""The one place that reads and writes nslab's artifacts: atomic writes, trajectories, fits.

Every write goes to a temporary file in the same folder and is renamed into place, so an interrupted
run never leaves a half-written artifact and a failed write never damages the file already there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp)`` fills a temp file in the same folder, then it is renamed.

    If ``write`` raises, the temp file is removed and whatever ``path`` held before is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600); give it the mode a plain open() would (0666 minus umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises ``ValueError`` naming the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# --- trajectories -------------------------------------------------------------------------------------

def write_trajectory(path: str | os.PathLike, widths: np.ndarray, params: Sequence[int]) -> Path:
    """Write a trajectory as CSV with a header ``w1,...,wL,params``, one row per recorded prune step.

    Args:
        widths: (rows, L) integer widths.
        params: (rows,) exact parameter count of each row.
    """
    widths = np.asarray(widths)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([f"w{i + 1}" for i in range(widths.shape[1])] + ["params"])
    for row, p in zip(widths.tolist(), params):
        w.writerow([*row, int(p)])
    return atomic_write_text(path, buf.getvalue())


def read_trajectory(path: str | os.PathLike) -> np.ndarray:
    """Read a trajectory: nslab's CSV (header ``w1..wL[,params]``) or the authors' header-less CSV.

    Returns:
        (rows, L) int64 array of widths, forward layer order. The ``params`` column, when present, is
        dropped: counts are always recomputed from the widths.

    Raises:
        ValueError: missing file, empty file, ragged rows or non-integer entries (naming the line).
    """
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise ValueError(f"no such trajectory file: {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text CSV trajectory") from None
    if not lines:
        raise ValueError(f"trajectory {path} is empty")
    keep = None
    if not _is_number(lines[0].split(",")[0]):
        header = [h.strip() for h in lines[0].split(",")]
        keep = [i for i, h in enumerate(header) if h.lower() != "params"]
        lines = lines[1:]
    rows = []
    for n, ln in enumerate(lines, start=2 if keep is not None else 1):
        cells = [c.strip() for c in ln.split(",")]
        if keep is not None:
            cells = [cells[i] for i in keep if i < len(cells)]
        try:
            rows.append([int(c) for c in cells])
        except ValueError:
            raise ValueError(f"{path}, line {n}: expected integer widths, got {ln!r}") from None
        if len(rows[-1]) != len(rows[0]):
            raise ValueError(f"{path}, line {n}: {len(rows[-1])} columns, expected {len(rows[0])}")
    if not rows:
        raise ValueError(f"trajectory {path} has a header but no rows")
    return np.asarray(rows, dtype=np.int64)
