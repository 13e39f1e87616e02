"""`EventFeed`: the subscriptions, the ticker that reads what changed while one is
subscribed, and the fan-out of each tick's messages (see the package's docstring).

Where a watched site's readings come from: the ``telemetry_latest`` rows (every
replica's, flushed every ``latest_flush_interval_s``), each replaced by the reading this
process holds in memory (``held``: ingest's newest stored reading) when that one's seq
is higher — so a browser on the replica that holds the gateway sees a reading about one
``events_interval_s`` after it is stored, not a flush later; on any other replica it
comes with the flush. The fleet summary stays database-only: it spans every replica's
sites, as one GROUP BY over the table, and a process holds only its own gateways'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..clock import Clock, utc_now
from ..db import events_repo as repo
from ..domain import LatestReading
from ..logs import log_event
from ..metrics import Metrics
from ..settings import Settings
from .changes import Changes, Needs, Out, Reads, concerns, hello, newest
from .subscription import ClientStats, Subscription

log = logging.getLogger(__name__)

# Transitions read per tick at most (a backlog is read on at the next ticks).
_DISPATCH_BATCH = 2_000

#: An asset's newest reading held in this process's memory (`Ingest.held`).
Held = Callable[[str], LatestReading | None]


class EventFeed:
    """Reads the changes every ``events_interval_s`` while a client is subscribed, and
    fans them out to the subscriptions. ``held``: the readings this process holds, newer
    than the table on the replica holding a gateway (None: the table only)."""

    def __init__(
        self,
        read: AsyncEngine,
        metrics: Metrics,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        held: Held | None = None,
    ) -> None:
        self._read = read  # autocommit (`db.engine.reader`): each read is one statement
        self._metrics = metrics
        self._clock = clock
        self._held = held
        self._replica = settings.replica
        self.interval_s = settings.events_interval_s
        self._bound = settings.events_client_queue
        self._stall_s = settings.events_stall_s
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._failing = False
        self._changes = Changes()

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

    async def _run(self) -> None:
        try:
            while self._subs:
                try:
                    await self._tick()
                except Exception as exc:  # a bug in one tick must not end every stream
                    log_event(log, "events_tick_failed", level=logging.ERROR, error=exc)
                await asyncio.sleep(self.interval_s)
        finally:
            self._changes.reset()

    async def _tick(self) -> None:
        joining = [s for s in self._subs if not s.live]
        needs = Needs.of(self._subs)
        at = self._clock()
        try:
            reads = await self._read_changes(needs)
        except Exception as exc:  # the database is away: keep what we had, try next tick
            if not self._failing:
                log_event(log, "events_read_failed", level=logging.WARNING, error=exc)
            self._failing = True
            return
        if self._failing:
            log_event(log, "events_read_recovered")
            self._failing = False
        # Every read first, then the diffs: a read that fails leaves the watermarks as
        # they were, so the next tick reports the same changes again, not losing them.
        out = self._changes.apply(needs, reads, at)
        for sub in [s for s in self._subs if s.live]:
            _deliver(sub, out)
        for sub in joining:
            if not sub.closed:
                sub.live = True
                sub.offer(hello(sub, replica=self._replica, interval_s=self.interval_s))
                if "telemetry" in sub.topics:
                    for key in (None,) if sub.sites is None else sorted(sub.sites):
                        if (snapshot := self._changes.snapshot(out, key)) is not None:
                            sub.offer(snapshot)
        self._drop_stalled()

    async def _read_changes(self, needs: Needs) -> Reads:
        """What this tick's subscriptions need, one statement each."""
        reads = Reads()
        stored: list[repo.SiteAsset] | None = None
        async with self._read.connect() as conn:
            if needs.gateway:
                reads.gateways = await repo.gateways(conn)
            if needs.dispatch:
                reads.dispatch = await self._read_dispatch(conn, needs.dispatch_sites)
            if needs.watched:
                stored = await repo.site_latest(conn, sorted(needs.watched))
            if needs.fleet:
                reads.fleet = await repo.fleet(conn)
        if stored is not None:
            held = self._held or _nothing_held
            reads.sites = [r for a in stored if (r := newest(a, held(a.asset_id))) is not None]
        return reads

    async def _read_dispatch(
        self, conn: AsyncConnection, with_sites: bool
    ) -> list[repo.DispatchEvent] | int:
        """Transitions after the newest read and the gaps still looked for; on the first
        tick, the newest transition's id (the feed starts there)."""
        cursor = self._changes.dispatch_cursor()
        if cursor is None:
            return await repo.last_event_id(conn)
        after, gaps = cursor
        return await repo.dispatch_events(
            conn, after=after, gaps=gaps, limit=_DISPATCH_BATCH, with_sites=with_sites
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


def _deliver(sub: Subscription, out: Out) -> None:
    """Offer a live client this tick's messages for its topics and sites."""
    if "gateway" in sub.topics:
        for site_id, msg in out.gateways:
            if sub.sites is None or site_id in sub.sites:
                sub.offer(msg)
    if "dispatch" in sub.topics:
        for ev, sites, msg in out.dispatches:
            if sub.sites is None or concerns(ev, sites, sub.sites):
                sub.offer(msg)
    if "telemetry" in sub.topics:
        if sub.sites is None:
            if out.fleet is not None:
                sub.offer(out.fleet)
        else:
            for site_id in sorted(sub.sites & out.sites.keys()):
                sub.offer(out.sites[site_id])


def _nothing_held(_asset_id: str) -> LatestReading | None:
    return None


__all__ = ["EventFeed", "Held"]
