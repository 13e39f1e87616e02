"""What each console page shows, read from the running headend's services.

Each builder makes the few queries its page needs (a fixed number, whatever the fleet's
size) and returns plain frozen dataclasses the templates format; nothing here renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..db import alerts_repo
from ..db.alerts_repo import LaggingAsset
from ..db.registry_repo import SiteOverview
from ..domain import Asset, GatewayView, LatestReading, Site, SiteTelemetry, SiteTotal
from ..domain.telemetry import status_name
from ..headend import Headend

#: A site file's telemetry interval where none is stored (vpp_protocol.sitefile).
DEFAULT_INTERVAL_S = 4.0
#: A reading older than this many telemetry intervals is stale.
STALE_INTERVALS = 3.0


def stale_after_s(site: Site | SiteOverview, flush_s: float) -> float:
    """How old a site's oldest newest reading may be before the console calls it stale:
    three telemetry intervals, plus the time the stored latest values may trail the
    stream (``latest_flush_interval_s``; the fleet view reads the stored ones)."""
    return STALE_INTERVALS * (site.telemetry_interval_s or DEFAULT_INTERVAL_S) + flush_s


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One site on the fleet page."""

    site: SiteOverview
    gateway: GatewayView | None
    total: SiteTotal | None
    worst_lag_s: float | None
    stale: bool

    @property
    def online(self) -> bool:
        return self.gateway is not None and self.gateway.connected


@dataclass(frozen=True, slots=True)
class AssetRow:
    """One asset on the site page: its newest reading (None: none yet) and its lag."""

    asset: Asset
    reading: LatestReading | None
    lag_s: float | None

    @property
    def status(self) -> str:
        return "—" if self.reading is None else status_name(self.reading.status)


@dataclass(frozen=True, slots=True)
class SitePage:
    site: Site
    gateway: GatewayView | None
    rows: tuple[AssetRow, ...]
    total: SiteTotal | None
    stale: bool


@dataclass(frozen=True, slots=True)
class Alerts:
    offline: tuple[GatewayView, ...]
    lagging: tuple[LaggingAsset, ...]


async def gateways_by_site(headend: Headend) -> dict[str, GatewayView]:
    """Every known gateway by site id."""
    return {g.site_id: g for g in await headend.gateways.list_gateways()}


async def fleet(headend: Headend, now: datetime) -> list[FleetRow]:
    """Every registered site with its gateway and telemetry summary: three queries."""
    sites = await headend.registry.overview()
    gateways = await gateways_by_site(headend)
    totals = await headend.telemetry.site_totals()
    flush_s = headend.settings.latest_flush_interval_s
    rows = []
    for site in sites:
        total = totals.get(site.site_id)
        lag = None if total is None else (now - total.oldest_ts).total_seconds()
        gateway = gateways.get(site.site_id)
        rows.append(FleetRow(site, gateway, total, lag, _stale(site, gateway, lag, now, flush_s)))
    return rows


async def site_page(headend: Headend, site_id: str, now: datetime) -> SitePage:
    """One site: every asset's newest reading and the site total (`NotFoundError`)."""
    st: SiteTelemetry = await headend.telemetry.site_latest(site_id)
    gateway = next(iter(await headend.gateways.list_gateways(site_id=site_id)), None)
    rows = tuple(
        AssetRow(asset, r, None if r is None else (now - r.ts).total_seconds())
        for asset, r in st.readings
    )
    lags = [row.lag_s for row in rows if row.lag_s is not None]
    flush_s = headend.settings.latest_flush_interval_s
    stale = _stale(st.site, gateway, max(lags) if lags else None, now, flush_s)
    return SitePage(st.site, gateway, rows, st.total, stale)


def _stale(
    site: Site | SiteOverview,
    gateway: GatewayView | None,
    lag_s: float | None,
    now: datetime,
    flush_s: float,
) -> bool:
    """An online site whose oldest newest reading is too old, or that has stored none
    although connected for longer than that (the stored latest values trail the stream
    by up to ``latest_flush_interval_s``, so a gateway that just connected is not stale)."""
    if gateway is None or not gateway.connected:
        return False
    limit = stale_after_s(site, flush_s)
    if lag_s is not None:
        return lag_s > limit
    since = gateway.connected_since
    return since is not None and (now - since).total_seconds() > limit


async def alerts(headend: Headend, now: datetime) -> Alerts:
    """Gateways offline and assets whose telemetry lags (dispatches: the page asks the
    dispatch service per state)."""
    gateways = await gateways_by_site(headend)
    sites = await headend.registry.overview()
    offline = tuple(
        gateways.get(s.site_id) or GatewayView(s.site_id, False, None, None, (), None, None)
        for s in sites
        if not (gateways.get(s.site_id) and gateways[s.site_id].connected)
    )
    async with headend.reader.connect() as conn:
        lagging = await alerts_repo.lagging_assets(
            conn,
            now=now,
            factor=STALE_INTERVALS,
            default_interval_s=DEFAULT_INTERVAL_S,
            slack_s=headend.settings.latest_flush_interval_s,
            limit=200,
        )
    return Alerts(offline, tuple(lagging))


__all__ = ["Alerts", "AssetRow", "FleetRow", "SitePage", "alerts", "fleet", "site_page"]
