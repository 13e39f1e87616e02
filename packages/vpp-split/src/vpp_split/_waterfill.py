"""Exact weighted water-filling in whole steps (the ``proportional`` and ``equal`` policies).

Problem, in steps: integer bounds ``lo_i <= hi_i``, positive weights ``w_i`` and an integer
target ``T`` with ``sum(lo) < T < sum(hi)``.  The ideal allocation is
``x_i(lam) = clamp(lam * w_i, lo_i, hi_i)`` for a real ``lam`` (of either sign) with
``S(lam) = sum_i x_i(lam) = T``.  ``S`` is continuous, piecewise linear and non-decreasing,
with breakpoints where an asset leaves its lower bound (``lam = lo_i / w_i``, "enter") or
reaches its upper bound (``lam = hi_i / w_i``, "exit"); every ``lam`` solving ``S(lam) = T``
gives the same ``x``.

Algorithm, O(n log n): sort the 2n breakpoints, take prefix sums of the pinned total ``C`` and
the free weight ``W`` along them, and binary-search the first breakpoint where
``S = C + lam * W >= T``.  On the segment before it the free assets share exactly
``N = T - C`` steps in proportion to their weights, which
:func:`~vpp_split._round.apportion` rounds in exact integer arithmetic (a float weight is an
exact ratio of integers; the weights involved are scaled to one power-of-two denominator).

The search runs in floats for speed, so its answer is then *verified exactly*:
``lam* = N / W`` must not precede a passed breakpoint nor follow a pending one (integer
cross-multiplication).  Correctly rounded floats preserve order, so only the breakpoints whose
float keys tie with the last passed and the first pending one need checking.  In the rare
near-tie where the float search picked the wrong segment, the search is repeated with exact
rational keys.  Either way the result is the exact water-filling solution, rounded.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, compress, repeat
from operator import floordiv, ge, gt, itemgetter, le, mul, neg, truediv

from ._round import apportion


def int_weights(weights: Iterable[float]) -> list[int]:
    """The weights times one common power of two, as exact integers (ratios preserved)."""
    ratios = list(map(float.as_integer_ratio, weights))
    dens = list(map(itemgetter(1), ratios))
    common = max(dens, default=1)
    return list(map(mul, map(itemgetter(0), ratios), map(floordiv, repeat(common), dens)))


@dataclass(frozen=True, slots=True)
class _Problem:
    """One water-filling problem.  Event ``e < n`` is asset ``e`` entering (leaving ``lo``);
    event ``e >= n`` is asset ``e - n`` exiting (reaching ``hi``).  Per-event lists have 2n
    items, so most work is C-level ``map``/``itemgetter`` passes rather than Python loops."""

    target: int
    low: list[int]
    high: list[int]
    bounds: list[int]  # per event: the bound the asset leaves or reaches
    weights: list[float]  # per event: the asset's weight
    keys: list[float]  # per event: breakpoint lam, correctly rounded (so order-preserving)

    @classmethod
    def build(
        cls, low: list[int], high: list[int], weights: Sequence[float], target: int
    ) -> _Problem:
        fweights = list(map(float, weights))
        bounds = low + high
        event_weights = fweights + fweights
        # int / float: |bound| < 2**53 converts exactly, then one correctly rounded division.
        keys = list(map(truediv, bounds, event_weights))
        return cls(target, low, high, bounds, event_weights, keys)

    def exact_key(self, e: int) -> Fraction:
        return Fraction(self.bounds[e]) / Fraction(self.weights[e])

    def float_crossing(self, order: list[int], keys: Sequence[float]) -> int:
        """Index in *order* of the first breakpoint with ``S >= T``, evaluated in floats."""
        n = len(self.low)
        pick = itemgetter(*order)  # 2n >= 2 indices, so it returns a tuple
        d_clamped: tuple[int, ...] = pick(list(map(neg, self.low)) + self.high)
        d_weight: tuple[float, ...] = pick(self.weights[:n] + list(map(neg, self.weights[n:])))
        clamped = list(accumulate(d_clamped, initial=sum(self.low)))
        weight = list(accumulate(d_weight, initial=0.0))

        def total(j: int) -> float:
            # S at a breakpoint from the state before it (S is continuous, either side agrees)
            return clamped[j] + keys[j] * weight[j]

        return bisect_left(range(len(order)), float(self.target), key=total)

    def exact_crossing(self, order: list[int]) -> int:
        """As :meth:`float_crossing`, in integers (valid for an exactly sorted *order*)."""
        n = len(self.low)
        weights = int_weights(self.weights)  # per event, all on one denominator
        pick = itemgetter(*order)
        d_clamped: tuple[int, ...] = pick(list(map(neg, self.low)) + self.high)
        d_weight: tuple[int, ...] = pick(weights[:n] + list(map(neg, weights[n:])))
        clamped = list(accumulate(d_clamped, initial=sum(self.low)))
        weight = list(accumulate(d_weight, initial=0))

        def reached(j: int) -> bool:
            e = order[j]
            w = weights[e]
            # clamped + (bound / w) * weight >= target, multiplied through by w > 0
            return clamped[j] * w + self.bounds[e] * weight[j] >= self.target * w

        return bisect_left(range(len(order)), True, key=reached)

    def solve(self, order: list[int], keys: Sequence[float], pos: int) -> list[int] | None:
        """The rounded allocation if ``lam*`` lies just before ``order[pos]``, else None."""
        n = len(self.low)
        marks = [False] * (2 * n)
        for e in order[:pos]:
            marks[e] = True
        entered, exited = marks[:n], marks[n:]
        alloc = [hi if out else lo for lo, hi, out in zip(self.low, self.high, exited, strict=True)]
        free = list(compress(range(n), map(gt, entered, exited)))
        rest = self.target - sum(alloc) + sum(map(alloc.__getitem__, free))
        # Breakpoints whose float keys tie with the last passed / first pending one.
        last = order[bisect_left(keys, keys[pos - 1]) : pos] if pos else []
        after = order[pos : bisect_right(keys, keys[pos])] if pos < len(order) else []
        # Exact weights only where needed -- the free assets and the tied breakpoints -- and
        # once per distinct weight (fleets repeat capacities).
        free_weights = list(map(self.weights.__getitem__, free))
        last_weights = list(map(self.weights.__getitem__, last))
        after_weights = list(map(self.weights.__getitem__, after))
        distinct = list({*free_weights, *last_weights, *after_weights})
        exact = dict(zip(distinct, int_weights(distinct), strict=True))
        weight = sum(map(exact.__getitem__, free_weights))
        # lam* = rest / weight must not precede a passed breakpoint (bound / w <= lam*) nor
        # follow a pending one; cross-multiplied so it is exact.  No free asset at all can only
        # come from a float misjudgement: at the exact crossing the segment before it has
        # S < T at its start and S >= T at its end, so something on it is free.
        bounds_last = self._scaled(last, weight)
        bounds_after = self._scaled(after, weight)
        lam_last = self._scaled_weights(last_weights, exact, rest)
        lam_after = self._scaled_weights(after_weights, exact, rest)
        if not (
            weight > 0
            and all(map(le, bounds_last, lam_last))
            and all(map(ge, bounds_after, lam_after))
        ):
            return None
        for i, share in zip(free, apportion(rest, free_weights, exact, weight), strict=True):
            alloc[i] = share
        return alloc

    def _scaled(self, events: list[int], factor: int) -> Iterator[int]:
        return map(mul, map(self.bounds.__getitem__, events), repeat(factor))

    @staticmethod
    def _scaled_weights(
        weights: list[float], exact: dict[float, int], factor: int
    ) -> Iterator[int]:
        return map(mul, map(exact.__getitem__, weights), repeat(factor))


def waterfill(low: list[int], high: list[int], weights: Sequence[float], target: int) -> list[int]:
    """Rounded water-filling allocation in steps; requires ``sum(low) < target < sum(high)``.

    Each result ``x_i`` is the floor or the ceiling of the exact ideal (largest remainder, ties
    to the lower index), lies in ``[low_i, high_i]``, and ``sum(x) == target``.
    """
    problem = _Problem.build(low, high, weights, target)
    # Enter events have lower indices than exit events, so with a stable sort an asset whose
    # breakpoints coincide (lo == hi) is entered before it is exited.
    events = range(2 * len(low))
    order = sorted(events, key=problem.keys.__getitem__)
    keys: tuple[float, ...] = itemgetter(*order)(problem.keys)
    alloc = problem.solve(order, keys, problem.float_crossing(order, keys))
    if alloc is None:  # float near-tie: repeat the search exactly
        order = sorted(events, key=problem.exact_key)
        keys = itemgetter(*order)(problem.keys)
        alloc = problem.solve(order, keys, problem.exact_crossing(order))
        assert alloc is not None, "exact water-filling failed its own verification"
    return alloc
