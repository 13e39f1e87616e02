"""What changed since the feed's last tick, and the messages that say so: `Changes`
holds what the feed last read (its watermarks) and diffs each tick's reads against it.
No I/O here: the feed (`feed.EventFeed`) reads, this decides what to send and to whom.

A read that was not made (nobody needs it now) forgets its watermark, so a topic that
comes back starts from what is there then rather than reporting a stale backlog.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from ..db import events_repo as repo
from ..domain import LatestReading, status_name
from . import messages as em
from .messages import Message, message
from .subscription import Subscription

# An id skipped by a read (its transaction had not committed) is looked for this long;
# after that it was rolled back. At most this many are kept.
GAP_TTL_S = 30.0
GAPS_MAX = 10_000


@dataclass(slots=True)
class Needs:
    """What one tick reads, from the subscriptions it serves."""

    dispatch: bool = False
    dispatch_sites: bool = False  # some dispatch subscriber filters by site
    gateway: bool = False
    fleet: bool = False  # some telemetry subscriber watches every site
    watched: frozenset[str] = frozenset()  # sites some telemetry subscriber watches

    @classmethod
    def of(cls, subs: Iterable[Subscription]) -> Needs:
        needs, watched = cls(), set[str]()
        for s in subs:
            if "dispatch" in s.topics:
                needs.dispatch = True
                needs.dispatch_sites |= s.sites is not None
            needs.gateway |= "gateway" in s.topics
            if "telemetry" in s.topics:
                if s.sites is None:
                    needs.fleet = True
                else:
                    watched |= s.sites
        needs.watched = frozenset(watched)
        return needs


@dataclass(slots=True)
class Reads:
    """What one tick read; None: not read (nobody needs it). ``dispatch`` is the newest
    transition's id on a first read (the feed starts there), the transitions after."""

    gateways: Sequence[repo.GatewayRow] | None = None
    dispatch: Sequence[repo.DispatchEvent] | int | None = None
    sites: Sequence[repo.AssetLatest] | None = None  # the watched sites' newest readings
    fleet: Sequence[repo.SiteSummary] | None = None


@dataclass(slots=True)
class Out:
    """One tick's messages, each encoded once, with what decides who gets it; and what
    was read of the watched sites, for the snapshots of clients joining at this tick."""

    at: datetime
    gateways: list[tuple[str, Message]] = field(default_factory=list)
    dispatches: list[tuple[repo.DispatchEvent, frozenset[str], Message]] = field(
        default_factory=list
    )
    sites: dict[str, Message] = field(default_factory=dict)
    fleet: Message | None = None
    site_rows: dict[str, list[repo.AssetLatest]] = field(default_factory=dict)
    snapshots: dict[str | None, Message | None] = field(default_factory=dict)


class Changes:
    """The watermarks of what the feed last read, and the diffs against them."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget what was read: the next tick starts from what is there then."""
        self._after: int | None = None  # newest transition read
        self._gaps: dict[int, float] = {}  # skipped ids -> when to stop looking (monotonic)
        self._sessions: dict[str, tuple[UUID, bool]] | None = None
        self._seqs: dict[str, dict[str, int]] = {}  # watched site -> asset -> seq
        self._fleet: dict[str, tuple[float, datetime, int]] | None = None

    def dispatch_cursor(self) -> tuple[int, list[int]] | None:
        """Where the next dispatch read starts: the newest transition read and the gaps
        still looked for (expired ones forgotten); None on a first read."""
        if self._after is None:
            return None
        now = time.monotonic()
        self._gaps = {i: until for i, until in self._gaps.items() if until > now}
        return self._after, sorted(self._gaps)

    def apply(self, needs: Needs, reads: Reads, at: datetime) -> Out:
        """This tick's messages, and the watermarks moved past what was read."""
        out = Out(at=at)
        if reads.gateways is None:
            self._sessions = None
        else:
            out.gateways = self._gateway_changes(reads.gateways)
        if reads.dispatch is None:
            self._after, self._gaps = None, {}
        elif isinstance(reads.dispatch, int):
            self._after = reads.dispatch
        else:
            out.dispatches = self._dispatch_changes(reads.dispatch)
        if reads.sites is None:
            self._seqs = {}
        else:
            out.site_rows = _by_site(needs.watched, reads.sites)
            out.sites = self._site_changes(out.site_rows, at)
        if reads.fleet is None:
            self._fleet = None
        else:
            out.fleet = self._fleet_changes(reads.fleet, at)
        return out

    def snapshot(self, out: Out, site_id: str | None) -> Message | None:
        """What a joining client is sent after its hello, so that it needs no other read
        to show live values: a watched site's every reading (``telemetry``), or the
        fleet's every site (``telemetry_batch``). Encoded once per tick."""
        if site_id not in out.snapshots:
            msg: Message | None = None
            if site_id is None and self._fleet:
                sites = [
                    em.SiteSummary(
                        site_id=site, total_kw=total, newest_ts=newest, assets_reporting=n
                    )
                    for site, (total, newest, n) in sorted(self._fleet.items())
                ]
                msg = message("telemetry_batch", em.TelemetryBatch(at=out.at, sites=sites))
            elif site_id is not None and (rows := out.site_rows.get(site_id)):
                msg = _telemetry(site_id, out.at, rows, rows)
            out.snapshots[site_id] = msg
        return out.snapshots[site_id]

    # -- the diffs ---------------------------------------------------------------------------

    def _gateway_changes(self, rows: Sequence[repo.GatewayRow]) -> list[tuple[str, Message]]:
        """Sessions that connected, disconnected or were replaced since the last tick
        (the first tick only takes note)."""
        before, now = self._sessions, {r.site_id: (r.session_id, r.connected) for r in rows}
        self._sessions = now
        if before is None:
            return []
        out: list[tuple[str, Message]] = []
        for r in rows:
            if before.get(r.site_id) != now[r.site_id]:
                data = em.Gateway(
                    site_id=r.site_id,
                    connected=r.connected,
                    connected_since=r.connected_since,
                    disconnected_at=r.disconnected_at,
                    reason=r.disconnect_reason,
                    replica=r.replica,
                    agent_version=r.agent_version,
                    assets_served=r.assets_served.split(",") if r.assets_served else [],
                )
                out.append((r.site_id, message("gateway", data)))
        return out

    def _dispatch_changes(
        self, rows: Sequence[repo.DispatchEvent]
    ) -> list[tuple[repo.DispatchEvent, frozenset[str], Message]]:
        """The transitions read, in id order, each with the sites its dispatch is
        delivered to. An id below the newest read but not seen is looked for again for
        `GAP_TTL_S`: its transaction took the id first and committed later."""
        assert self._after is not None
        now = time.monotonic()
        seen = {r.event_id for r in rows}
        for i in seen:
            self._gaps.pop(i, None)
        newest = max(seen, default=self._after)
        if newest > self._after:
            skipped = newest - self._after - len([i for i in seen if i > self._after])
            if skipped > 0 and len(self._gaps) + skipped <= GAPS_MAX:
                for i in range(self._after + 1, newest):
                    if i not in seen:
                        self._gaps[i] = now + GAP_TTL_S
            self._after = newest
        sites: dict[UUID, frozenset[str]] = {}
        out = []
        for r in rows:
            if r.sites is not None:
                sites[r.dispatch_id] = frozenset(r.sites)
            data = em.Dispatch(
                dispatch_id=r.dispatch_id,
                event_id=r.event_id,
                at=r.at,
                state=r.state,
                scope=r.scope,
                scope_id=r.scope_id,
                detail=r.detail,
                target_kind=r.target_kind,
                target_id=r.target_id,
            )
            out.append((r, sites.get(r.dispatch_id, frozenset()), message("dispatch", data)))
        return out

    def _site_changes(
        self, by_site: dict[str, list[repo.AssetLatest]], now: datetime
    ) -> dict[str, Message]:
        """One ``telemetry`` message per watched site with a new reading since the last
        tick; a site watched for the first time is only taken note of."""
        before, self._seqs = self._seqs, {}
        out: dict[str, Message] = {}
        for site_id, assets in by_site.items():
            self._seqs[site_id] = {r.asset_id: r.seq for r in assets}
            seen = before.get(site_id)
            if seen is None:
                continue
            changed = [r for r in assets if seen.get(r.asset_id) != r.seq]
            if changed:
                out[site_id] = _telemetry(site_id, now, changed, assets)
        return out

    def _fleet_changes(self, rows: Sequence[repo.SiteSummary], now: datetime) -> Message | None:
        """One ``telemetry_batch`` of the sites whose summary changed (None: none did;
        the first tick only takes note)."""
        before = self._fleet
        self._fleet = {r.site_id: (r.total_kw, r.newest_ts, r.assets_reporting) for r in rows}
        if before is None:
            return None
        changed = [
            em.SiteSummary(
                site_id=r.site_id,
                total_kw=r.total_kw,
                newest_ts=r.newest_ts,
                assets_reporting=r.assets_reporting,
            )
            for r in sorted(rows)
            if before.get(r.site_id) != self._fleet[r.site_id]
        ]
        return (
            message("telemetry_batch", em.TelemetryBatch(at=now, sites=changed))
            if changed
            else None
        )


def newest(asset: repo.SiteAsset, held: LatestReading | None) -> repo.AssetLatest | None:
    """A watched asset's newest reading: the one this process holds in memory (ingest
    keeps every asset's newest stored reading) when its seq is higher than the stored
    row's, else the stored row; None when there is neither."""
    stored = asset.stored
    if held is None or (stored is not None and held.seq <= stored.seq):
        return stored
    return repo.AssetLatest(
        site_id=asset.site_id,
        asset_id=asset.asset_id,
        kind=asset.kind,
        seq=held.seq,
        ts=held.ts,
        power_kw=held.power_kw,
        soc_pct=held.soc_pct,
        status=held.status,
        setpoint_kw=held.setpoint_kw,
        setpoint_id=held.setpoint_id,
        available_min_kw=held.available_min_kw,
        available_max_kw=held.available_max_kw,
    )


def concerns(ev: repo.DispatchEvent, delivered: frozenset[str], sites: frozenset[str]) -> bool:
    """True when a transition concerns one of ``sites``: the dispatch is delivered to it
    (an asset of it, the site, or a group it is in), or it targets or names the site."""
    if delivered & sites:
        return True
    if ev.target_kind == "site" and ev.target_id in sites:
        return True
    return ev.scope == "site" and ev.scope_id in sites


def hello(sub: Subscription, *, replica: str, interval_s: float) -> Message:
    """A client's first event, once the feed has taken it in."""
    return message(
        "hello",
        em.Hello(
            replica=replica,
            interval_s=interval_s,
            topics=sorted(sub.topics),
            sites=None if sub.sites is None else sorted(sub.sites),
        ),
    )


def _by_site(
    watched: frozenset[str], rows: Sequence[repo.AssetLatest]
) -> dict[str, list[repo.AssetLatest]]:
    by_site: dict[str, list[repo.AssetLatest]] = {s: [] for s in watched}
    for r in rows:
        by_site[r.site_id].append(r)
    return by_site


def _telemetry(
    site_id: str,
    at: datetime,
    changed: Sequence[repo.AssetLatest],
    assets: Sequence[repo.AssetLatest],
) -> Message:
    """A site's ``telemetry`` message: the ``changed`` readings, and the summed power of
    the non-meter ``assets`` (all the site's latest readings)."""
    data = em.Telemetry(
        site_id=site_id,
        at=at,
        assets=[_reading(r) for r in sorted(changed, key=lambda r: r.asset_id)],
        total_kw=sum(r.power_kw for r in assets if r.kind != "meter"),
    )
    return message("telemetry", data)


def _reading(r: repo.AssetLatest) -> em.AssetReading:
    return em.AssetReading(
        asset_id=r.asset_id,
        ts=r.ts,
        seq=r.seq,
        power_kw=r.power_kw,
        soc_pct=r.soc_pct,
        status=status_name(r.status),
        setpoint_kw=r.setpoint_kw,
        setpoint_id=r.setpoint_id,
        available_min_kw=r.available_min_kw,
        available_max_kw=r.available_max_kw,
    )


__all__ = ["Changes", "Needs", "Out", "Reads", "concerns", "hello", "newest"]
