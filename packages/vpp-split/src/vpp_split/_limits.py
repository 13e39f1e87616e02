"""Why an asset could not give more: the ``SplitResult.limited_by`` reasons.

Direction ``d``: the sign of the gap ``T - sum k`` when there is a shortfall, else the sign of
``T`` (none when both are zero).  An asset is *limited* when its allocation ``k`` sits at the
end of its committed range ``[l, h]`` in direction ``d`` (``k == h`` for ``d > 0``, ``k == l``
for ``d < 0``).  Its reason, for ``d > 0`` (mirrored for ``d < 0``):

* ``"min_stable"`` -- the commitment cut the range below its effective top (``h < hi``): a
  semi-continuous asset that is off, or runs on the absorbing side up to ``-min_stable``;
* ``"envelope"`` -- ``h`` is the effective top and the live envelope set it:
  ``available_max_kw`` is below the static top (compared in kW as given, so also when both
  snap to the same grid point), or the ranges do not overlap (see :mod:`vpp_split._bounds`);
* ``"bound"`` -- ``h`` is the static bound (``max_kw``, or ``capacity_kw`` by default).
"""

from __future__ import annotations

from itertools import compress
from operator import attrgetter, eq

from ._bounds import Bounds
from ._types import AssetShare, Limit


def limited_by(
    online: list[AssetShare],
    ks: list[int],
    bounds: Bounds,
    committed: tuple[list[int], list[int]],
    semi: list[int],
    direction: int,
) -> dict[str, Limit]:
    """``asset_id -> reason`` for the limited assets, in ``asset_id`` order.

    *semi* lists the semi-continuous assets: only their committed range can differ from the
    effective one.
    """
    if direction == 0:
        return {}
    up = direction > 0
    ends = committed[1] if up else committed[0]
    effective = bounds.high if up else bounds.low
    cut = bounds.cut_high if up else bounds.cut_low
    at_end = list(compress(range(len(ks)), map(eq, ks, ends)))
    ids = list(map(_by_id, map(online.__getitem__, at_end)))
    reasons: dict[str, Limit]
    if cut is None:
        reasons = dict.fromkeys(ids, "bound")
    else:
        cuts = list(map(cut.__getitem__, at_end))
        reasons = {i: "envelope" if c else "bound" for i, c in zip(ids, cuts, strict=True)}
    for i in semi:
        if ks[i] == ends[i] != effective[i]:
            reasons[online[i].asset_id] = "min_stable"
    return reasons


_by_id = attrgetter("asset_id")
