"""Telemetry: an asset's stored reading and its live operating envelope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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


def status_name(code: int) -> str:
    """Lower-case name of an AssetStatus number (``unspecified`` for unknown values)."""
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else "unspecified"
