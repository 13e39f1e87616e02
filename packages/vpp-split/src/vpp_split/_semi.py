"""Semi-continuous assets: from effective bounds to units, and back to committed bounds.

See :mod:`vpp_split._commit` for the rule; this module only builds its input (which asset is
a unit with which on-ranges, which is continuous with which range) and applies its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from operator import attrgetter

from ._commit import Commitment, Unit, commit
from ._grid import Grid, OutOfRangeError
from ._types import AssetShare

_min_stable = attrgetter("min_stable_kw")


@dataclass(frozen=True, slots=True)
class Stable:
    """The online semi-continuous assets (index into ``online``) and ``M`` in steps."""

    indices: list[int]
    steps: list[int]

    @classmethod
    def of(cls, grid: Grid, online: list[AssetShare]) -> Stable:
        stable = list(map(_min_stable, online))
        if stable.count(None) == len(stable):
            return cls([], [])
        # min_stable_kw None or 0 is continuous: compress keeps the truthy ones.
        indices = list(compress(range(len(online)), stable))
        values = list(compress(stable, stable))
        try:
            steps = grid.ceil_steps(values)
        except OutOfRangeError as exc:
            asset = online[indices[exc.index]]
            raise ValueError(f"asset {asset.asset_id!r}: min_stable_kw {exc}") from None
        return cls(indices, steps)


def committed_bounds(
    grid: Grid,
    online: list[AssetShare],
    stable: Stable,
    low: list[int],
    high: list[int],
    target: int,
) -> tuple[list[int], list[int], Commitment]:
    """The bounds every asset has once the units are committed, and the commitment."""
    low, high = low.copy(), high.copy()
    members: list[int] = []  # index into online of each unit
    units: list[Unit] = []
    order_keys: list[tuple[int, int]] = []
    for i, m in zip(stable.indices, stable.steps, strict=True):
        lo, hi = low[i], high[i]
        if lo <= 0 <= hi:
            pos = (max(lo, m), hi) if m <= hi else None
            neg = (lo, min(hi, -m)) if lo <= -m else None
            low[i] = high[i] = 0  # off, or fixed at 0 when it cannot run at all
            if pos or neg:
                members.append(i)
                units.append(Unit(pos, neg))
                order_keys.append((online[i].priority, m))
        elif lo > 0:  # must run, generating
            low[i] = max(lo, m)
        else:  # must run, absorbing
            high[i] = min(hi, -m)
        if low[i] > high[i]:
            raise ValueError(
                f"asset {online[i].asset_id!r}: no allowed setpoint: its bounds"
                f" [{grid.value(lo)!r}, {grid.value(hi)!r}] exclude off (0) and"
                f" min_stable_kw {float(online[i].min_stable_kw or 0)!r} lies beyond them"
            )
    # online is in asset_id order and sorted() is stable: ties keep asset_id order.
    order = sorted(range(len(units)), key=order_keys.__getitem__)
    in_order = [units[u] for u in order]
    continuous_low = sum(low)  # units sit at [0, 0] here, so they add nothing
    continuous_high = sum(high)
    commitment = commit(in_order, continuous_low, continuous_high, target)
    for u, (a, b) in zip(order, commitment.ranges, strict=True):
        low[members[u]], high[members[u]] = a, b
    return low, high, commitment
