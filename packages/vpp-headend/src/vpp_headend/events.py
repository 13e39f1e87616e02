"""The live event feed behind ``GET /events`` (docs/decisions.md, "Live events").

The replica that holds a gateway's stream is not necessarily the one serving the browser,
so the database is the bus: one `EventFeed` per process reads what changed from the
tables every replica writes — dispatch transitions, gateway session rows, latest
readings — every ``events_interval_s``, and only while a client is subscribed. Each tick
makes at most four statements, whatever the number of clients or sites, and the feed
never touches the ingest path: a slow browser cannot slow ingest.

Each client is a `Subscription`: a bounded queue the feed offers to and never waits on.
A full queue drops (counted; the client is sent ``overflow`` with the count when it has
room again, and re-fetches state), and a client whose queue stays full for
``events_stall_s`` is dropped from the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import event_messages as em
from .clock import Clock, utc_now
from .db import events_repo as repo
from .domain import status_name
from .event_messages import Message, message
from .logs import log_event
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

# Transitions read per tick at most (a backlog is read on at the next ticks).
_DISPATCH_BATCH = 2_000
# An id skipped by a read (its transaction had not committed) is looked for this long;
# after that it was rolled back. At most this many are kept.
_GAP_TTL_S = 30.0
_GAPS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A subscribed client as the feed sees it (a snapshot, read-only)."""

    topics: tuple[str, ...]
    sites: tuple[str, ...] | None  # None: every site
    queued: int  # messages waiting for the client to read them
    bound: int  # at most this many ever wait
    dropped: int  # messages dropped since it connected
    live: bool  # its hello was sent: it gets every change from then on


class Subscription:
    """One client: the topics and sites it asked for and its bounded queue.

    The feed calls `offer` (never waits); the client's stream awaits `get`.
    """

    def __init__(
        self,
        topics: frozenset[str],
        sites: frozenset[str] | None,
        *,
        bound: int,
        metrics: Metrics,
    ) -> None:
        self.topics = topics
        self.sites = sites
        self.bound = bound
        self.live = False
        self.closed = False
        self.dropped = 0
        self.full_since: float | None = None
        self._metrics = metrics
        self._queue: deque[Message] = deque()
        self._lost = 0  # dropped since the last overflow notice
        self._wake = asyncio.Event()

    def wants(self, topic: str, site_id: str | None = None) -> bool:
        """True when the client asked for ``topic`` (for ``site_id``, when given)."""
        if topic not in self.topics:
            return False
        return site_id is None or self.sites is None or site_id in self.sites

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.bound

    def offer(self, msg: Message) -> None:
        """Queue ``msg`` unless the queue is full (then it is dropped and counted). After
        drops, the overflow notice goes first, in order, once there is room for both."""
        if self.closed:
            return
        if self._lost and len(self._queue) + 2 <= self.bound:
            self._queue.append(self._overflow())
        if self._lost or len(self._queue) >= self.bound:
            self._lost += 1
            self.dropped += 1
            self._metrics.events_dropped.inc()
            return
        self._queue.append(msg)
        self._wake.set()

    async def get(self, wait_s: float) -> Message | None:
        """The next message; None when none came within ``wait_s`` (time for a keepalive)
        or the subscription is closed (`closed` then says so)."""
        while not self.closed:
            if self._queue:
                msg = self._queue.popleft()
            elif self._lost:  # drained after drops, and nothing new came
                msg = self._overflow()
            else:
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                except TimeoutError:
                    return None
                continue
            self._metrics.events_sent.labels(msg.event).inc()
            return msg
        return None

    def close(self) -> None:
        """End the subscription: `get` returns None at once and nothing more is queued."""
        self.closed = True
        self._queue.clear()
        self._wake.set()

    def stats(self) -> ClientStats:
        return ClientStats(
            topics=tuple(sorted(self.topics)),
            sites=None if self.sites is None else tuple(sorted(self.sites)),
            queued=len(self._queue),
            bound=self.bound,
            dropped=self.dropped,
            live=self.live,
        )

    def _overflow(self) -> Message:
        msg = message("overflow", em.Overflow(dropped=self._lost))
        self._lost = 0
        return msg


@dataclass(slots=True)
class _Needs:
    """What one tick reads, from the subscriptions it serves."""

    dispatch: bool = False
    dispatch_sites: bool = False  # some dispatch subscriber filters by site
    gateway: bool = False
    fleet: bool = False  # some telemetry subscriber watches every site
    watched: frozenset[str] = frozenset()  # sites some telemetry subscriber watches

    @classmethod
    def of(cls, subs: Iterable[Subscription]) -> _Needs:
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
class _Out:
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


class EventFeed:
    """Reads the changes every ``events_interval_s`` while a client is subscribed, and
    fans them out to the subscriptions."""

    def __init__(
        self,
        read: AsyncEngine,
        metrics: Metrics,
        settings: Settings,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._read = read  # autocommit (`db.engine.reader`): each read is one statement
        self._metrics = metrics
        self._clock = clock
        self._replica = settings.replica
        self.interval_s = settings.events_interval_s
        self._bound = settings.events_client_queue
        self._stall_s = settings.events_stall_s
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._failing = False
        self._reset()

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str], sites: Iterable[str] | None) -> Subscription:
        """A new client's subscription (``sites`` None: every site). Its hello is queued
        after the next tick has taken its topics and sites in. After `stop`, it is closed
        from the start."""
        sub = Subscription(
            frozenset(topics),
            None if sites is None else frozenset(sites),
            bound=self._bound,
            metrics=self._metrics,
        )
        if self._stopped:
            sub.close()
            return sub
        self._subs.add(sub)
        self._metrics.events_clients.set(len(self._subs))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="events-feed")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """The client is gone (idempotent); the ticker stops after the last one."""
        sub.close()
        self._subs.discard(sub)
        self._metrics.events_clients.set(len(self._subs))

    @property
    def clients(self) -> list[ClientStats]:
        """Every subscribed client, as the feed sees it."""
        return [s.stats() for s in self._subs]

    @property
    def running(self) -> bool:
        """True while the ticker runs (some client is subscribed)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """End every client's stream and the ticker; later subscriptions end at once."""
        self._stopped = True
        for sub in list(self._subs):
            self.unsubscribe(sub)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the ticker ------------------------------------------------------------------------

    def _reset(self) -> None:
        """Forget what was read: the next tick starts from what is there then."""
        self._after: int | None = None  # newest transition read
        self._gaps: dict[int, float] = {}  # skipped ids -> when to stop looking
        self._sessions: dict[str, tuple[UUID, bool]] | None = None
        self._seqs: dict[str, dict[str, int]] = {}  # watched site -> asset -> seq
        self._fleet: dict[str, tuple[float, datetime, int]] | None = None

    async def _run(self) -> None:
        try:
            while self._subs:
                try:
                    await self._tick()
                except Exception as exc:  # a bug in one tick must not end every stream
                    log_event(log, "events_tick_failed", level=logging.ERROR, error=exc)
                await asyncio.sleep(self.interval_s)
        finally:
            self._reset()

    async def _tick(self) -> None:
        joining = [s for s in self._subs if not s.live]
        needs = _Needs.of(self._subs)
        try:
            out = await self._read_changes(needs)
        except Exception as exc:  # the database is away: keep what we had, try next tick
            if not self._failing:
                log_event(log, "events_read_failed", level=logging.WARNING, error=exc)
            self._failing = True
            return
        if self._failing:
            log_event(log, "events_read_recovered")
            self._failing = False
        for sub in [s for s in self._subs if s.live]:
            self._deliver(sub, out)
        for sub in joining:
            if not sub.closed:
                sub.live = True
                sub.offer(self._hello(sub))
                if "telemetry" in sub.topics:
                    for key in (None,) if sub.sites is None else sorted(sub.sites):
                        if (snapshot := self._snapshot(out, key)) is not None:
                            sub.offer(snapshot)
        self._drop_stalled()

    def _snapshot(self, out: _Out, site_id: str | None) -> Message | None:
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

    async def _read_changes(self, needs: _Needs) -> _Out:
        """Every read first, then the diffs: a read that fails leaves the state as it
        was, so the next tick reports the same changes again rather than losing them."""
        out = _Out(at=self._clock())
        gateway_rows = site_rows = fleet_rows = None
        dispatch: list[repo.DispatchEvent] | int | None = None
        async with self._read.connect() as conn:
            if needs.gateway:
                gateway_rows = await repo.gateways(conn)
            if needs.dispatch:
                dispatch = await self._read_dispatch(conn, needs.dispatch_sites)
            if needs.watched:
                site_rows = await repo.site_latest(conn, sorted(needs.watched))
            if needs.fleet:
                fleet_rows = await repo.fleet(conn)
        if gateway_rows is None:
            self._sessions = None
        else:
            out.gateways = self._gateway_changes(gateway_rows)
        if dispatch is None:
            self._after, self._gaps = None, {}
        elif isinstance(dispatch, int):
            self._after = dispatch
        else:
            out.dispatches = self._dispatch_changes(dispatch)
        if site_rows is None:
            self._seqs = {}
        else:
            out.site_rows = _by_site(needs.watched, site_rows)
            out.sites = self._site_changes(out.site_rows, out.at)
        if fleet_rows is None:
            self._fleet = None
        else:
            out.fleet = self._fleet_changes(fleet_rows, out.at)
        return out

    def _deliver(self, sub: Subscription, out: _Out) -> None:
        if "gateway" in sub.topics:
            for site_id, msg in out.gateways:
                if sub.sites is None or site_id in sub.sites:
                    sub.offer(msg)
        if "dispatch" in sub.topics:
            for ev, sites, msg in out.dispatches:
                if sub.sites is None or _concerns(ev, sites, sub.sites):
                    sub.offer(msg)
        if "telemetry" in sub.topics:
            if sub.sites is None:
                if out.fleet is not None:
                    sub.offer(out.fleet)
            else:
                for site_id in sorted(sub.sites & out.sites.keys()):
                    sub.offer(out.sites[site_id])

    def _hello(self, sub: Subscription) -> Message:
        return message(
            "hello",
            em.Hello(
                replica=self._replica,
                interval_s=self.interval_s,
                topics=sorted(sub.topics),
                sites=None if sub.sites is None else sorted(sub.sites),
            ),
        )

    def _drop_stalled(self) -> None:
        """A client whose queue stayed full for ``events_stall_s`` is dropped: its
        stream ends as soon as it reads again (or its connection closes)."""
        now = time.monotonic()
        for sub in list(self._subs):
            if not sub.full:
                sub.full_since = None
            elif sub.full_since is None:
                sub.full_since = now
            elif now - sub.full_since >= self._stall_s:
                log_event(log, "events_client_dropped", level=logging.WARNING, dropped=sub.dropped)
                self.unsubscribe(sub)

    # -- what changed ----------------------------------------------------------------------

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

    async def _read_dispatch(
        self, conn: AsyncConnection, with_sites: bool
    ) -> list[repo.DispatchEvent] | int:
        """Transitions after the newest read and the gaps still looked for; on the first
        tick, the newest transition's id (the feed starts there)."""
        if self._after is None:
            return await repo.last_event_id(conn)
        now = time.monotonic()
        self._gaps = {i: until for i, until in self._gaps.items() if until > now}
        return await repo.dispatch_events(
            conn,
            after=self._after,
            gaps=sorted(self._gaps),
            limit=_DISPATCH_BATCH,
            with_sites=with_sites,
        )

    def _dispatch_changes(
        self, rows: Sequence[repo.DispatchEvent]
    ) -> list[tuple[repo.DispatchEvent, frozenset[str], Message]]:
        """The transitions read, in id order, each with the sites its dispatch is
        delivered to. An id below the newest read but not seen is looked for again for
        `_GAP_TTL_S`: its transaction took the id first and committed later."""
        assert self._after is not None
        now = time.monotonic()
        seen = {r.event_id for r in rows}
        for i in seen:
            self._gaps.pop(i, None)
        newest = max(seen, default=self._after)
        if newest > self._after:
            skipped = newest - self._after - len([i for i in seen if i > self._after])
            if skipped > 0 and len(self._gaps) + skipped <= _GAPS_MAX:
                for i in range(self._after + 1, newest):
                    if i not in seen:
                        self._gaps[i] = now + _GAP_TTL_S
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


def _concerns(ev: repo.DispatchEvent, delivered: frozenset[str], sites: frozenset[str]) -> bool:
    """True when a transition concerns one of ``sites``: the dispatch is delivered to it
    (an asset of it, the site, or a group it is in), or it targets or names the site."""
    if delivered & sites:
        return True
    if ev.target_kind == "site" and ev.target_id in sites:
        return True
    return ev.scope == "site" and ev.scope_id in sites


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


__all__ = ["ClientStats", "EventFeed", "Subscription"]
