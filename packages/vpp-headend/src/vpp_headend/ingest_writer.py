"""The ingest writer: batches off the queue, binary COPY and a commit each.

A batch the database refuses is halved until the refused rows stand alone (dropped and
counted); a failure that is not about the rows (the database away, a broken schema) keeps
them and retries with backoff, and `BatchWriter.failing` says so for /ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .db import telemetry_repo as repo
from .db.telemetry_repo import Row
from .logs import log_event
from .metrics import Metrics
from .row_queue import RowQueue

log = logging.getLogger("vpp_headend.ingest")


class BatchWriter:
    """Writes what the queue holds until it is closed and drained; `Ingest` runs it under
    a supervisor, and a restarted writer first finishes the batch it held."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        queue: RowQueue,
        *,
        batch_rows: int,
        linger_s: float,
        committed: Callable[[list[Row]], Awaitable[None]],
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._queue = queue
        self._batch_rows = batch_rows
        self._linger = linger_s
        self._committed = committed
        #: Since when (monotonic) and why the writer cannot write; None while it can.
        self.failing: tuple[float, str] | None = None
        # Parts of the batch being written, the next one last: a restarted writer goes
        # on with them instead of losing the batch it held.
        self._pending: list[list[Row]] = []
        self._conn: AsyncConnection | None = None  # the writer's own

    async def run(self) -> None:
        while True:
            if not self._pending:  # a restarted writer first finishes the batch it held
                rows = await self._next_batch()
                if not rows:
                    return
                self._pending.append(rows)
            await self._store()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _next_batch(self) -> list[Row]:
        rows = await self._queue.get(self._batch_rows)
        if rows and len(rows) < self._batch_rows:
            # Thousands of gateways each send a small frame: wait a moment and write
            # them in one COPY and one commit instead of one each (a commit costs a
            # few round trips and an fsync; the lag this adds is ``linger_s``).
            await asyncio.sleep(self._linger)
            if self._queue.depth:
                rows += await self._queue.get(self._batch_rows - len(rows))
        self._metrics.ingest_queue_depth.set(self._queue.depth)
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
                if repo.refused_rows(exc):
                    return exc
                # The database is away or refuses every row alike: keep the rows
                # (receivers block on the full queue) and say so on /ready.
                if self.failing is None:
                    self.failing = (time.monotonic(), f"{type(exc).__name__}: {exc}")
                log_event(log, "ingest_retry", level=logging.WARNING, rows=len(rows), error=exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.failing = None
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
            await repo.write_history(self._conn, rows)
        except Exception as exc:
            if not (repo.refused_rows(exc) and await repo.rolled_back(self._conn)):
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


__all__ = ["BatchWriter"]
