"""Largest-remainder apportionment of a whole number of steps, in exact integer arithmetic."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

_Key = TypeVar("_Key", bound=Hashable)


def apportion(
    amount: int, keys: Sequence[_Key], weight_of: Mapping[_Key, int], total: int
) -> list[int]:
    """Split the integer *amount* over items in proportion to their positive integer weights.

    Item ``i`` has weight ``weight_of[keys[i]]`` and ``total`` is the sum of all items'
    weights, so its exact share is ``amount * weight / total``.  Every item gets the floor of
    its share; the ``R = amount - sum(floors)`` steps left over go one each to the items with
    the largest fractional parts, ties to the lower index (callers pass items in
    ``asset_id`` order).  Fractional parts are compared exactly, as the integer remainders
    ``amount * weight mod total``.

    The fractional parts sum to exactly ``R`` and each is below one, so more than ``R`` items
    have a non-zero fraction and only those receive a step: no item moves past the ceiling of
    its exact share.

    Items sharing a key (assets of the same capacity) share their arithmetic, so the big-integer
    work is per distinct weight; the per-item passes are C-level.  ``O(n log n)``.
    """
    share_of: dict[_Key, int] = {}
    remainder_of: dict[_Key, int] = {}
    for key in set(keys):
        share_of[key], remainder_of[key] = divmod(amount * weight_of[key], total)
    shares = list(map(share_of.__getitem__, keys))
    left = amount - sum(shares)
    if left:
        # Dense rank of the remainder (0 = largest): equal remainders, even of different
        # weights, get equal ranks, and the stable sort then keeps index (asset_id) order.
        ranks = {r: i for i, r in enumerate(sorted(set(remainder_of.values()), reverse=True))}
        rank_of = {key: ranks[r] for key, r in remainder_of.items()}
        item_ranks = list(map(rank_of.__getitem__, keys))
        for i in sorted(range(len(keys)), key=item_ranks.__getitem__)[:left]:
            shares[i] += 1
    return shares
