"""``split``: divide a power setpoint over assets, exactly, on a step grid.

Definitions (all sums over *online* assets; offline assets are ignored and absent from the
result):

Grid.  With ``s = step`` taken as the decimal it prints as (see :mod:`vpp_split._grid`),
``value(k)`` is the float nearest to ``k * s``.  The request becomes ``T = round(total_kw / s)``
whole steps (half to even).  An asset's static bounds ``[min_kw, max_kw]`` (defaults
``[0, capacity_kw]``, or unbounded without a capacity) become integer steps
``lo = smallest k with value(k) >= min_kw`` and ``hi = largest k with value(k) <= max_kw`` --
``ceil(min_kw / s)`` and ``floor(max_kw / s)`` evaluated so that binary round-off can never
push an output float past its bound.  ``lo > hi`` (no grid point within the bounds) is an
error.  Every output is ``value(k)`` for an integer ``k``; ``requested_kw = value(T)``,
``allocated_kw = value(sum k)``, ``shortfall_kw = value(T - sum k)``.

Envelope.  ``available_min_kw`` / ``available_max_kw`` narrow ``[lo, hi]`` to the static range
clamped into the available one (:mod:`vpp_split._bounds`); without them nothing changes.

Semi-continuous assets (``min_stable_kw``).  Each is off (0) or at least ``min_stable_kw``
from zero; :mod:`vpp_split._commit` decides which run and the total ``t*`` they make
reachable: ``T`` itself when any on/off combination reaches it, else the reachable total
nearest to ``T``.  From then on a committed asset has the bounds of its on-range and an off
one ``[0, 0]``, and the policies below split ``t*`` over those bounds.  Without semi-continuous
assets ``t* = clamp(T, sum(lo), sum(hi))``.

Feasibility.  If ``t* <= sum(lo)`` every asset is at ``lo``; if ``t* >= sum(hi)`` every asset
is at ``hi``; so an unreachable request pins every asset at its bound in the direction of the
request and ``shortfall_kw = value(T - t*)`` is non-zero.  Otherwise the allocations sum to
exactly ``t*`` steps (``= T`` when feasible).  ``limited_by`` and its reasons:
:mod:`vpp_split._limits`.

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
from collections.abc import Iterable
from operator import attrgetter
from types import MappingProxyType

from ._bounds import grid_bounds
from ._grid import Grid, OutOfRangeError
from ._limits import limited_by
from ._priority import fill_priority
from ._semi import Stable, committed_bounds
from ._types import POLICIES, AssetShare, Policy, SplitResult
from ._waterfill import waterfill

_by_id = attrgetter("asset_id")
_priority = attrgetter("priority")
_capacity = attrgetter("capacity_kw")
_online = attrgetter("online")


def split(
    total_kw: float,
    assets: Iterable[AssetShare],
    *,
    step: float = 0.001,
    policy: Policy = "proportional",
) -> SplitResult:
    """Split *total_kw* over the online *assets*; see the module docstring for the exact rules.

    Raises ``ValueError`` for an unknown policy, a bad ``step``, a non-finite ``total_kw``, a
    duplicate ``asset_id``, a bound or total more than ``2**40`` steps from zero, an online
    asset whose bounds contain no grid point, or a semi-continuous asset that can be neither
    off nor at its minimum stable load.  An unreachable request does not raise: see
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
    stable = Stable.of(grid, online)
    bounds = grid_bounds(grid, online, target, sum(stable.steps))
    low, high, goal, exact = bounds.low, bounds.high, target, True
    if stable.indices:
        low, high, commitment = committed_bounds(grid, online, stable, low, high, target)
        goal, exact = commitment.total, not commitment.trimmed

    used: Policy = policy
    if policy == "proportional" and not all(map(_capacity, online)):
        used = "equal"  # proportional needs a positive capacity on every online asset

    if goal <= sum(low):
        ks = low  # at or below every minimum: all at the lower bound (exact at ==)
    elif goal >= sum(high):
        ks = high
    elif used == "priority":
        ks = fill_priority(low, high, _priority_order(online), goal)
    else:
        weights = [1.0] * len(online) if used == "equal" else list(map(_capacity, online))
        ks = waterfill(low, high, weights, goal)

    allocated = sum(ks)
    gap = target - allocated
    direction = _sign(gap) or _sign(target)
    ids = list(map(_by_id, online))
    return SplitResult(
        allocations=MappingProxyType(dict(zip(ids, grid.values(ks), strict=True))),
        requested_kw=grid.value(target),
        allocated_kw=grid.value(allocated),
        shortfall_kw=grid.value(gap),
        policy=used,
        requested_policy=policy,
        step=grid.step,
        limited_by=MappingProxyType(
            limited_by(online, ks, bounds, (low, high), stable.indices, direction)
        ),
        committed=MappingProxyType({ids[i]: ks[i] != 0 for i in stable.indices}),
        commitment_exact=exact,
    )


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _priority_order(online: list[AssetShare]) -> list[int]:
    # online is sorted by asset_id and sorted() is stable, so ties keep asset_id order.
    return sorted(range(len(online)), key=list(map(_priority, online)).__getitem__)


def _check_unique(assets: tuple[AssetShare, ...]) -> None:
    ids = list(map(_by_id, assets))
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise ValueError(f"asset {duplicate!r}: duplicate asset_id")
