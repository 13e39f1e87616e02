"""Priority fill in whole steps."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate


def fill_priority(
    low: Sequence[int], high: Sequence[int], order: Sequence[int], target: int
) -> list[int]:
    """Start every asset at the feasible point nearest zero, ``clamp(0, low, high)``, then
    move assets one at a time, in *order*, to their bound in the direction of
    ``target - sum(start)`` until the target is met (the last one partially).

    Starting at ``clamp(0, ...)`` honours forced operating points (a genset's minimum stable
    load, a battery that must charge) and leaves every asset that is not needed where it
    costs least.  Requires ``sum(low) <= target <= sum(high)`` (the caller pins infeasible
    requests itself).
    """
    # clamp(0, lo, hi); a comprehension beats map(max, ...) several-fold here.
    alloc = [lo if lo > 0 else hi if hi < 0 else 0 for lo, hi in zip(low, high, strict=True)]
    left = target - sum(alloc)
    if left == 0:
        return alloc
    # Room of each asset in the request's direction, in fill order; C-level prefix sums and a
    # binary search find the asset that fills only partially.
    limit = high if left > 0 else low
    room = [abs(limit[i] - alloc[i]) for i in order]
    reach = list(accumulate(room))
    # The caller guarantees feasibility, so some prefix of the order covers the rest.
    cut = bisect_left(reach, abs(left))  # first asset whose cumulative room covers the rest
    for i in order[:cut]:
        alloc[i] = limit[i]
    partial = order[cut]
    alloc[partial] += (abs(left) - (reach[cut] - room[cut])) * (1 if left > 0 else -1)
    return alloc
