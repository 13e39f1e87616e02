"""The step grid: conversion between kW floats and whole numbers of steps.

Everything inside the splitter is an integer number of steps, so sums are exact.  Floats
appear only at the edges, defined from the *decimal* value of ``step`` -- the number that
``repr(step)`` prints, e.g. exactly 1/1000 for ``step=0.001`` rather than the binary double
0.001000000000000000020816...:

* ``value(k)`` -- the float nearest to ``k * step`` (exact rational product, one correctly
  rounded division), so ``value(250_000) == 250.0`` for ``step=0.001``.  It is strictly
  increasing in ``k`` for ``|k| <= MAX_STEPS``.
* ``ceil_steps(x)`` -- the smallest ``k`` with ``value(k) >= x`` (used for ``min_kw``).
* ``floor_steps(x)`` -- the largest ``k`` with ``value(k) <= x`` (used for ``max_kw``).
* ``round_steps(x)`` -- ``round(x / step)`` (round half to even on the float quotient; used
  for ``total_kw``).

The conversions work on lists: they run once per asset per call, so they are written as
C-level ``map``/comprehension passes rather than per-value method calls.

Bounds are snapped against the output floats, so a float allocation never violates its float
bound, and a bound that is already a multiple of the step (0.3 with step 0.1, where
``0.3 / 0.1 == 2.9999999999999996``) is kept rather than pulled one step inward.

Why one correction suffices: with ``|x / step| <= 2**40`` the float quotient ``q`` is within
2**-12 of the exact ratio, and a start ``k0`` within 0.5 of ``q`` (``floor(q + 0.5)``) is
within 0.5 + 2**-11 of it, while one step spans more than 2**11 float ulps of ``x``.  So
``(k0 - 1) * step`` is well below ``x`` and ``(k0 + 1) * step`` well above it: the answer is
``k0`` or its neighbour on the side that comparing ``value(k0)`` with ``x`` tells us.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import repeat
from math import floor
from operator import mul, truediv
from typing import Final

#: Largest magnitude, in steps, accepted for a bound or a total (about 1.1e12; 1.1 TW at
#: ``step=0.001``).  It keeps every float conversion above provably exact.
MAX_STEPS: Final = 2**40


@dataclass(frozen=True, slots=True)
class Grid:
    """A validated step: ``step == numerator / denominator`` exactly, in decimal terms."""

    step: float
    numerator: int
    denominator: int

    @classmethod
    def of(cls, step: float) -> Grid:
        """Validate *step* (positive and finite) and capture its exact decimal value."""
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be a positive finite number, got {step!r}")
        exact = Fraction(repr(step))
        return cls(float(step), exact.numerator, exact.denominator)

    @property
    def decimals(self) -> int:
        """Digits after the decimal point needed to print any grid value exactly (0.25 -> 2)."""
        digits = 0
        # The denominator comes from a decimal literal, so it divides a power of ten.
        while 10**digits % self.denominator:
            digits += 1
        return digits

    def value(self, k: int) -> float:
        """The float nearest to ``k * step``."""
        # int / int is a single correctly rounded division, hence monotone in k.
        return k * self.numerator / self.denominator

    def values(self, ks: Iterable[int]) -> list[float]:
        """:meth:`value` of every ``k`` (vectorised: this runs once per asset per call)."""
        num, den = self.numerator, self.denominator
        scaled = ks if num == 1 else map(mul, ks, repeat(num))  # num == 1 for 0.001, 0.01, ...
        return list(map(truediv, scaled, repeat(den)))

    def round_steps(self, xs: Sequence[float]) -> list[int]:
        """``round(x / step)`` for every ``x``."""
        self._check_range(xs)
        return list(map(round, map(truediv, xs, repeat(self.step))))

    def floor_steps(self, xs: Sequence[float]) -> list[int]:
        """Largest ``k`` with ``value(k) <= x``, for every ``x``."""
        self._check_range(xs)
        step, num, den = self.step, self.numerator, self.denominator
        # k0 = floor(q + 0.5) is within 0.5 of q (any such start works, see the module
        # docstring) and is cheaper than round(); one fused pass per list.
        return [k if (k := floor(x / step + 0.5)) * num / den <= x else k - 1 for x in xs]

    def ceil_steps(self, xs: Sequence[float]) -> list[int]:
        """Smallest ``k`` with ``value(k) >= x``, for every ``x``."""
        self._check_range(xs)
        step, num, den = self.step, self.numerator, self.denominator
        return [k if (k := floor(x / step + 0.5)) * num / den >= x else k + 1 for x in xs]

    def _check_range(self, xs: Sequence[float]) -> None:
        # |x| <= MAX_STEPS * step, i.e. |x / step| <= MAX_STEPS up to rounding, which the
        # precision argument above tolerates.  One C-level pass; find the culprit only if any.
        limit = MAX_STEPS * self.step
        if not -limit <= min(xs, default=0.0) <= max(xs, default=0.0) <= limit:
            index = next(i for i, x in enumerate(xs) if not abs(x) <= limit)
            raise OutOfRangeError(index, xs[index], self.step)


class OutOfRangeError(ValueError):
    """A value lies more than :data:`MAX_STEPS` steps from zero; ``index`` says which one."""

    def __init__(self, index: int, value: float, step: float) -> None:
        super().__init__(f"{value!r} is more than 2**40 steps of {step!r} away from zero")
        self.index = index
