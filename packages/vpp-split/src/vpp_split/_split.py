"""``split``: divide a power setpoint over assets, exactly, on a step grid.

Definitions (all sums over *online* assets; offline assets are ignored and absent from the
result):

Grid.  With ``s = step`` taken as the decimal it prints as (see :mod:`vpp_split._grid`),
``value(k)`` is the float nearest to ``k * s``.  The request becomes ``T = round(total_kw / s)``
whole steps (half to even).  An asset's effective bounds ``[min_kw, max_kw]`` (defaults
``[0, capacity_kw]``, or unbounded without a capacity) become integer steps
``lo = smallest k with value(k) >= min_kw`` and ``hi = largest k with value(k) <= max_kw`` --
``ceil(min_kw / s)`` and ``floor(max_kw / s)`` evaluated so that binary round-off can never
push an output float past its bound.  ``lo > hi`` (no grid point within the bounds) is an
error.  Every output is ``value(k)`` for an integer ``k``; ``requested_kw = value(T)``,
``allocated_kw = value(sum k)``, ``shortfall_kw = value(T - sum k)``.

Feasibility.  If ``T < sum(lo)`` every asset is at ``lo``; if ``T > sum(hi)`` every asset is at
``hi`` (each at its bound in the direction of the request) and ``shortfall_kw`` is non-zero.
Otherwise the allocations sum to exactly ``T`` steps.

``"proportional"`` / ``"equal"``.  Ideal ``x_i = clamp(lam * w_i, lo_i, hi_i)`` with the real
``lam`` (either sign) for which ``sum x_i = T`` (water-filling; see
:mod:`vpp_split._waterfill`), where ``w_i = capacity_kw`` for proportional and ``1`` for equal.
Proportional needs a positive capacity on every online asset; otherwise the ``equal`` policy
is used and reported in ``SplitResult.policy``.

Rounding (largest remainder).  Assets pinned at a bound already sit on the grid.  Each free
asset gets ``floor(x_i)``; the remaining ``T - sum floor`` steps go one each to the free assets
with the largest fractional part ``x_i - floor(x_i)`` (compared exactly), ties to the smaller
``asset_id``.  So ``k_i`` is ``floor(x_i)`` or ``ceil(x_i)``: within one step of the ideal and
never outside ``[lo_i, hi_i]``.

``"priority"``.  Every asset starts at the feasible point nearest zero,
``z_i = clamp(0, lo_i, hi_i)`` (a genset with a minimum stable load starts at that load, a
battery forced to charge starts at its charge limit).  If ``T > sum z``, assets are raised to
``hi`` one at a time in ascending ``(priority, asset_id)`` until the target is met (the last one
partially); if ``T < sum z`` they are lowered to ``lo`` in the same order.  All integer.

Worked example (step 0.001, so 1 kW = 1000 steps): 700 kW proportional over ``a`` (250 kW),
``b`` (500 kW, ``max_kw=300``) and ``c`` (250 kW).  Unclamped, ``lam = 0.7`` would give
175 / 350 / 175, but ``b`` stops at 300; the remaining 400 kW go to ``a`` and ``c`` in
proportion 250 : 250, i.e. ``lam = 0.8``: 200 / 300 / 200, exactly 700.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from operator import attrgetter, gt
from types import MappingProxyType

from ._grid import Grid, OutOfRangeError
from ._priority import fill_priority
from ._types import POLICIES, AssetShare, Policy, SplitResult
from ._waterfill import waterfill

_by_id = attrgetter("asset_id")
_priority = attrgetter("priority")
_capacity = attrgetter("capacity_kw")
_online = attrgetter("online")
_min_kw = attrgetter("min_kw")
_max_kw = attrgetter("max_kw")


def split(
    total_kw: float,
    assets: Iterable[AssetShare],
    *,
    step: float = 0.001,
    policy: Policy = "proportional",
) -> SplitResult:
    """Split *total_kw* over the online *assets*; see the module docstring for the exact rules.

    Raises ``ValueError`` for an unknown policy, a bad ``step``, a non-finite ``total_kw``, a
    duplicate ``asset_id``, a bound or total more than ``2**40`` steps from zero, or an online
    asset whose bounds contain no grid point.  An unreachable request does not raise: see
    ``SplitResult.shortfall_kw``.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    grid = Grid.of(step)
    if not math.isfinite(total_kw):
        raise ValueError(f"total_kw is {'NaN' if math.isnan(total_kw) else 'infinite'}")
    try:
        (target,) = grid.round_steps([total_kw])
    except OutOfRangeError as exc:
        raise ValueError(f"total_kw: {exc}") from None
    assets = tuple(assets)
    _check_unique(assets)
    online = sorted(filter(_online, assets), key=_by_id)
    low, high = _grid_bounds(grid, online, target)

    used: Policy = policy
    if policy == "proportional" and not all(map(_capacity, online)):
        used = "equal"  # proportional needs a positive capacity on every online asset

    if target <= sum(low):
        ks = low  # at or below every minimum: all at the lower bound (exact at ==)
    elif target >= sum(high):
        ks = high
    elif used == "priority":
        ks = fill_priority(low, high, _priority_order(online), target)
    else:
        weights = [1.0] * len(online) if used == "equal" else list(map(_capacity, online))
        ks = waterfill(low, high, weights, target)

    allocated = sum(ks)
    return SplitResult(
        allocations=MappingProxyType(dict(zip(map(_by_id, online), grid.values(ks), strict=True))),
        requested_kw=grid.value(target),
        allocated_kw=grid.value(allocated),
        shortfall_kw=grid.value(target - allocated),
        policy=used,
        requested_policy=policy,
        step=grid.step,
    )


def _priority_order(online: list[AssetShare]) -> list[int]:
    # online is sorted by asset_id and sorted() is stable, so ties keep asset_id order.
    return sorted(range(len(online)), key=list(map(_priority, online)).__getitem__)


def _check_unique(assets: tuple[AssetShare, ...]) -> None:
    ids = list(map(_by_id, assets))
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise ValueError(f"asset {duplicate!r}: duplicate asset_id")


def _grid_bounds(grid: Grid, online: list[AssetShare], target: int) -> tuple[list[int], list[int]]:
    """Every online asset's effective bounds, snapped inward to whole steps.

    An unbounded side becomes a sentinel farther from zero than ``|target|`` plus every
    finite bound: no allocation can reach it (the unbounded assets never need to absorb more
    than that), so the solvers work on plain integers and still treat the side as open.
    """
    caps = list(map(_capacity, online))
    # Same defaults as AssetShare.bounds_kw, inlined: this runs once per asset per call.
    min_kw = [
        (-_INF if c is None else 0.0) if m is None else m
        for c, m in zip(caps, map(_min_kw, online), strict=True)
    ]
    max_kw = [
        (_INF if c is None else c) if m is None else m
        for c, m in zip(caps, map(_max_kw, online), strict=True)
    ]
    open_low = -_INF in min_kw
    open_high = _INF in max_kw
    low = _snap(
        grid.ceil_steps,
        [0.0 if x == -_INF else x for x in min_kw] if open_low else min_kw,
        online,
        "min_kw",
    )
    high = _snap(
        grid.floor_steps,
        [0.0 if x == _INF else x for x in max_kw] if open_high else max_kw,
        online,
        "max_kw",
    )
    if open_low or open_high:
        # A power of two: it converts to float exactly, so its breakpoint keys stay correctly
        # rounded like every other one.
        far = 1 << (abs(target) + sum(map(abs, low)) + sum(map(abs, high)) + 1).bit_length()
        low = [-far if x == -_INF else k for k, x in zip(low, min_kw, strict=True)]
        high = [far if x == _INF else k for k, x in zip(high, max_kw, strict=True)]
    if any(map(gt, low, high)):
        i = next(i for i, (lo, hi) in enumerate(zip(low, high, strict=True)) if lo > hi)
        raise ValueError(
            f"asset {online[i].asset_id!r}: no multiple of step {grid.step!r} lies within"
            f" [min_kw {min_kw[i]!r}, max_kw {max_kw[i]!r}]"
        )
    return low, high


def _snap(
    convert: Callable[[list[float]], list[int]],
    values: list[float],
    online: list[AssetShare],
    field: str,
) -> list[int]:
    try:
        return convert(values)
    except OutOfRangeError as exc:
        raise ValueError(f"asset {online[exc.index].asset_id!r}: {field} {exc}") from None


_INF = math.inf
