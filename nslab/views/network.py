"""What a network's width vector means, as table rows: its width groups, and its exact counts checked.

Notebook 09 shows a traced network (:meth:`nslab.Architecture.from_module`) through these: :func:`group_rows`
(one row per entry of the width vector, and the groups that keep their width), and :func:`count_rows` (the
compiled polynomials against the built module at the default and at random widths).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..models import get_arch, macs, measured_counts, param_count
from ..models.traced_arch import fixed_groups, width_multiples

__all__ = ["count_rows", "group_rows", "random_widths"]

TIES_CHARS = 110  # a group's member list is cut to this many characters in a table cell


def group_rows(arch: str) -> list[dict]:
    """One row per width-vector entry: ``entry`` (its index), ``group`` (the name), ``default`` (channels),
    ``members`` (how many tensor dimensions it sets), ``ties`` (which, in words, cut to :data:`TIES_CHARS`); then
    one row per fixed group (``entry`` ``"fixed"``)."""
    a = get_arch(arch)

    def row(entry, name: str, default: int, members: Sequence, ties: str) -> dict:
        cut = ties if len(ties) <= TIES_CHARS else ties[:TIES_CHARS - 3] + "..."
        return {"entry": entry, "group": name, "default": default, "members": len(members), "ties": cut}

    rows = [row(j, g.name, g.default, g.members, g.layers) for j, g in enumerate(a.groups)]
    return rows + [row("fixed", g.name, g.default, g.members, g.describe()) for g in fixed_groups(a)]


def random_widths(arch: str, rng: random.Random, low: float = 0.3, high: float = 1.6) -> list[int]:
    """(L,) a width vector ``low``..``high`` times the defaults, each entry a multiple of what its group needs."""
    a = get_arch(arch)
    return [max(m, round(d * rng.uniform(low, high)) // m * m) for d, m in zip(a.default_widths, width_multiples(a))]


def count_rows(arch: str, dataset: str, vectors: int = 3, seed: int = 0) -> list[dict]:
    """The exact counts checked: at the default widths and ``vectors`` random ones (0.3-1.6x, :func:`random_widths`),
    one row each: ``case`` (``"default"``, ``"random 1"``, ...), the polynomials' ``params`` and ``macs`` (per image)
    beside ``params_built`` (``sum(p.numel())`` of the built module) and ``macs_built`` (``FlopCounterMode`` / 2),
    ``exact`` (both equal) and the ``widths``."""
    rng = random.Random(seed)
    cases = [("default", list(get_arch(arch).default_widths))]
    cases += [(f"random {i + 1}", random_widths(arch, rng)) for i in range(vectors)]
    rows = []
    for label, w in cases:
        p, m = param_count(arch, w, dataset), macs(arch, w, dataset)
        bp, bm = measured_counts(arch, w, dataset)
        rows.append({"case": label, "params": p, "params_built": bp, "macs": m, "macs_built": bm,
                     "exact": p == bp and m == bm, "widths": w})
    return rows
