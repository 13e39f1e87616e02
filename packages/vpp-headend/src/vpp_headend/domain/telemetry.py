"""Telemetry: an asset's stored reading, its live operating envelope, and a site's
latest readings with their total."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .registry import Asset, Site

STATUS_NAMES = ("unspecified", "ok", "offline", "fault", "standby")


@dataclass(frozen=True, slots=True)
class LatestReading:
    """A stored reading of an asset (fields in ``TELEMETRY_COLUMNS`` order)."""

    asset_id: str
    seq: int
    ts: datetime
    received_at: datetime
    power_kw: float
    soc_pct: float | None
    status: int
    setpoint_kw: float | None
    setpoint_id: str | None
    available_min_kw: float | None = None
    available_max_kw: float | None = None
    min_stable_kw: float | None = None
    setpoint_ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """An asset's live operating envelope as its newest reading reported it (§3a).

    ``available_min_kw`` / ``available_max_kw``: what the device can be set to now (None:
    the device did not say; its registered limit applies on that side). ``min_stable_kw``:
    a semi-continuous asset is off (0) or within [min_stable_kw, available_max_kw] (None
    or 0: continuous). ``ts``: when the reading was taken (gateway clock).
    """

    available_min_kw: float | None
    available_max_kw: float | None
    min_stable_kw: float | None
    ts: datetime


@dataclass(frozen=True, slots=True)
class SiteTotal:
    """A site's newest readings summed (DESIGN.md §5, ``GET /sites/{site_id}/telemetry``).

    ``power_kw``: the sum over the dispatchable assets that have reported (every kind but
    ``meter``; + export / discharge), 0.0 when only meters have. A meter measures the
    same flow at the grid point: adding it would count that power twice, so meters sum
    apart in ``meter_kw`` (None when no meter of the site has reported).
    ``assets_reporting`` counts the assets with a reading, meters included; the
    timestamps span those readings.
    """

    site_id: str
    power_kw: float
    meter_kw: float | None
    assets_reporting: int
    newest_ts: datetime
    oldest_ts: datetime
    newest_received_at: datetime


@dataclass(frozen=True, slots=True)
class SiteTelemetry:
    """A site, the newest reading of each of its assets (None: not reported yet), by
    asset id, and their total (None when none has reported)."""

    site: Site
    readings: tuple[tuple[Asset, LatestReading | None], ...]
    total: SiteTotal | None


def site_total(
    site_id: str, readings: Iterable[tuple[Asset, LatestReading | None]]
) -> SiteTotal | None:
    """The `SiteTotal` of a site's newest readings; None when no asset has reported."""
    reported = [(a, r) for a, r in readings if r is not None]
    if not reported:
        return None
    meters = [r.power_kw for a, r in reported if not a.dispatchable]
    return SiteTotal(
        site_id=site_id,
        power_kw=sum((r.power_kw for a, r in reported if a.dispatchable), 0.0),
        meter_kw=sum(meters, 0.0) if meters else None,
        assets_reporting=len(reported),
        newest_ts=max(r.ts for _, r in reported),
        oldest_ts=min(r.ts for _, r in reported),
        newest_received_at=max(r.received_at for _, r in reported),
    )


def status_name(code: int) -> str:
    """Lower-case name of an AssetStatus number (``unspecified`` for unknown values)."""
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else "unspecified"
