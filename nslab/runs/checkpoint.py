"""Checkpoint helpers shared by training and pruning: atomic torch files, RNG states, settings checks.

A checkpoint is one ``torch.save`` dict written to a temporary file and renamed into place
(:func:`save`), so an interrupted run always finds either the previous checkpoint or the new one, never
half of one. :func:`rng_state` / :func:`set_rng_state` capture and restore every global generator
(Python, NumPy, torch CPU and CUDA) as plain tensors and lists, loadable with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write

__all__ = ["check_settings", "load", "rng_state", "save", "set_rng_state"]


def save(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: str | os.PathLike, device: torch.device | str | None = None) -> dict:
    """Load a checkpoint written by :func:`save` (tensors mapped to ``device``; safe ``weights_only``)."""
    return torch.load(path, map_location=device, weights_only=True)


def rng_state() -> dict:
    """The states of Python's, NumPy's and torch's (CPU, and CUDA when available) global generators."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only on a machine with as many GPUs)."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_tuple(x: object) -> object:
    return tuple(_to_tuple(i) for i in x) if isinstance(x, list | tuple) else x


def check_settings(saved: dict, now: dict, where: Any, keys: tuple[str, ...] | None = None) -> None:
    """Raise ``ValueError`` naming every key (of ``keys``, default all) whose value differs.

    The message reads ``"<where> holds a run with other settings (key: saved X, now Y; ...); use a new
    run directory"``.
    """
    keys = tuple(dict.fromkeys([*saved, *now])) if keys is None else keys
    bad = [k for k in keys if saved.get(k) != now.get(k)]
    if bad:
        diff = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in bad)
        raise ValueError(f"{where} holds a run with other settings ({diff}); use a new run directory")
