"""Effective bounds in whole steps: static bounds, defaults, and the live envelope.

Static range.  ``[min_kw, max_kw]`` after defaults (``[0, capacity_kw]``, or unbounded without
a capacity), snapped inward: ``S_lo = ceil_steps(min_kw)``, ``S_hi = floor_steps(max_kw)``
(see :mod:`vpp_split._grid`).  ``S_lo > S_hi`` is an error.

Envelope.  ``available_min_kw`` / ``available_max_kw`` (``None`` = no limit on that side),
snapped inward the same way: ``A_lo``, ``A_hi``; ``A_lo > A_hi`` is an error.  The effective
bounds are the static ones clamped into the available range::

    lo = clamp(S_lo, A_lo, A_hi)        hi = clamp(S_hi, A_lo, A_hi)

When the ranges overlap on the grid this is their intersection ``[max(S_lo, A_lo),
min(S_hi, A_hi)]``.  When they do not, both ends collapse onto the available end nearest to
the static range (``A_hi`` if the device can do less than the static minimum, ``A_lo`` if it
must do more than the static maximum): what the device can physically do wins, and the static
range decides only which of those points.

Computation.  The intersection is taken in floats and snapped once (``ceil`` of a maximum is
the maximum of the ``ceil`` s, so this equals the grid intersection whenever that is
non-empty); only the assets whose snapped intersection comes out empty are redone with the
clamp above, one at a time.

An unbounded side becomes a sentinel farther from zero than ``|target|`` plus every finite
bound and every minimum stable load: no allocation can reach it (an unbounded asset never
needs to absorb more than that), so the solvers work on plain integers and still treat the
side as open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, gt, ne

from ._grid import Grid, OutOfRangeError
from ._types import AssetShare

_capacity = attrgetter("capacity_kw")
_min_kw = attrgetter("min_kw")
_max_kw = attrgetter("max_kw")
_available_min = attrgetter("available_min_kw")
_available_max = attrgetter("available_max_kw")
_INF = math.inf


@dataclass(frozen=True, slots=True)
class Bounds:
    """Effective bounds in steps, one per online asset, and where the envelope cut them.

    ``cut_low[i]`` / ``cut_high[i]``: the envelope decides that side -- the available value
    is tighter than the static bound (compared in kW, as given), or the ranges do not overlap
    and the bound was clamped.  ``None`` when no asset has an envelope.
    """

    low: list[int]
    high: list[int]
    cut_low: list[bool] | None
    cut_high: list[bool] | None


def grid_bounds(grid: Grid, online: list[AssetShare], target: int, extra: int = 0) -> Bounds:
    """Every online asset's effective bounds; *extra* (steps) widens the open-side sentinel."""
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
    a_min = list(map(_available_min, online))
    a_max = list(map(_available_max, online))
    n = len(online)
    enveloped = a_min.count(None) != n or a_max.count(None) != n
    if enveloped:
        eff_min = [m if a is None or a <= m else a for m, a in zip(min_kw, a_min, strict=True)]
        eff_max = [m if a is None or a >= m else a for m, a in zip(max_kw, a_max, strict=True)]
    else:
        eff_min, eff_max = min_kw, max_kw
    open_low = -_INF in eff_min
    open_high = _INF in eff_max
    low = _snap(
        grid.ceil_steps,
        [0.0 if x == -_INF else x for x in eff_min] if open_low else eff_min,
        online,
        _field_names(eff_min, min_kw, "min_kw", "available_min_kw"),
    )
    high = _snap(
        grid.floor_steps,
        [0.0 if x == _INF else x for x in eff_max] if open_high else eff_max,
        online,
        _field_names(eff_max, max_kw, "max_kw", "available_max_kw"),
    )
    if open_low or open_high:
        # A power of two: it converts to float exactly, so its breakpoint keys stay correctly
        # rounded like every other one.
        reach = abs(target) + sum(map(abs, low)) + sum(map(abs, high)) + abs(extra) + 1
        far = 1 << reach.bit_length()
        low = [-far if x == -_INF else k for k, x in zip(low, eff_min, strict=True)]
        high = [far if x == _INF else k for k, x in zip(high, eff_max, strict=True)]
    cut_low = list(map(ne, eff_min, min_kw)) if enveloped else None
    cut_high = list(map(ne, eff_max, max_kw)) if enveloped else None
    if any(map(gt, low, high)):
        for i in [i for i, (lo, hi) in enumerate(zip(low, high, strict=True)) if lo > hi]:
            low[i], high[i] = _clamped(grid, online[i], min_kw[i], max_kw[i])
            if cut_low is not None and cut_high is not None:
                cut_low[i] = cut_high[i] = True
    return Bounds(low, high, cut_low, cut_high)


def _clamped(grid: Grid, asset: AssetShare, min_kw: float, max_kw: float) -> tuple[int, int]:
    """``clamp`` of the snapped static range into the snapped available range (one asset).

    Only called when the snapped intersection is empty, so both results are finite: the
    static range lies beyond a finite end of the available range, or has no grid point.
    """
    s_lo, s_hi = _pair(grid, asset, min_kw, max_kw, ("min_kw", "max_kw"))
    if s_lo > s_hi:
        raise _no_grid_point(grid, asset, "min_kw", min_kw, "max_kw", max_kw)
    a_min = -_INF if asset.available_min_kw is None else asset.available_min_kw
    a_max = _INF if asset.available_max_kw is None else asset.available_max_kw
    a_lo, a_hi = _pair(grid, asset, a_min, a_max, ("available_min_kw", "available_max_kw"))
    if a_lo > a_hi:
        raise _no_grid_point(grid, asset, "available_min_kw", a_min, "available_max_kw", a_max)
    return int(min(max(s_lo, a_lo), a_hi)), int(min(max(s_hi, a_lo), a_hi))


def _pair(
    grid: Grid, asset: AssetShare, low: float, high: float, names: tuple[str, str]
) -> tuple[float, float]:
    """Snapped ``(low, high)``; an open side stays ``-inf``/``+inf``."""
    lo = low if low == -_INF else _snap(grid.ceil_steps, [low], [asset], [names[0]])[0]
    hi = high if high == _INF else _snap(grid.floor_steps, [high], [asset], [names[1]])[0]
    return lo, hi


def _no_grid_point(
    grid: Grid, asset: AssetShare, low_name: str, low: float, high_name: str, high: float
) -> ValueError:
    return ValueError(
        f"asset {asset.asset_id!r}: no multiple of step {grid.step!r} lies within"
        f" [{low_name} {low!r}, {high_name} {high!r}]"
    )


def _field_names(
    effective: list[float], static: list[float], name: str, available: str
) -> Callable[[int], str]:
    """Which field a snapped value came from (for the out-of-range error of index *i*)."""
    return lambda i: name if effective[i] == static[i] else available


def _snap(
    convert: Callable[[list[float]], list[int]],
    values: list[float],
    online: Sequence[AssetShare],
    field: Callable[[int], str] | Sequence[str],
) -> list[int]:
    try:
        return convert(values)
    except OutOfRangeError as exc:
        name = field(exc.index) if callable(field) else field[exc.index]
        raise ValueError(f"asset {online[exc.index].asset_id!r}: {name} {exc}") from None
