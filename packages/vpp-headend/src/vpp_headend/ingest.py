"""Telemetry ingest: dedupe on receipt, a bounded queue, and one background writer.

Receivers (one per gateway stream) call `Ingest.accept` per reading (duplicate and gap
bookkeeping against the per-asset watermark) and `Ingest.put` per frame. `put` waits
while the queue is full, so a stream handler stops reading and HTTP/2 flow control
pushes back on the gateway: nothing is dropped silently. The writer takes batches off
the queue and writes them with binary COPY on the raw psycopg connection; after each
commit it advances the per-asset *stored* watermark and the in-memory latest values,
which a second loop upserts into ``telemetry_latest`` in batches.

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
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .convert import Row
from .db.engine import DB_UNAVAILABLE, reader
from .db.models import TELEMETRY_COLUMNS, TELEMETRY_COPY_TYPES
from .domain import Envelope, LatestReading
from .logs import kv, log_event
from .metrics import Metrics
from .watermarks import DUPLICATE, SeqTracker

log = logging.getLogger(__name__)

_COLUMNS = ", ".join(TELEMETRY_COLUMNS)
COPY_TELEMETRY = f"COPY telemetry ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = list(TELEMETRY_COPY_TYPES)
# Where a Row (and a latest slot) holds the reading's time and its envelope.
_TS = TELEMETRY_COLUMNS.index("ts")
_ENVELOPE = slice(
    TELEMETRY_COLUMNS.index("available_min_kw"), TELEMETRY_COLUMNS.index("min_stable_kw") + 1
)
# Latest values go through a session-local staging table: binary COPY in, one upsert
# out. Binding nine arrays instead (unnest) spent most of the flush in psycopg's
# per-element array dumper, in the event loop: about a second every flush at 50,000
# assets, which stalled every stream and dispatch on the process meanwhile.
_LATEST_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_latest_stage "
    "(LIKE telemetry_latest) ON COMMIT DELETE ROWS"
)
_COPY_LATEST = f"COPY telemetry_latest_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_UPSERT_LATEST = f"""
    INSERT INTO telemetry_latest AS l ({_COLUMNS})
    SELECT {_COLUMNS} FROM telemetry_latest_stage
    ON CONFLICT (asset_id) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in TELEMETRY_COLUMNS[1:])}
    WHERE l.seq < EXCLUDED.seq
    """
# SQLSTATE classes that blame the rows written: data exception (a NUL in text, a number out
# of range), integrity (NOT NULL, CHECK), program limit (a value too large). Any other
# server error refuses every row alike (undefined column, permission, ...): keep the rows.
_ROW_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
_RESTART_FIRST_S = 1.0  # a stopped task waits this long before its restart, doubling...
_RESTART_MAX_S = 30.0  # ...up to this while it keeps stopping
_HEALTHY_RUN_S = 60.0  # a task that ran this long before it stopped restarts at once again
_LATEST_CHUNK = 10_000  # rows per flush transaction: short row locks, bounded work per step
# Highest stored seq per asset. telemetry_latest can lag history after a crash (it is
# flushed in batches), so history newer than the latest row is checked too; that range
# is small and served by the (asset_id, ts) index.
_WATERMARKS = text(
    """
    SELECT a.asset_id,
           GREATEST(l.seq, (SELECT max(t.seq) FROM telemetry t
                            WHERE t.asset_id = a.asset_id
                              AND t.ts >= COALESCE(l.ts - interval '1 hour', '-infinity')))
    FROM unnest(CAST(:ids AS text[])) AS a(asset_id)
    LEFT JOIN telemetry_latest l ON l.asset_id = a.asset_id
    """
)
# The newest stored reading when this process has none in memory (another replica holds
# the gateway, or the row was committed a moment before the writer updated memory):
# telemetry_latest is flushed in batches, so the newest history row is read too (one
# index probe per partition on (asset_id, ts)).
_LATEST = text(
    f"""
    SELECT {_COLUMNS} FROM (
        SELECT {_COLUMNS} FROM telemetry_latest WHERE asset_id = :a
        UNION ALL
        (SELECT {_COLUMNS} FROM telemetry WHERE asset_id = :a ORDER BY ts DESC, seq DESC LIMIT 1)
    ) newest
    ORDER BY seq DESC
    LIMIT 1
    """
)
# Fresh envelopes of assets this process holds no fresh reading of (DESIGN.md §3a): one
# primary-key probe per asset on telemetry_latest, no history read (see `envelopes`).
_ENVELOPES = text(
    """
    SELECT asset_id, available_min_kw, available_max_kw, min_stable_kw, ts
    FROM telemetry_latest
    WHERE asset_id = ANY(CAST(:ids AS text[])) AND ts >= :since
      AND (available_min_kw IS NOT NULL OR available_max_kw IS NOT NULL
           OR min_stable_kw IS NOT NULL)
    """
)


class RowQueue:
    """A FIFO of row chunks bounded by the total number of rows."""

    def __init__(self, max_rows: int) -> None:
        self._max = max_rows
        self._chunks: deque[list[Row]] = deque()
        self._rows = 0
        # Two conditions on one lock, and no notify_all on the hot path: a put wakes only
        # the writer; a get wakes the first waiting putter, and each putter that got room
        # wakes the next while room remains (a baton, FIFO). A shared condition with
        # notify_all woke every waiting stream per frame (or per batch): O(streams) each
        # time, which saturated the event loop near 9,000 gateways once the queue was full.
        lock = asyncio.Lock()
        self._not_empty = asyncio.Condition(lock)
        self._not_full = asyncio.Condition(lock)
        self._closed = False

    @property
    def depth(self) -> int:
        """Rows waiting."""
        return self._rows

    async def put(self, rows: list[Row]) -> None:
        """Append a chunk, waiting while the queue is full (an oversized chunk waits for empty)."""
        async with self._not_full:
            try:
                await self._not_full.wait_for(
                    lambda: self._closed or self._rows == 0 or self._rows + len(rows) <= self._max
                )
            except asyncio.CancelledError:
                self._not_full.notify()  # pass on a wake-up this putter may have taken
                raise
            self._chunks.append(rows)
            self._rows += len(rows)
            self._not_empty.notify()
            if self._rows < self._max:
                self._not_full.notify()

    async def get(self, max_rows: int) -> list[Row]:
        """Up to ``max_rows`` rows, waiting for the first; [] once closed and empty."""
        async with self._not_empty:
            await self._not_empty.wait_for(lambda: self._rows > 0 or self._closed)
            out: list[Row] = []
            while self._chunks and len(out) < max_rows:
                chunk = self._chunks[0]
                room = max_rows - len(out)
                if len(chunk) <= room:
                    out += self._chunks.popleft()
                else:
                    out += chunk[:room]
                    self._chunks[0] = chunk[room:]
            self._rows -= len(out)
            self._not_full.notify()
            return out

    async def close(self) -> None:
        """Let `get` return [] once empty and release waiting putters."""
        async with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()


class Ingest:
    """Owns the telemetry queue, the writer tasks and the per-asset watermarks."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        queue_rows: int,
        batch_rows: int,
        latest_flush_interval_s: float,
        linger_s: float = 0.05,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._read = reader(engine)  # autocommit: reads cost no BEGIN/ROLLBACK
        self._metrics = metrics
        self._batch_rows = batch_rows
        self._linger = linger_s
        self._latest_interval = latest_flush_interval_s
        self._clock = clock
        self.queue = RowQueue(queue_rows)
        self._trackers: dict[str, SeqTracker] = {}
        self._stored: dict[str, int] = {}
        # One mutable slot per asset, overwritten in place: a new tuple kept per reading
        # survived until that asset's next reading, so every young GC collection walked
        # all readings since the last one (100,000+ at 10,000 readings/s: 50-150 ms
        # pauses). The slot is a list holding a Row's fields.
        self._latest: dict[str, list[Any]] = {}
        self._dirty: set[str] = set()
        self._stored_changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._down: dict[str, str] = {}  # task → why it stopped, until it is restarted
        self._failing: tuple[float, str] | None = None  # writer: since (monotonic), error
        # Parts of the batch being written, the next one last: a restarted writer goes
        # on with them instead of losing the batch it held.
        self._pending: list[list[Row]] = []
        self._conn: AsyncConnection | None = None  # the writer's
        self._rate_window: deque[tuple[float, int]] = deque()
        self._rate_sum = 0
        self.gaps: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer and the latest-value flusher, each under a supervisor."""
        self._tasks = [
            asyncio.create_task(
                self._supervise("writer", self._writer), name="ingest-writer-supervisor"
            ),
            asyncio.create_task(
                self._supervise("latest", self._latest_loop), name="ingest-latest-supervisor"
            ),
        ]

    async def stop(self) -> None:
        """Write everything queued, flush latest values, stop the tasks."""
        await self.queue.close()
        self._stopping.set()
        writer, latest = self._tasks or (None, None)
        if writer is not None:
            await writer
        if latest is not None:
            latest.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await latest
        await self._flush_latest()
        self._tasks = []
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def problems(self) -> list[str]:
        """What keeps ingest from storing readings right now (empty: nothing), for /ready."""
        out = [f"ingest {task} stopped ({why}); restarting" for task, why in self._down.items()]
        if self._failing is not None:
            since, error = self._failing
            out.append(
                f"ingest writer cannot write (for {time.monotonic() - since:.0f} s, "
                f"{self.queue.depth} rows waiting): {error}"
            )
        return out

    async def _supervise(self, task: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``body`` as task ``ingest-<task>`` and restart it, with backoff, each time it
        stops unexpectedly; return when it returns (`stop`)."""
        up = self._metrics.ingest_task_up.labels(task)
        delay = _RESTART_FIRST_S
        while True:
            inner = asyncio.create_task(body(), name=f"ingest-{task}")
            started = time.monotonic()
            up.set(1)
            try:
                await asyncio.wait({inner})
            except asyncio.CancelledError:
                inner.cancel()
                await asyncio.gather(inner, return_exceptions=True)
                raise
            finally:
                up.set(0)
            failure = None if inner.cancelled() else inner.exception()
            if failure is None and not inner.cancelled():
                return
            why = "cancelled" if failure is None else f"{type(failure).__name__}: {failure}"
            if time.monotonic() - started >= _HEALTHY_RUN_S:
                delay = _RESTART_FIRST_S
            self._down[task] = why
            log.error(
                "%s",
                kv("ingest_task_stopped", task=task, error=why, restart_in_s=delay),
                exc_info=failure,
            )
            if self._stopping.is_set():
                return  # stopping: a task that fails now would fail the restart too
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()  # a stop restarts at once, to drain
            delay = min(delay * 2, _RESTART_MAX_S)
            del self._down[task]
            self._metrics.ingest_task_restarts.labels(task).inc()
            log_event(log, "ingest_task_restarted", task=task)

    # -- receive side (called by stream handlers) ------------------------------------------

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
                rows = (await own.execute(_WATERMARKS, {"ids": missing})).all()
        else:
            rows = (await conn.execute(_WATERMARKS, {"ids": missing})).all()
        for asset_id, wm in rows:
            if asset_id not in self._trackers:
                stored = int(wm or 0)
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

    def latest_in_memory(self) -> Iterable[tuple[str, datetime]]:
        """(asset_id, ts) of the newest stored reading of every asset seen by this process."""
        return [(a, row[_TS]) for a, row in list(self._latest.items())]

    async def latest(self, asset_id: str) -> LatestReading | None:
        """The newest stored reading of an asset (memory first, then the database)."""
        row = self._latest.get(asset_id)
        if row is None:
            async with self._read.connect() as conn:
                found = (await conn.execute(_LATEST, {"a": asset_id})).first()
            if found is None:
                return None
            return LatestReading(*found)
        return LatestReading(*row)

    def envelope(self, asset_id: str) -> Envelope | None:
        """The envelope of the newest stored reading this process holds of an asset; None
        when it holds none or that reading reported no envelope (an older gateway). Not
        checked for age: `envelopes` is the planner's call."""
        row = self._latest.get(asset_id)
        if row is None:
            return None
        lo, hi, stable = row[_ENVELOPE]
        if lo is None and hi is None and stable is None:
            return None
        return Envelope(lo, hi, stable, row[_TS])

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
            if row is None or row[_TS] < since:
                ask.append(asset_id)
                continue
            lo, hi, stable = row[_ENVELOPE]
            if lo is not None or hi is not None or stable is not None:
                out[asset_id] = Envelope(lo, hi, stable, row[_TS])
        if ask:
            async with self._read.connect() as conn:
                found = (await conn.execute(_ENVELOPES, {"ids": ask, "since": since})).all()
            for asset_id, lo, hi, stable, ts in found:
                out[asset_id] = Envelope(lo, hi, stable, ts)
        return out

    # -- writer ----------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            if not self._pending:  # a restarted writer first finishes the batch it held
                rows = await self._next_batch()
                if not rows:
                    return
                self._pending.append(rows)
            await self._store()

    async def _next_batch(self) -> list[Row]:
        rows = await self.queue.get(self._batch_rows)
        if rows and len(rows) < self._batch_rows:
            # Thousands of gateways each send a small frame: wait a moment and write
            # them in one COPY and one commit instead of one each (a commit costs a
            # few round trips and an fsync; the lag this adds is ``linger_s``).
            await asyncio.sleep(self._linger)
            if self.queue.depth:
                rows += await self.queue.get(self._batch_rows - len(rows))
        self._metrics.ingest_queue_depth.set(self.queue.depth)
        return rows

    async def _store(self) -> None:
        """Write the pending batch. A part the database refuses is halved until the rows
        it refuses stand alone: those are dropped, every other row is stored."""
        pending = self._pending
        refused: list[Row] = []
        error: Exception | None = None
        while pending:
            part = pending[-1]
            failure = await self._write(part)
            pending.pop()
            if failure is None:
                await self._committed(part)
            elif len(part) == 1:
                refused += part
                error = error or failure
            else:
                half = len(part) // 2
                pending += (part[half:], part[:half])  # the first half is written first
        if refused:
            self._refused(refused, error)

    async def _write(self, rows: list[Row]) -> Exception | None:
        """COPY and commit ``rows``: None when stored, the error when the database (or the
        COPY formatter) refused them. Any other failure is retried with the rows kept."""
        delay = 0.1
        while True:
            started = time.perf_counter()
            try:
                await self._copy(rows)
            except Exception as exc:
                if _about_rows(exc):
                    return exc
                # The database is away or refuses every row alike: keep the rows
                # (receivers block on the full queue) and say so on /ready.
                if self._failing is None:
                    self._failing = (time.monotonic(), f"{type(exc).__name__}: {exc}")
                log_event(log, "ingest_retry", level=logging.WARNING, rows=len(rows), error=exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._failing = None
            self._metrics.ingest_write_seconds.observe(time.perf_counter() - started)
            return None

    def _refused(self, rows: list[Row], error: Exception | None) -> None:
        """Rows the database will never take: count them, one log line per batch."""
        self._metrics.telemetry_dropped.labels("write_error").inc(len(rows))
        self._metrics.telemetry_rejected.labels("write_error").inc(len(rows))
        log_event(
            log,
            "ingest_rows_rejected",
            level=logging.ERROR,
            rows=len(rows),
            first=repr(rows[0])[:300],
            error=f"{type(error).__name__}: {error}",
            detail="the rest of the batch was stored",
        )

    async def _copy(self, rows: list[Row]) -> None:
        # The writer keeps one connection: a pool checkout costs a pre-ping round trip,
        # once per batch. A refused row leaves it usable after a rollback (bisection
        # writes again at once); any other failure drops it (the retry reconnects).
        if self._conn is None:
            self._conn = await self._engine.connect()
        try:
            pg = await _driver(self._conn)
            async with pg.cursor() as cur:
                await copy_rows(cur, COPY_TELEMETRY, rows)
            await pg.commit()
        except Exception as exc:
            if not (_about_rows(exc) and await _rolled_back(self._conn)):
                await self._drop_connection()
            raise
        except BaseException:
            await self._drop_connection()
            raise

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _committed(self, rows: list[Row]) -> None:
        stored, latest, dirty = self._stored, self._latest, self._dirty
        for row in rows:
            asset_id, seq = row[0], row[1]
            if seq > stored.get(asset_id, 0):
                stored[asset_id] = seq
            current = latest.get(asset_id)
            if current is None:
                latest[asset_id] = list(row)
                dirty.add(asset_id)
            elif seq > current[1]:
                current[:] = row
                dirty.add(asset_id)
        self._metrics.telemetry_rows.inc(len(rows))
        self._track_rate(len(rows))
        async with self._stored_changed:
            self._stored_changed.notify_all()

    def _track_rate(self, n: int) -> None:
        now = time.monotonic()
        window = self._rate_window
        window.append((now, n))
        self._rate_sum += n
        while window and now - window[0][0] > 5.0:
            self._rate_sum -= window.popleft()[1]
        span = max(now - window[0][0], 1.0)
        self._metrics.telemetry_rate.set(self._rate_sum / span)

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
        latest = self._latest
        start = 0
        try:
            for start in range(0, len(ids), _LATEST_CHUNK):
                rows = [latest[a] for a in ids[start : start + _LATEST_CHUNK]]
                async with self._engine.connect() as conn:
                    pg = await _driver(conn)
                    async with pg.cursor() as cur:
                        await cur.execute(_LATEST_STAGE)
                        await copy_rows(cur, _COPY_LATEST, rows)
                        await cur.execute(_UPSERT_LATEST)
                    await pg.commit()
        except BaseException:
            self._dirty.update(ids[start:])
            raise


def _about_rows(exc: Exception) -> bool:
    """True when ``exc`` may be the rows' fault (writing them again cannot help)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, (*DB_UNAVAILABLE, OSError, psycopg.InterfaceError)):
        return False
    if isinstance(cause, psycopg.Error) and cause.sqlstate is not None:
        return cause.sqlstate[:2] in _ROW_SQLSTATE_CLASSES
    # Raised before the server saw the row: psycopg cannot format a value (OverflowError,
    # DataError), or anything else a row can cause.
    return True


async def _rolled_back(conn: AsyncConnection) -> bool:
    """Roll back the raw connection's failed transaction; False when that failed too."""
    try:
        await (await _driver(conn)).rollback()
    except Exception:
        return False
    return True


async def _driver(conn: AsyncConnection) -> psycopg.AsyncConnection[object]:
    """The psycopg connection under a SQLAlchemy one (COPY is not in SQLAlchemy)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


async def copy_rows(
    cur: psycopg.AsyncCursor[object], statement: str, rows: Sequence[Sequence[Any]]
) -> None:
    """Binary COPY of telemetry-shaped rows (the columns of TELEMETRY_COLUMNS).

    Rows are formatted synchronously (psycopg's C formatter) and sent in one write: with
    ``await copy.write_row`` per row the writer yielded every ~32 KB, and on a loop busy
    with thousands of streams each yield waits a whole loop turn — a 5,000-row batch took
    a second and ingest fell behind at 10,000 gateways. The formatter keeps the tail of
    the last rows and sends it (with the trailer) when the block ends, in order.
    """
    async with cur.copy(statement) as copy:
        copy.set_types(_COPY_TYPES)
        write_row = copy.formatter.write_row
        parts = [chunk for row in rows if (chunk := write_row(row))]
        if parts:
            await copy.write(b"".join(parts))


__all__ = ["COPY_TELEMETRY", "Ingest", "RowQueue", "copy_rows"]
