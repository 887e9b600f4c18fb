"""Exact integer polynomials in the width vector: the compiled parameter and MAC counts of a traced network.

A tensor dimension of a traced network is a :data:`Form`, an affine function of the variables (the group widths
``w_0 .. w_{L-1}`` and, last, the class count K): ``const + sum(coef * w_var)``. A tensor's element count is the
product of its dimensions' forms, so the network's parameter count and MACs are polynomials; they are expanded once
(:func:`expand`) and evaluated with a few numpy operations (:class:`Polynomial`), exactly, in integers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from math import lcm

import numpy as np

__all__ = ["Form", "Polynomial", "evaluate_form", "expand", "form_const", "form_var"]

# An affine form: (constant, ((variable index, coefficient), ...)), variables sorted, coefficients non-zero.
# Coefficients are Fractions only for the in/groups dimension of a grouped convolution.
Form = tuple[Fraction, tuple[tuple[int, Fraction], ...]]


def form_const(c: int | Fraction) -> Form:
    """The constant form ``c``."""
    return Fraction(c), ()


def form_var(var: int, coef: int | Fraction = 1, const: int | Fraction = 0) -> Form:
    """The form ``const + coef * w_var``."""
    return Fraction(const), ((var, Fraction(coef)),) if coef else ()


def evaluate_form(form: Form, values: Sequence[int]) -> int:
    """The form's value at ``values`` (one per variable); raise ``ValueError`` when it is not a whole number."""
    v = form[0] + sum(c * values[i] for i, c in form[1])
    if v.denominator != 1:
        raise ValueError(f"a dimension evaluates to {v}, not a whole number of channels")
    return int(v)


def expand(factors: Iterable[Form]) -> dict[tuple[int, ...], Fraction]:
    """Expand a product of forms into ``{monomial: coefficient}``; a monomial is a sorted tuple of variable indices
    (``()`` the constant term, ``(i, j)`` the term ``w_i * w_j``)."""
    poly: dict[tuple[int, ...], Fraction] = {(): Fraction(1)}
    for const, terms in factors:
        out: dict[tuple[int, ...], Fraction] = {}
        for mono, c in poly.items():
            if const:
                out[mono] = out.get(mono, 0) + c * const
            for var, coef in terms:
                key = tuple(sorted((*mono, var)))
                out[key] = out.get(key, 0) + c * coef
        poly = {k: v for k, v in out.items() if v}
    return poly


class Polynomial:
    """A polynomial of degree <= 2 in ``n_vars`` variables with rational coefficients, evaluated exactly.

    The coefficients are scaled to integers by their common denominator D once; a call computes
    ``(c0 + b . w + sum(c_k * w[i_k] * w[j_k])) // D`` with int64 numpy arithmetic (a few microseconds).

    Args:
        terms: ``{monomial: coefficient}`` as :func:`expand` gives (summed over tensors by the caller).
        n_vars: the number of variables (the length of the vectors it is called with).

    Raises:
        ValueError: a term of degree above 2 (no supported layer has one).
    """

    def __init__(self, terms: dict[tuple[int, ...], Fraction], n_vars: int):
        self.terms = {k: Fraction(v) for k, v in terms.items() if v}
        high = [k for k in self.terms if len(k) > 2]
        if high:
            raise ValueError(f"a count term of degree {len(high[0])} (variables {high[0]}); at most 2 is supported")
        self.n_vars = n_vars
        self.denominator = lcm(1, *(v.denominator for v in self.terms.values()))
        scaled = {k: int(v * self.denominator) for k, v in self.terms.items()}
        self._const = scaled.get((), 0)
        self._linear = np.zeros(n_vars, dtype=np.int64)
        pairs = []
        for k, v in scaled.items():
            if len(k) == 1:
                self._linear[k[0]] += v
            elif len(k) == 2:
                pairs.append((k[0], k[1], v))
        self._i = np.array([p[0] for p in pairs], dtype=np.intp)
        self._j = np.array([p[1] for p in pairs], dtype=np.intp)
        self._c = np.array([p[2] for p in pairs], dtype=np.int64)

    def __call__(self, values: Sequence[int]) -> int:
        """The polynomial at ``values`` (``n_vars`` integers), an exact int."""
        w = np.asarray(values, dtype=np.int64)
        total = self._const + int(self._linear @ w) + int((self._c * w[self._i] * w[self._j]).sum())
        return total // self.denominator if self.denominator != 1 else total

    def exact(self, values: Sequence[int]) -> int:
        """The same value computed with Python integers and Fractions (slow; a cross-check of :meth:`__call__`)."""
        total = Fraction(0)
        for mono, c in self.terms.items():
            p = c
            for v in mono:
                p *= int(values[v])
            total += p
        return int(total)
