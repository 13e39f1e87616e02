"""What each console page shows, read from the running headend's services.

Each builder makes the few queries its page needs (a fixed number, whatever the fleet's
size) and returns plain frozen dataclasses the templates format; nothing here renders.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlencode

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
#: Sites on one fleet page; the counts above the table cover the whole fleet.
FLEET_PAGE_SIZE = 100
#: Rows of each table on the alerts page (when a replica with half the fleet stops,
#: thousands of gateways are offline at once: the rest are one link away).
ALERT_ROWS = 100

#: `FleetRow.trouble` of a site whose gateway is online with fresh telemetry.
FINE = 3

#: The fleet page's filter: every site, or only those offline or stale.
Show = Literal["all", "problems"]


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

    @property
    def trouble(self) -> int:
        """Where the row sorts on the fleet page: a gateway that went offline first, then
        stale telemetry, then sites whose gateway never connected (imported ahead of
        their installation, say), then the rest (`FINE`)."""
        if self.gateway is None:
            return 2
        if not self.gateway.connected:
            return 0
        return 1 if self.stale else FINE

    @property
    def order(self) -> tuple[int, str]:
        """The fleet and alerts pages' order: by `trouble`, then by site id."""
        return self.trouble, self.site.site_id


@dataclass(frozen=True, slots=True)
class FleetQuery:
    """What the fleet page lists: which sites (``show``, ``find`` in the site id) and which
    page of them (1-based)."""

    show: Show = "all"
    find: str = ""
    page: int = 1

    def href(self, page: int) -> str:
        """The fleet page's URL for ``page`` of the same selection."""
        params: dict[str, str | int] = {}
        if self.show != "all":
            params["show"] = self.show
        if self.find:
            params["find"] = self.find
        if page != 1:
            params["page"] = page
        return "/ui/" + (f"?{urlencode(params)}" if params else "")


@dataclass(frozen=True, slots=True)
class FleetPage:
    """One page of the fleet: its rows, and counts over the whole fleet."""

    query: FleetQuery
    rows: tuple[FleetRow, ...]
    sites: int
    online: int
    stale: int
    matching: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.matching / FLEET_PAGE_SIZE))

    @property
    def first(self) -> int:
        """The 1-based position of the page's first row among the matching sites."""
        return (self.query.page - 1) * FLEET_PAGE_SIZE + 1 if self.rows else 0


def fleet_page(rows: list[FleetRow], query: FleetQuery) -> FleetPage:
    """The rows ``query`` asks for, troubled sites first (`FleetRow.trouble`), each
    group by site id, one page of them."""
    find = query.find.lower()
    wanted = [
        r
        for r in rows
        if (query.show == "all" or r.trouble < FINE) and find in r.site.site_id.lower()
    ]
    wanted.sort(key=lambda r: r.order)
    start = (query.page - 1) * FLEET_PAGE_SIZE
    return FleetPage(
        query=query,
        rows=tuple(wanted[start : start + FLEET_PAGE_SIZE]),
        sites=len(rows),
        online=sum(1 for r in rows if r.online),
        stale=sum(1 for r in rows if r.stale),
        matching=len(wanted),
    )


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
    """The alerts page: the first `ALERT_ROWS` gateways offline (``offline_total`` in
    all), and the assets whose readings are late."""

    offline: tuple[GatewayView, ...]
    offline_total: int
    lagging: tuple[LaggingAsset, ...]


async def gateways_by_site(headend: Headend) -> dict[str, GatewayView]:
    """Every known gateway by site id."""
    return {g.site_id: g for g in await headend.gateways.list_gateways()}


async def fleet(headend: Headend, now: datetime) -> list[FleetRow]:
    """Every registered site with its gateway and telemetry summary: three queries, at
    once on three connections."""
    sites, gateways, totals = await asyncio.gather(
        headend.registry.overview(), gateways_by_site(headend), headend.telemetry.site_totals()
    )
    flush_s = headend.settings.latest_flush_interval_s
    rows = []
    for site in sites:
        total = totals.get(site.site_id)
        lag = None if total is None else (now - total.oldest_ts).total_seconds()
        gateway = gateways.get(site.site_id)
        rows.append(FleetRow(site, gateway, total, lag, _stale(site, gateway, lag, now, flush_s)))
    return rows


class FleetCache:
    """The fleet's rows, built at most once every ``max_age_s`` for every browser.

    At 10,000 sites a build takes 0.1-0.15 s of the headend's CPU (more under the fleet's
    load: docs/scaling.md), and every open fleet page asks again on gateway events (at
    most once a second each): with a gateway connecting or dropping somewhere every
    second, each browser would cost a tenth of a core or more. Requests that arrive while
    a build runs wait for it instead of starting their own.
    """

    def __init__(self, max_age_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._rows: list[FleetRow] = []
        self._built_at = -math.inf
        self._lock = asyncio.Lock()
        #: How many times the rows were built (for tests and curiosity).
        self.builds = 0

    async def rows(self, headend: Headend) -> list[FleetRow]:
        async with self._lock:
            if self._monotonic() - self._built_at >= self._max_age_s:
                self._rows = await fleet(headend, headend.clock())
                self._built_at = self._monotonic()
                self.builds += 1
            return self._rows


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


def offline_gateways(rows: Sequence[FleetRow]) -> tuple[tuple[GatewayView, ...], int]:
    """The first `ALERT_ROWS` sites whose gateway is not online, in the fleet page's
    order (gone offline, then never connected), and how many there are."""
    down = sorted((r for r in rows if not r.online), key=lambda r: r.order)
    shown = tuple(
        r.gateway or GatewayView(r.site.site_id, False, None, None, (), None, None)
        for r in down[:ALERT_ROWS]
    )
    return shown, len(down)


async def alerts(headend: Headend, rows: Sequence[FleetRow], now: datetime) -> Alerts:
    """Gateways offline (from the fleet's ``rows``) and assets whose telemetry lags
    (dispatches: the page asks the dispatch service per state)."""
    offline, total = offline_gateways(rows)
    async with headend.reader.connect() as conn:
        lagging = await alerts_repo.lagging_assets(
            conn,
            now=now,
            factor=STALE_INTERVALS,
            default_interval_s=DEFAULT_INTERVAL_S,
            slack_s=headend.settings.latest_flush_interval_s,
            limit=ALERT_ROWS,
        )
    return Alerts(offline, total, tuple(lagging))


__all__ = [
    "ALERT_ROWS",
    "FINE",
    "FLEET_PAGE_SIZE",
    "Alerts",
    "AssetRow",
    "FleetCache",
    "FleetPage",
    "FleetQuery",
    "FleetRow",
    "Show",
    "SitePage",
    "alerts",
    "fleet",
    "fleet_page",
    "offline_gateways",
    "site_page",
]
