"""Telemetry ingest: dedupe on receipt, a bounded queue, and one background writer.

Receivers (one per gateway stream) call `Ingest.accept` per reading (duplicate and gap
bookkeeping against the per-asset watermark) and `Ingest.put` per frame. `put` waits
while the queue is full, so a stream handler stops reading and HTTP/2 flow control
pushes back on the gateway: nothing is dropped silently. The writer (`ingest_writer`) takes
batches off the queue and writes them with binary COPY (`db.telemetry_repo`); after each
commit it advances the per-asset *stored* watermark and the in-memory latest values,
which a second loop upserts into ``telemetry_latest`` in batches. Each commit observes
how old its readings were (``vpp_telemetry_lag_seconds``), and `reading_times` tells
/metrics when each site's newest reading was taken.

Neither task may die with ingest: a batch the database refuses is bisected until only the
refused rows are left (dropped and counted); a failure that is not about the rows (the
database away, a broken schema) keeps them and retries. Each task runs under a supervisor
that restarts it if it stops anyway, and `Ingest.problems` tells /ready meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .clock import Clock, utc_now
from .db import telemetry_repo as repo
from .db.engine import reader
from .db.telemetry_repo import ROW_ASSET_ID, ROW_ENVELOPE, ROW_SEQ, ROW_TS, Row
from .domain import Envelope, LatestReading
from .ingest_supervisor import Supervisor
from .ingest_writer import BatchWriter
from .logs import log_event
from .metrics import Metrics
from .row_queue import RowQueue
from .settings import Settings
from .watermarks import DUPLICATE, SeqTracker

log = logging.getLogger(__name__)

_ts_of = itemgetter(ROW_TS)


class ReadingTimes:
    """When the newest stored reading of each site and asset was taken, for /metrics
    (`metrics.ReadingTimes`): from this process's memory, and for the sites it has not
    stored a reading of since it started, from ``telemetry_latest`` as it was then, so a
    site that stayed offline across a headend restart still shows how stale it is.

    Computed when scraped, one pass over the assets held, a chunk at a time so the loop
    gets its turn (100,000 assets: about 25 ms in all): cheaper than keeping a per-site
    maximum on every stored reading (a scrape every 15 s reads 100,000 assets once; the
    writer stores that many every 4 s).
    """

    CHUNK = 10_000

    def __init__(self, latest: dict[str, list[Any]], site_of: dict[str, str]) -> None:
        self._latest = latest
        self._site_of = site_of
        #: site_id → ts of its newest reading in the database when this process started
        self.seeded: dict[str, datetime] = {}

    async def by_site(self) -> list[tuple[str, datetime]]:
        newest = dict(self.seeded)
        site_of = self._site_of
        held = list(self._latest.items())
        for start in range(0, len(held), self.CHUNK):
            if start:
                await asyncio.sleep(0)
            for asset_id, row in held[start : start + self.CHUNK]:
                site_id = site_of.get(asset_id)
                if site_id is None:
                    continue
                ts = row[ROW_TS]
                known = newest.get(site_id)
                if known is None or ts > known:
                    newest[site_id] = ts
        return list(newest.items())

    async def by_asset(self) -> list[tuple[tuple[str, str], datetime]]:
        site_of = self._site_of
        return [
            ((site_id, asset_id), row[ROW_TS])
            for asset_id, row in list(self._latest.items())
            if (site_id := site_of.get(asset_id)) is not None
        ]


class Ingest:
    """Owns the telemetry queue, the writer tasks and the per-asset watermarks."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        settings: Settings,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._engine = engine
        self._read = reader(engine)  # autocommit: reads cost no BEGIN/ROLLBACK
        self._metrics = metrics
        self._latest_interval = settings.latest_flush_interval_s
        # Rows per latest-flush transaction: short row locks, bounded work per step.
        self._latest_chunk = settings.latest_flush_chunk_rows
        self._clock = clock
        self.queue = RowQueue(settings.ingest_queue_rows)
        metrics.ingest_queue_capacity.set(settings.ingest_queue_rows)
        self._trackers: dict[str, SeqTracker] = {}
        self._stored: dict[str, int] = {}
        # One mutable slot per asset (a list holding a Row's fields), overwritten in
        # place: a new tuple kept per reading would live until that asset's next one,
        # and every young GC collection would walk all of them (docs/scaling.md).
        self._latest: dict[str, list[Any]] = {}
        self._site_of: dict[str, str] = {}  # asset_id → the site whose session served it last
        self.reading_times = ReadingTimes(self._latest, self._site_of)
        self._dirty: set[str] = set()
        self._stored_changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._supervisor = Supervisor(metrics)
        self._writer = BatchWriter(
            engine,
            metrics,
            self.queue,
            batch_rows=settings.ingest_batch_rows,
            linger_s=settings.ingest_linger_s,
            committed=self._on_committed,
        )
        self.gaps: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Read each site's newest reading time, then start the writer and the
        latest-value flusher, each under a supervisor."""
        await self._seed_reading_times()
        self._tasks = [
            asyncio.create_task(
                self._supervisor.run("writer", self._writer.run), name="ingest-writer-supervisor"
            ),
            asyncio.create_task(
                self._supervisor.run("latest", self._latest_loop),
                name="ingest-latest-supervisor",
            ),
        ]

    async def stop(self) -> None:
        """Write everything queued, flush latest values, stop the tasks."""
        await self.queue.close()
        self._supervisor.stopping.set()
        writer, latest = self._tasks or (None, None)
        if writer is not None:
            await writer
        if latest is not None:
            latest.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await latest
        await self._flush_latest()
        self._tasks = []
        await self._writer.close()

    def problems(self) -> list[str]:
        """What keeps ingest from storing readings right now (empty: nothing), for /ready."""
        out = [
            f"ingest {task} stopped ({why}); restarting"
            for task, why in self._supervisor.down.items()
        ]
        if self._writer.failing is not None:
            since, error = self._writer.failing
            out.append(
                f"ingest writer cannot write (for {time.monotonic() - since:.0f} s, "
                f"{self.queue.depth} rows waiting): {error}"
            )
        return out

    async def _seed_reading_times(self) -> None:
        """`ReadingTimes.seeded` from ``telemetry_latest`` (one GROUP BY); without it a
        site offline across a restart would drop out of /metrics and out of its alert."""
        try:
            async with self._read.connect() as conn:
                totals = await repo.site_totals(conn)
        except Exception as exc:  # metrics only: ingest works without it
            log_event(log, "reading_times_unavailable", level=logging.WARNING, error=exc)
            return
        self.reading_times.seeded = {site_id: t.newest_ts for site_id, t in totals.items()}

    # -- receive side (called by stream handlers) ------------------------------------------

    def served_by(self, site_id: str, asset_ids: Iterable[str]) -> None:
        """A session of ``site_id`` serves ``asset_ids``: their readings count for that
        site in /metrics (also after it disconnects)."""
        for asset_id in asset_ids:
            self._site_of[asset_id] = site_id

    def accept(self, asset_id: str, seq: int) -> bool:
        """True for a new reading; False for a duplicate (counted). Gaps are counted here."""
        tracker = self._trackers.get(asset_id)
        if tracker is None:
            tracker = self._trackers[asset_id] = SeqTracker(self._stored.get(asset_id, 0))
        outcome = tracker.offer(seq)
        if outcome == DUPLICATE:
            self._metrics.telemetry_duplicates.inc()
            return False
        if outcome:
            self._metrics.telemetry_gaps.inc(outcome)
            self.gaps[asset_id] = self.gaps.get(asset_id, 0) + outcome
        return True

    async def put(self, rows: list[Row]) -> None:
        """Queue accepted rows for writing; waits while the queue is full (backpressure)."""
        if rows:
            await self.queue.put(rows)
            self._metrics.ingest_queue_depth.set(self.queue.depth)

    async def load_watermarks(
        self, asset_ids: Iterable[str], conn: AsyncConnection | None = None
    ) -> None:
        """Load the stored watermark of assets this process has not tracked yet (on
        ``conn`` when given: a Register admits in one transaction)."""
        missing = [a for a in asset_ids if a not in self._trackers]
        if not missing:
            return
        if conn is None:
            async with self._read.connect() as own:
                found = await repo.stored_watermarks(own, missing)
        else:
            found = await repo.stored_watermarks(conn, missing)
        for asset_id, stored in found.items():
            if asset_id not in self._trackers:
                self._stored[asset_id] = max(self._stored.get(asset_id, 0), stored)
                self._trackers[asset_id] = SeqTracker(self._stored[asset_id])

    async def watermarks(self, asset_ids: Iterable[str], catch_up_s: float = 2.0) -> dict[str, int]:
        """Highest stored seq per asset, after waiting (bounded) for accepted rows to land."""
        ids = list(asset_ids)
        await self.load_watermarks(ids)

        def caught_up() -> bool:
            return all(self._stored.get(a, 0) >= self._trackers[a].hwm for a in ids)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(catch_up_s), self._stored_changed:
                await self._stored_changed.wait_for(caught_up)
        return {a: self._stored.get(a, 0) for a in ids}

    # -- read side -------------------------------------------------------------------------

    def held(self, asset_id: str) -> LatestReading | None:
        """The newest stored reading of an asset that this process holds in memory (None:
        it has stored none since it started; the database may hold one)."""
        row = self._latest.get(asset_id)
        return None if row is None else repo.reading(row)

    def envelope(self, asset_id: str) -> Envelope | None:
        """The envelope of the newest stored reading this process holds of an asset; None
        when it holds none or that reading reported no envelope (an older gateway). Not
        checked for age: `envelopes` is the planner's call."""
        row = self._latest.get(asset_id)
        return None if row is None else _envelope(row)

    async def envelopes(self, asset_ids: Iterable[str], max_age_s: float) -> dict[str, Envelope]:
        """Fresh envelopes of ``asset_ids``, by asset; an asset left out has none fresh, and
        the caller falls back to its registry limits.

        Fresh: the reading that reported it was taken (its ``ts``, by the gateway's clock)
        at most ``max_age_s`` before now (the injected clock). An asset's newest reading in
        this process's memory decides when it is fresh, envelope or not (a fresh reading
        without one is an older gateway: absent). An asset whose memory reading is stale
        or missing (its gateway is on another replica, or moved) is read from
        ``telemetry_latest`` in one query; that table is written every
        ``latest_flush_interval_s``, so another replica's envelope is up to that much
        older than in its own memory. A gateway clock behind by more than ``max_age_s``
        makes its envelopes stale, i.e. registry limits: the safe side.
        """
        now = self._clock()
        since = now - timedelta(seconds=max_age_s)
        out: dict[str, Envelope] = {}
        ask: list[str] = []
        for asset_id in dict.fromkeys(asset_ids):
            row = self._latest.get(asset_id)
            if row is None or row[ROW_TS] < since:
                ask.append(asset_id)
            elif (envelope := _envelope(row)) is not None:
                out[asset_id] = envelope
        if ask:
            async with self._read.connect() as conn:
                out |= await repo.fresh_envelopes(conn, ask, since)
        return out

    # -- after each commit ------------------------------------------------------------

    async def _on_committed(self, rows: list[Row]) -> None:
        stored, latest, dirty = self._stored, self._latest, self._dirty
        at_id, at_seq = ROW_ASSET_ID, ROW_SEQ
        by_position: Sequence[Sequence[Any]] = rows  # a Row's fields, by ROW_* index
        for row in by_position:
            asset_id, seq = row[at_id], row[at_seq]
            if seq > stored.get(asset_id, 0):
                stored[asset_id] = seq
            current = latest.get(asset_id)
            if current is None:
                latest[asset_id] = list(row)
                dirty.add(asset_id)
            elif seq > current[at_seq]:
                current[:] = row
                dirty.add(asset_id)
        self._metrics.telemetry_rows.inc(len(rows))
        self._metrics.telemetry_lag.observe_since(self._clock(), map(_ts_of, by_position))
        async with self._stored_changed:
            self._stored_changed.notify_all()

    # -- latest values -----------------------------------------------------------------------

    async def _latest_loop(self) -> None:
        while True:
            await asyncio.sleep(self._latest_interval)
            try:
                await self._flush_latest()
            except Exception as exc:  # the ids stay dirty: retried at the next interval
                log_event(log, "latest_flush_failed", level=logging.WARNING, error=exc)

    async def _flush_latest(self) -> None:
        if not self._dirty:
            return
        ids, self._dirty = sorted(self._dirty), set()
        latest, chunk = self._latest, self._latest_chunk
        start = 0
        try:
            for start in range(0, len(ids), chunk):
                rows = [latest[a] for a in ids[start : start + chunk]]
                await repo.upsert_latest(self._engine, rows)
        except BaseException:
            self._dirty.update(ids[start:])
            raise


def _envelope(row: Sequence[Any]) -> Envelope | None:
    """The envelope a held row reported, with its reading's ts; None when it reported none
    (an older gateway)."""
    lo, hi, stable = row[ROW_ENVELOPE]
    if lo is None and hi is None and stable is None:
        return None
    return Envelope(lo, hi, stable, row[ROW_TS])


__all__ = ["Ingest", "ReadingTimes"]
