"""Response shapes of the REST API for sites, assets, telemetry and gateways (msgspec
structs, one concrete page struct per list: `paging.Page`) and the builders that fill
them from domain values."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from ..db.telemetry_repo import RollupMinute, SiteMinute
from ..domain import Asset, GatewayView, LatestReading, Site, SiteTelemetry, status_name
from .paging import Page


class AssetOut(msgspec.Struct):
    asset_id: str
    site_id: str
    kind: str
    capacity_kw: float | None
    min_kw: float | None
    max_kw: float | None
    energy_kwh: float | None


class SiteOut(msgspec.Struct):
    site_id: str
    groups: list[str]
    asset_ids: list[str]
    capacity_kw: float
    legacy: bool
    telemetry_interval_s: float | None


class SiteDetailOut(SiteOut):
    assets: list[AssetOut] = msgspec.field(default_factory=list)


class SitePage(Page, kw_only=True):
    items: list[SiteOut]


class AssetPage(Page, kw_only=True):
    items: list[AssetOut]


class TelemetryOut(msgspec.Struct):
    asset_id: str
    site_id: str
    ts: datetime
    received_at: datetime
    seq: int
    power_kw: float
    soc_pct: float | None
    status: str
    setpoint_kw: float | None
    setpoint_id: str | None
    lag_s: float
    # The live envelope (DESIGN.md §3a); null when the gateway did not report it.
    available_min_kw: float | None
    available_max_kw: float | None
    min_stable_kw: float | None
    setpoint_ends_at: datetime | None


class ReadingOut(msgspec.Struct):
    seq: int
    ts: datetime
    received_at: datetime
    power_kw: float
    soc_pct: float | None
    status: str
    setpoint_kw: float | None
    setpoint_id: str | None
    available_min_kw: float | None
    available_max_kw: float | None
    min_stable_kw: float | None
    setpoint_ends_at: datetime | None


class HistoryOut(msgspec.Struct):
    asset_id: str
    start: datetime | None
    end: datetime | None
    limit: int
    count: int
    readings: list[ReadingOut]
    next: str | None  # the cursor of the next (older) page; null on the last


class MinuteOut(msgspec.Struct):
    """One UTC minute of an asset's readings (``telemetry_1m``)."""

    minute: datetime
    count: int
    min_power_kw: float
    avg_power_kw: float
    max_power_kw: float
    last_soc_pct: float | None


class RollupOut(msgspec.Struct):
    asset_id: str
    start: datetime | None
    end: datetime | None
    limit: int
    count: int
    minutes: list[MinuteOut]
    next: str | None  # the cursor of the next (older) page; null on the last


class SiteAssetReadingOut(msgspec.Struct):
    asset_id: str
    kind: str
    reading: TelemetryOut | None  # as GET /telemetry/{asset_id}; null: none stored yet


class SiteTotalOut(msgspec.Struct):
    """The site's newest readings summed: ``power_kw`` over its dispatchable assets (not
    meters: a meter sees the same flow at the grid point), ``meter_kw`` over its meters."""

    power_kw: float | None  # null when no asset has reported
    meter_kw: float | None  # null when no meter has reported
    assets_reporting: int
    assets: int
    newest_ts: datetime | None
    oldest_ts: datetime | None
    worst_lag_s: float | None  # now − oldest_ts


class SiteTelemetryOut(msgspec.Struct):
    site_id: str
    at: datetime  # the headend's clock when read (lags are counted to it)
    assets: list[SiteAssetReadingOut]
    total: SiteTotalOut


class SiteMinuteOut(msgspec.Struct):
    """One UTC minute of a site: its dispatchable assets' rollups summed."""

    minute: datetime
    assets: int  # assets with a rollup that minute
    min_power_kw: float
    avg_power_kw: float
    max_power_kw: float


class SiteRollupOut(msgspec.Struct):
    site_id: str
    start: datetime | None
    end: datetime | None
    limit: int
    count: int
    minutes: list[SiteMinuteOut]
    next: str | None


class GatewayOut(msgspec.Struct):
    site_id: str
    connected: bool
    connected_since: datetime | None
    last_seen: datetime | None
    assets_served: list[str]
    remote: str | None
    agent_version: str | None
    epoch: int | None
    session_id: UUID | None
    disconnect_reason: str | None
    replica: str | None = None  # the replica holding (or that last held) the stream
    disconnected_at: datetime | None = None


class GatewayPage(Page, kw_only=True):
    items: list[GatewayOut]


def asset_out(a: Asset) -> AssetOut:
    return AssetOut(a.asset_id, a.site_id, a.kind, a.capacity_kw, a.min_kw, a.max_kw, a.energy_kwh)


def site_out(s: Site, *, detail: bool = False) -> SiteOut:
    common: dict[str, Any] = {
        "site_id": s.site_id,
        "groups": list(s.groups),
        "asset_ids": [a.asset_id for a in s.assets],
        "capacity_kw": s.capacity_kw,
        "legacy": s.legacy,
        "telemetry_interval_s": s.telemetry_interval_s,
    }
    if detail:
        return SiteDetailOut(**common, assets=[asset_out(a) for a in s.assets])
    return SiteOut(**common)


def telemetry_out(r: LatestReading, site_id: str, now: datetime) -> TelemetryOut:
    return TelemetryOut(
        asset_id=r.asset_id,
        site_id=site_id,
        ts=r.ts,
        received_at=r.received_at,
        seq=r.seq,
        power_kw=r.power_kw,
        soc_pct=r.soc_pct,
        status=status_name(r.status),
        setpoint_kw=r.setpoint_kw,
        setpoint_id=r.setpoint_id,
        lag_s=lag_s(now, r.ts),
        available_min_kw=r.available_min_kw,
        available_max_kw=r.available_max_kw,
        min_stable_kw=r.min_stable_kw,
        setpoint_ends_at=r.setpoint_ends_at,
    )


def lag_s(now: datetime, ts: datetime) -> float:
    """How long ago (by the headend clock) a reading was taken, in s (0 for one ahead)."""
    return round(max(0.0, (now - ts).total_seconds()), 3)


def site_telemetry_out(t: SiteTelemetry, now: datetime) -> SiteTelemetryOut:
    total = t.total
    site_id = t.site.site_id
    return SiteTelemetryOut(
        site_id=site_id,
        at=now,
        assets=[
            SiteAssetReadingOut(
                asset_id=a.asset_id,
                kind=a.kind,
                reading=None if r is None else telemetry_out(r, site_id, now),
            )
            for a, r in t.readings
        ],
        total=SiteTotalOut(
            power_kw=None if total is None else total.power_kw,
            meter_kw=None if total is None else total.meter_kw,
            assets_reporting=0 if total is None else total.assets_reporting,
            assets=len(t.readings),
            newest_ts=None if total is None else total.newest_ts,
            oldest_ts=None if total is None else total.oldest_ts,
            worst_lag_s=None if total is None else lag_s(now, total.oldest_ts),
        ),
    )


def site_minute_out(m: SiteMinute) -> SiteMinuteOut:
    return SiteMinuteOut(
        minute=m.bucket,
        assets=m.assets,
        min_power_kw=m.min_power_kw,
        avg_power_kw=m.avg_power_kw,
        max_power_kw=m.max_power_kw,
    )


def minute_out(m: RollupMinute) -> MinuteOut:
    return MinuteOut(
        minute=m.bucket,
        count=m.n,
        min_power_kw=m.min_power_kw,
        avg_power_kw=m.avg_power_kw,
        max_power_kw=m.max_power_kw,
        last_soc_pct=m.last_soc_pct,
    )


def reading_out(r: LatestReading) -> ReadingOut:
    return ReadingOut(
        seq=r.seq,
        ts=r.ts,
        received_at=r.received_at,
        power_kw=r.power_kw,
        soc_pct=r.soc_pct,
        status=status_name(r.status),
        setpoint_kw=r.setpoint_kw,
        setpoint_id=r.setpoint_id,
        available_min_kw=r.available_min_kw,
        available_max_kw=r.available_max_kw,
        min_stable_kw=r.min_stable_kw,
        setpoint_ends_at=r.setpoint_ends_at,
    )


def gateway_out(g: GatewayView) -> GatewayOut:
    return GatewayOut(
        site_id=g.site_id,
        connected=g.connected,
        connected_since=g.connected_since,
        last_seen=g.last_seen,
        assets_served=list(g.assets_served),
        remote=g.remote,
        agent_version=g.agent_version,
        epoch=g.epoch,
        session_id=g.session_id,
        disconnect_reason=g.disconnect_reason,
        replica=g.replica,
        disconnected_at=g.disconnected_at,
    )
