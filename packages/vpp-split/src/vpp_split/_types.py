"""Public value types: the input :class:`AssetShare` and the output :class:`SplitResult`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from ._grid import Grid

Policy = Literal["proportional", "equal", "priority"]
POLICIES: Final[tuple[Policy, ...]] = ("proportional", "equal", "priority")

#: Why an asset could not give more in the direction of the request (``SplitResult.limited_by``):
#: its static bound, its live envelope, or its minimum stable load (off, or stuck at it).
Limit = Literal["bound", "envelope", "min_stable"]
LIMITS: Final[tuple[Limit, ...]] = ("bound", "envelope", "min_stable")

# explain() must stay one log line even for a fleet of 10,000 assets.
_EXPLAIN_ITEMS: Final = 8
# Beyond nine decimals the log line only shows float noise of exotic steps such as 1/3.
_EXPLAIN_MAX_DECIMALS: Final = 9


_NUMBER_FIELDS: Final = (
    "capacity_kw",
    "min_kw",
    "max_kw",
    "available_min_kw",
    "available_max_kw",
    "min_stable_kw",
)


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
    ``"priority"`` policy (and semi-continuous assets are committed first).  Fields are
    validated on construction (``ValueError`` naming the asset and the field), so an
    ``AssetShare`` that exists is internally consistent.

    Live envelope (optional): ``available_min_kw`` / ``available_max_kw`` are what the device
    can do *now* (PV: up to what the sun gives; a battery: from its state of charge).  The
    effective bounds are the static ``[min_kw, max_kw]`` clamped into the available range:
    their intersection when they overlap, otherwise the point of the available range nearest
    to the static one -- the device's physical truth wins (see ``effective_bounds_kw``).

    ``min_stable_kw`` (optional, > 0) makes the asset semi-continuous: it is either off (0)
    or runs with ``|p| >= min_stable_kw`` within its effective bounds (a genset
    ``[min_stable, max]``; an electrolyser ``[min, -min_stable]``; a battery either side).
    ``None`` or ``0`` means continuous.
    """

    asset_id: str
    capacity_kw: float | None = None
    min_kw: float | None = None
    max_kw: float | None = None
    online: bool = True
    priority: int = 0
    available_min_kw: float | None = None
    available_max_kw: float | None = None
    min_stable_kw: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.asset_id, str) or not self.asset_id:
            raise ValueError(f"asset {self.asset_id!r}: asset_id must be a non-empty string")
        for name in _NUMBER_FIELDS:
            value = getattr(self, name)
            if value is not None:
                _check_number(self.asset_id, name, value)
        for name in ("capacity_kw", "min_stable_kw"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"asset {self.asset_id!r}: {name} ({value!r}) is negative")
        available = (self.available_min_kw, self.available_max_kw)
        if None not in available and available[0] > available[1]:  # type: ignore[operator]
            raise ValueError(
                f"asset {self.asset_id!r}: available_min_kw ({available[0]!r})"
                f" > available_max_kw ({available[1]!r})"
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

    @property
    def effective_bounds_kw(self) -> tuple[float, float]:
        """``bounds_kw`` clamped into ``[available_min_kw, available_max_kw]`` (in floats).

        The intersection when the two overlap; otherwise both ends collapse onto the end of
        the available range nearest to the static one.  ``split`` applies the same rule to the
        grid-snapped values, so on a grid the result may differ by the snapping.
        """
        low, high = self.bounds_kw
        a_low = -math.inf if self.available_min_kw is None else float(self.available_min_kw)
        a_high = math.inf if self.available_max_kw is None else float(self.available_max_kw)
        return (min(max(low, a_low), a_high), min(max(high, a_low), a_high))


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
    * ``limited_by`` -- read-only ``asset_id -> Limit`` for every asset that sits at its limit
      in the direction of the request (of the gap when there is a shortfall, else of
      ``requested_kw``): ``"min_stable"`` when the commitment cut it there (a semi-continuous
      asset that is off, or on at its minimum stable load), ``"envelope"`` when the live
      envelope is tighter than the static bound on that side, ``"bound"`` otherwise.  Assets
      that could still give more are absent.  Empty for a zero request met exactly.
    * ``committed`` -- read-only ``asset_id -> bool`` for every online semi-continuous asset
      (``min_stable_kw`` set): whether it runs.
    * ``commitment_exact`` -- ``False`` only when the commitment search had to trim (more than
      ``MAX_RANGES`` separate reachable ranges); the total may then miss the best reachable one
      by the bound documented in ``vpp_split._commit``.
    """

    # Excluded from the hash: a mapping proxy is unhashable, and equality still compares it.
    allocations: Mapping[str, float] = field(hash=False)
    requested_kw: float
    allocated_kw: float
    shortfall_kw: float
    policy: Policy
    requested_policy: Policy
    step: float
    limited_by: Mapping[str, Limit] = field(default_factory=lambda: _EMPTY, hash=False)
    committed: Mapping[str, bool] = field(default_factory=lambda: _EMPTY, hash=False)
    commitment_exact: bool = True

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
        body = _items(f"{k}={kw(v)}" for k, v in self.allocations.items()) or "no online assets"
        if self.committed:
            body += "; committed: " + _items(
                f"{k}={'on' if v else 'off'}" for k, v in self.committed.items()
            )
            if not self.commitment_exact:
                body += " (search trimmed)"
        # Plain "bound" limits of a request that is met are the normal result of clamping; say
        # why only when something fell short or a live constraint (envelope, min_stable) bit.
        if self.limited_by and (
            self.shortfall_kw or any(v != "bound" for v in self.limited_by.values())
        ):
            body += "; limited: " + _items(f"{k}={v}" for k, v in self.limited_by.items())
        noun = "asset" if count == 1 else "assets"
        return (
            f"split {kw(self.requested_kw)} kW {policy} over {count} {noun}: {body}"
            f" (shortfall {kw(self.shortfall_kw)})"
        )


def _items(texts: Iterable[str]) -> str:
    """The first few *texts* joined by spaces, then ``... +K more``."""
    items = list(texts)
    shown = items[:_EXPLAIN_ITEMS]
    if len(items) > _EXPLAIN_ITEMS:
        shown.append(f"... +{len(items) - _EXPLAIN_ITEMS} more")
    return " ".join(shown)


_EMPTY: Final[Mapping[Any, Any]] = MappingProxyType({})
