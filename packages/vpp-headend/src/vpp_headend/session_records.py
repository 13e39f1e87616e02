"""The gateway sessions' records in ``gateway_sessions``: ``last_seen`` and disconnects.

Both are written in batches by tasks this module owns, so a storm of heartbeats or
disconnects is a few statements, and a cancelled stream handler still gets its disconnect
recorded. A failed round keeps what it had for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import session_repo as repo
from .db.engine import DB_UNAVAILABLE
from .logs import log_event
from .sessions import Session

log = logging.getLogger("vpp_headend.gateways")

# What a last_seen round may meet in an outage (a pool timeout too): kept for the next.
_DB_ERRORS: tuple[type[Exception], ...] = (DBAPIError, psycopg.Error, *DB_UNAVAILABLE)


class SessionRecords:
    """Batches ``last_seen`` marks and disconnect records between `start` and `stop`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        taken_over: Callable[[Session], None],
        seen_flush_interval_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._taken_over = taken_over
        self._seen_interval = seen_flush_interval_s
        self._seen: dict[UUID, Session] = {}
        # Disconnects not yet written: session id -> (session, reason, when).
        self._gone: dict[UUID, tuple[Session, str, datetime]] = {}
        self._gone_writer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._seen_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._seen_task = asyncio.create_task(self._seen_loop(), name="gateways-last-seen")

    async def stop(self) -> None:
        """Stop the last_seen writer, then write pending disconnect records."""
        if self._seen_task is not None:
            self._seen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._seen_task
            self._seen_task = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._gone:  # a failed round left records: one last try
            await self.flush_disconnects()

    def seen(self, session: Session) -> None:
        """Persist ``last_seen`` soon (called at most once per heartbeat interval).

        Batched: the writer loop stores every session marked since its last round in one
        statement (10,000 gateways at a 15 s heartbeat would otherwise be ~670 UPDATE
        transactions a second). See `flush_seen`.
        """
        self._seen[session.session_id] = session

    def gone(self, session: Session, reason: str, at: datetime) -> None:
        """Record that ``session`` ended, soon (its last_seen mark goes with it)."""
        self._seen.pop(session.session_id, None)
        self._gone[session.session_id] = (session, reason, at)
        self._write_disconnects_soon()

    async def flush_seen(self) -> None:
        """Write ``last_seen`` of every session marked by `seen`, in one statement.

        Best effort: during a database outage the streams stay up and the marks are kept
        for the next round. Also the fence of last resort between replicas: a session
        whose row now names another session was taken over (perhaps on another replica,
        with its NOTIFY missed) and is handed to ``taken_over``.
        """
        if not self._seen:
            return
        batch, self._seen = list(self._seen.values()), {}
        try:
            async with self._engine.begin() as conn:
                owned = await repo.touch(
                    conn, [repo.Seen(s.site_id, s.session_id, s.last_seen) for s in batch]
                )
        except _DB_ERRORS as exc:
            log_event(
                log, "last_seen_failed", level=logging.WARNING, sessions=len(batch), error=exc
            )
            for s in batch:
                self._seen.setdefault(s.session_id, s)
            return
        for s in batch:
            if s.session_id not in owned and not s.closing:
                self._taken_over(s)

    async def _seen_loop(self) -> None:
        while True:
            await asyncio.sleep(self._seen_interval)
            try:
                await self.flush_seen()
                if self._gone:  # retry what a failed round left
                    self._write_disconnects_soon()
            except Exception as exc:  # the writer must outlive any one bad round
                log_event(log, "last_seen_failed", level=logging.WARNING, error=exc)

    def _write_disconnects_soon(self) -> None:
        """Start the disconnect writer unless it is running (it takes what queues)."""
        if self._gone_writer is not None and not self._gone_writer.done():
            return
        task = asyncio.create_task(self.flush_disconnects(), name="gateways-gone")
        self._gone_writer = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush_disconnects(self) -> None:
        """Record every disconnect queued by `gone`: one statement per round, rounds
        until the queue is empty (a storm is a few statements, a lone disconnect is
        written at once). On failure the records stay queued; the last_seen writer's
        next round retries them."""
        while self._gone:
            batch = list(self._gone.values())
            try:
                async with self._engine.begin() as conn:
                    await repo.record_disconnects(
                        conn,
                        [
                            repo.Gone(s.site_id, s.session_id, at, reason, s.last_seen)
                            for s, reason, at in batch
                        ],
                    )
            except Exception as exc:  # a lost record must not take the server down
                log_event(
                    log,
                    "disconnect_record_failed",
                    level=logging.WARNING,
                    sessions=len(batch),
                    error=exc,
                )
                return
            for s, _, _ in batch:
                self._gone.pop(s.session_id, None)


__all__ = ["SessionRecords"]
