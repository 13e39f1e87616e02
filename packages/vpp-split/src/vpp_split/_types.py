"""Public value types: the input :class:`AssetShare` and the output :class:`SplitResult`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from ._grid import Grid

Policy = Literal["proportional", "equal", "priority"]
POLICIES: Final[tuple[Policy, ...]] = ("proportional", "equal", "priority")

# explain() must stay one log line even for a fleet of 10,000 assets.
_EXPLAIN_ITEMS: Final = 8
# Beyond nine decimals the log line only shows float noise of exotic steps such as 1/3.
_EXPLAIN_MAX_DECIMALS: Final = 9


def _check_number(asset_id: str, name: str, value: float) -> None:
    """Raise ``ValueError`` unless *value* is a finite number (``name`` is the field)."""
    if math.isnan(value):
        raise ValueError(f"asset {asset_id!r}: {name} is NaN")
    if math.isinf(value):
        raise ValueError(f"asset {asset_id!r}: {name} is infinite ({value!r})")


@dataclass(frozen=True, slots=True)
class AssetShare:
    """One dispatchable asset as seen by :func:`~vpp_split.split`.

    ``capacity_kw`` is the proportional weight and the default bound: missing bounds default to
    ``[0, capacity_kw]`` when the capacity is known, and to ``(-inf, +inf)`` when it is ``None``.
    Bounds are in kW with the generation sign convention (positive = export/discharge); a
    battery is ``min_kw=-cap, max_kw=+cap``.  Lower ``priority`` numbers are filled first by the
    ``"priority"`` policy.  Fields are validated on construction (``ValueError`` naming the
    asset and the field), so an ``AssetShare`` that exists is internally consistent.
    """

    asset_id: str
    capacity_kw: float | None = None
    min_kw: float | None = None
    max_kw: float | None = None
    online: bool = True
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.asset_id, str) or not self.asset_id:
            raise ValueError(f"asset {self.asset_id!r}: asset_id must be a non-empty string")
        for name in ("capacity_kw", "min_kw", "max_kw"):
            value = getattr(self, name)
            if value is not None:
                _check_number(self.asset_id, name, value)
        if self.capacity_kw is not None and self.capacity_kw < 0:
            raise ValueError(
                f"asset {self.asset_id!r}: capacity_kw ({self.capacity_kw!r}) is negative"
            )
        low, high = self.bounds_kw
        if low > high:
            # Name the source of a defaulted bound: "max_kw (100.0)" alone would puzzle a
            # caller who never passed max_kw.
            low_src = "" if self.min_kw is not None else ", from capacity_kw"
            high_src = "" if self.max_kw is not None else ", from capacity_kw"
            raise ValueError(
                f"asset {self.asset_id!r}: min_kw ({low!r}{low_src}) > max_kw ({high!r}{high_src})"
            )

    @property
    def bounds_kw(self) -> tuple[float, float]:
        """Effective ``(min_kw, max_kw)`` after defaults; ``-inf``/``+inf`` when unbounded."""
        cap = self.capacity_kw
        low = -math.inf if cap is None else 0.0
        high = math.inf if cap is None else float(cap)
        return (
            low if self.min_kw is None else float(self.min_kw),
            high if self.max_kw is None else float(self.max_kw),
        )


@dataclass(frozen=True, slots=True)
class SplitResult:
    """Outcome of :func:`~vpp_split.split`.

    * ``allocations`` -- read-only ``asset_id -> kW`` for every online asset, in ``asset_id``
      order; offline assets are absent.  Every value is a whole number of ``step``.
    * ``requested_kw`` -- ``total_kw`` rounded to the step grid (what the split aimed at).
    * ``allocated_kw`` -- the sum of the allocations, computed exactly in whole steps.
    * ``shortfall_kw`` -- ``requested_kw - allocated_kw`` (signed; non-zero only when the bounds
      cannot meet the request).
    * ``policy`` -- the policy actually used; ``requested_policy`` -- the one asked for (they
      differ when ``"proportional"`` fell back to ``"equal"``).
    * ``step`` -- the grid the values live on.
    """

    # Excluded from the hash: a mapping proxy is unhashable, and equality still compares it.
    allocations: Mapping[str, float] = field(hash=False)
    requested_kw: float
    allocated_kw: float
    shortfall_kw: float
    policy: Policy
    requested_policy: Policy
    step: float

    @property
    def fallback(self) -> bool:
        """True when the requested policy could not be applied and ``policy`` says what was."""
        return self.policy != self.requested_policy

    def explain(self) -> str:
        """One log line, e.g. ``split 700.000 kW proportional over 3 assets: a=200.000 ...``."""
        decimals = min(Grid.of(self.step).decimals, _EXPLAIN_MAX_DECIMALS)

        def kw(value: float) -> str:
            return f"{value:.{decimals}f}"

        policy = str(self.policy)
        if self.fallback:
            policy += f" (fallback from {self.requested_policy}: an online asset has no capacity)"
        count = len(self.allocations)
        items = [f"{k}={kw(v)}" for k, v in list(self.allocations.items())[:_EXPLAIN_ITEMS]]
        if count > _EXPLAIN_ITEMS:
            items.append(f"... +{count - _EXPLAIN_ITEMS} more")
        body = " ".join(items) if items else "no online assets"
        noun = "asset" if count == 1 else "assets"
        return (
            f"split {kw(self.requested_kw)} kW {policy} over {count} {noun}: {body}"
            f" (shortfall {kw(self.shortfall_kw)})"
        )
