"""Commitment of semi-continuous assets: which ones run, and the total they make reachable.

Units.  A semi-continuous asset (``min_stable_kw`` ``m > 0``, snapped up to ``M`` steps) with
effective bounds ``[lo, hi]`` may take the grid points of ``[lo, hi]`` that are ``0`` or at
least ``M`` from zero.  If ``lo <= 0 <= hi`` it is a *unit* with up to three states::

    off  [0, 0]
    pos  [max(lo, M), hi]      if M <= hi     (generating: a genset)
    neg  [lo, min(hi, -M)]     if lo <= -M    (absorbing: an electrolyser; a battery has both)

A unit without ``pos`` and ``neg`` is fixed at 0; an asset with ``0`` outside ``[lo, hi]`` is
never off and simply has the one piece on its side (continuous from then on); if that piece is
empty no setpoint is allowed, which is an input error.  Everything else is continuous, with
range sums ``[L, H]`` (``W = H - L``).

Reachable totals.  A choice ``c`` of one state per unit, with ranges ``[a_u, b_u]``, reaches
the totals ``[L + sum a_u, H + sum b_u]``.  The request ``T`` is *feasible* if some choice
reaches it.  Let ``P_0 = {0}`` and ``P_j = U_{s in states(u_j)} (P_{j-1} + [a_s, b_s])`` (a
Minkowski sum with an interval), so ``P_k + [L, H]`` is exactly the set of reachable totals.
``P_j`` is kept as sorted disjoint integer intervals, and gaps of at most ``W`` points are
closed on the way: that only adds points whose window (below) always reaches a real point,
because every window is at least ``W + 1`` points wide, so no answer changes.  With a battery
in the fleet ``W`` is large and ``P_j`` stays one interval.

The total.  ``t* = T`` if feasible.  Otherwise ``t*`` is the reachable total nearest to ``T``;
ties go to the one of smaller magnitude, then to the smaller one (under-delivery rather than
over-delivery; at ``T = 0`` the negative side).

The choice (deterministic).  Units are ordered ascending by ``(priority, M, asset_id)``.
States are ranked ``off < toward < away``, where *toward* is the side with the sign of ``t*``
(``pos`` when ``t* >= 0``).  Of all choices that reach ``t*``, the one taken has the smallest
rank vector *read from the last unit to the first*: the last unit in the order is off if any
choice of the earlier ones makes it, then the one before it, and so on.  So the continuous
assets alone are used when they suffice, and otherwise the fewest-possible latest units are
committed, earlier (lower priority number, smaller minimum) units first.  It is found backwards
from ``j = k``: with the ranges ``[x, y]`` of what is fixed so far (``[L, H]`` at the start),
state ``s`` of ``u_j`` is possible iff ``P_{j-1}`` meets the window
``[t* - y - b_s, t* - x - a_s]``; take the lowest-ranked possible state.  If ``T`` is already
reachable with ``P_m``, units after ``m`` are off by that rule and ``P`` is not built further.

Cost.  ``O(sum_j |P_j| log |P_j|)``.  Limit: if some ``P_j`` holds more than ``MAX_RANGES``
disjoint intervals (many near-fixed-output units of unlike sizes and little continuous
flexibility; never with at most 6 units, ``3**6 < MAX_RANGES``), it is *trimmed*: with
``d_j = ceil((max P_j - min P_j) / MAX_RANGES)``, an interval lying entirely within ``d_j`` above
the previously kept one is dropped.  Every kept point is still reachable (so the result is
always a valid commitment that reaches its total), every dropped point has a kept one at most
``d_j`` below it, and at most ``MAX_RANGES + 1`` intervals remain.  Then the delivered total is
at most ``E = sum of the d_j`` farther from ``T`` than the best reachable one (and a feasible
request may come out short by up to ``E``), and the choice is the rule above over the kept
points.  ``Commitment.trimmed`` says whether that happened.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: Most disjoint intervals a reachable set holds before it is trimmed (see above).
MAX_RANGES: Final = 1024

Range = tuple[int, int]
OFF: Final[Range] = (0, 0)


@dataclass(frozen=True, slots=True)
class Unit:
    """A semi-continuous asset that can be off: its on-ranges (``None`` when impossible)."""

    pos: Range | None
    neg: Range | None


@dataclass(frozen=True, slots=True)
class Commitment:
    total: int  # t*: the request if feasible, else the reachable total nearest to it
    ranges: list[Range]  # per unit, in the order given: OFF or the chosen on-range
    trimmed: bool  # some reachable set exceeded MAX_RANGES and was trimmed (not exact)


@dataclass(frozen=True, slots=True)
class _Reach:
    """Sorted disjoint closed intervals ``[starts[i], ends[i]]``."""

    starts: list[int]
    ends: list[int]

    def meets(self, low: int, high: int) -> bool:
        """Does some interval intersect ``[low, high]``?"""
        i = bisect_right(self.starts, high) - 1  # the last interval starting at or below high
        return i >= 0 and self.ends[i] >= low  # ends grow with starts: it reaches farthest

    def grown(self, unit: Unit, gap: int) -> _Reach:
        """``self + off`` united with ``self + pos`` and ``self + neg``; gaps <= *gap* closed."""
        pieces = list(zip(self.starts, self.ends, strict=True))
        for option in (unit.pos, unit.neg):
            if option is not None:
                a, b = option
                pieces += [(s + a, e + b) for s, e in zip(self.starts, self.ends, strict=True)]
        pieces.sort()
        starts, ends = [pieces[0][0]], [pieces[0][1]]
        for s, e in pieces[1:]:
            if s <= ends[-1] + gap + 1:
                if e > ends[-1]:
                    ends[-1] = e
            else:
                starts.append(s)
                ends.append(e)
        return _Reach(starts, ends)

    def trimmed(self) -> _Reach:
        """At most ``MAX_RANGES + 1`` intervals: drop those within ``d`` above the last kept."""
        d = -(-(self.ends[-1] - self.starts[0]) // MAX_RANGES)  # ceil: span / d <= MAX_RANGES
        starts, ends = [self.starts[0]], [self.ends[0]]
        for s, e in zip(self.starts, self.ends, strict=True):
            if e > ends[-1] + d:  # reaches beyond d: keep it (its start is past ends[-1])
                starts.append(s)
                ends.append(e)
        return _Reach(starts, ends)


def commit(units: Sequence[Unit], low: int, high: int, target: int) -> Commitment:
    """Choose a state for every unit (in commitment order); ``[low, high]`` is ``[L, H]``."""
    gap = high - low
    layers = [_Reach([0], [0])]
    feasible = layers[0].meets(target - high, target - low)
    trimmed = False
    for unit in units:
        if feasible:
            break
        grown = layers[-1].grown(unit, gap)
        if len(grown.starts) > MAX_RANGES:
            grown, trimmed = grown.trimmed(), True
        layers.append(grown)
        feasible = grown.meets(target - high, target - low)
    searched = len(layers) - 1
    total = target if feasible else _nearest(layers[-1], low, high, target)
    ranges = [OFF] * len(units)
    x, y = low, high
    for j in range(searched - 1, -1, -1):
        before = layers[j]
        for a, b in _ranked(units[j], total):
            if before.meets(total - y - b, total - x - a):
                ranges[j] = (a, b)
                x, y = x + a, y + b
                break
        else:  # pragma: no cover - t* is reachable by construction
            raise AssertionError("commitment backtracking found no state")
    return Commitment(total, ranges, trimmed)


def _ranked(unit: Unit, total: int) -> list[Range]:
    toward, away = (unit.pos, unit.neg) if total >= 0 else (unit.neg, unit.pos)
    return [OFF, *(r for r in (toward, away) if r is not None)]


def _nearest(reach: _Reach, low: int, high: int, target: int) -> int:
    """The point of ``reach + [low, high]`` nearest *target* (which it does not contain)."""
    below = [e + high for e in reach.ends if e + high < target]
    above = [s + low for s in reach.starts if s + low > target]
    candidates = ([max(below)] if below else []) + ([min(above)] if above else [])
    return min(candidates, key=lambda t: (abs(t - target), abs(t), t))
