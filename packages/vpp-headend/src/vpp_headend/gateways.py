"""Gateway sessions: admitting a Register, recording connects and disconnects, listing.

`GatewayService.admit` turns a Register into a session (claims checked against the
registry, a new epoch from ``gateway_sessions``, telemetry watermarks) or a refusal;
the gRPC handler does the talking. Database writes on disconnect run as tasks the
service owns, so a cancelled stream handler still gets its disconnect recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vpp_protocol import PROTOCOL_VERSION

from .db import models as m
from .db import security_repo
from .db.engine import DB_UNAVAILABLE, reader
from .domain import ClaimOutcome, GatewayView, RegisterReply, RegisterRequest
from .ingest import Ingest
from .logs import log_event
from .metrics import Metrics
from .notify import notify_session
from .registry import authorize_in
from .sessions import Session, SessionRegistry

log = logging.getLogger(__name__)

# last_seen of many sessions in one statement; returns the sessions that still own their
# site's row (the others were taken over).
_TOUCH = text(
    """
    UPDATE gateway_sessions g SET last_seen = v.last_seen
    FROM unnest(CAST(:sites AS text[]), CAST(:sessions AS uuid[]),
                CAST(:seen AS timestamptz[])) AS v(site_id, session_id, last_seen)
    WHERE g.site_id = v.site_id AND g.session_id = v.session_id
    RETURNING g.session_id
    """
)
# Disconnects, many at once: a network blip drops thousands of streams in a second, and
# one transaction each ran the pool dry (records timed out; rows stayed "connected").
_GONE = text(
    """
    UPDATE gateway_sessions g
    SET connected = false, disconnected_at = v.at, disconnect_reason = v.reason,
        last_seen = v.last_seen
    FROM unnest(CAST(:sites AS text[]), CAST(:sessions AS uuid[]), CAST(:at AS timestamptz[]),
                CAST(:reasons AS text[]), CAST(:seen AS timestamptz[]))
         AS v(site_id, session_id, at, reason, last_seen)
    WHERE g.site_id = v.site_id AND g.session_id = v.session_id
    """
)


# What a last_seen round may meet in an outage (a pool timeout too): kept for the next.
_DB_ERRORS: tuple[type[Exception], ...] = (DBAPIError, psycopg.Error, *DB_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of a Register: a session (None when the site is refused) and the reply."""

    session: Session | None
    reply: RegisterReply
    outcome: ClaimOutcome


class GatewayService:
    """Admits sessions, records their lifecycle, and lists gateways."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: SessionRegistry,
        ingest: Ingest,
        metrics: Metrics,
        *,
        auto_enroll: bool,
        heartbeat_interval_s: float,
        replica: str,
        seen_flush_interval_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._read = reader(engine)  # autocommit: reads cost no BEGIN/ROLLBACK
        self.sessions = sessions
        self._ingest = ingest
        self._metrics = metrics
        self._auto_enroll = auto_enroll
        self._heartbeat = heartbeat_interval_s
        self._replica = replica
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()
        # Disconnects not yet written: session id -> (session, reason, when).
        self._gone: dict[UUID, tuple[Session, str, datetime]] = {}
        self._gone_writer: asyncio.Task[None] | None = None
        self._seen: dict[UUID, Session] = {}
        self._seen_interval = seen_flush_interval_s
        self._seen_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Mark sessions this replica left open (a crash) as disconnected."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(m.gateway_sessions)
                .where(
                    m.gateway_sessions.c.replica == self._replica, m.gateway_sessions.c.connected
                )
                .values(
                    connected=False,
                    disconnected_at=self._clock(),
                    disconnect_reason="headend_restart",
                )
            )
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

    async def admit(self, req: RegisterRequest, remote: str) -> Admission:
        """Check the claims; open and route a session unless the site is refused."""
        session_id = uuid4()
        now = self._clock()
        # One transaction: claims, watermarks of assets new to this process, and the
        # epoch upsert (+ NOTIFY) — a connect storm costs one checkout per Register.
        async with self._engine.begin() as conn:
            outcome = await authorize_in(conn, req, auto_enroll=self._auto_enroll)
            if outcome.site_known:
                await self._ingest.load_watermarks(outcome.accepted, conn)
                epoch = await self._record_connect(conn, req, outcome, session_id, remote, now)
        for r in outcome.rejected:
            self._metrics.assets_rejected.labels(r.code).inc()
            log_event(
                log,
                "asset_rejected",
                level=logging.WARNING,
                site_id=req.site_id,
                asset_id=r.asset_id,
                code=r.code,
                reason=r.reason,
                remote=remote,
            )
        if not outcome.site_known:
            reply = RegisterReply(
                accepted=(),
                rejected=outcome.rejected,
                session_id=session_id,
                epoch=0,
                watermarks={},
                protocol_version=PROTOCOL_VERSION,
                default_asset_id="",
                heartbeat_interval_s=self._heartbeat,
            )
            return Admission(None, reply, outcome)
        watermarks = await self._ingest.watermarks(outcome.accepted)
        session = Session(
            site_id=req.site_id,
            session_id=session_id,
            epoch=epoch,
            assets=frozenset(outcome.accepted),
            default_asset_id=outcome.default_asset_id,
            remote=remote,
            agent_version=req.agent_version,
            connected_since=now,
            last_seen=now,
            protocol_version=req.protocol_version,
        )
        old = self.sessions.open(session)
        if old is not None:
            log_event(
                log,
                "session_superseded",
                site_id=req.site_id,
                old_session_id=old.session_id,
                old_epoch=old.epoch,
                new_session_id=session_id,
                new_epoch=epoch,
            )
        self._metrics.sessions_total.inc()
        self._update_gauges()
        reply = RegisterReply(
            accepted=outcome.accepted,
            rejected=outcome.rejected,
            session_id=session_id,
            epoch=epoch,
            watermarks=watermarks,
            protocol_version=PROTOCOL_VERSION,
            default_asset_id=outcome.default_asset_id,
            heartbeat_interval_s=self._heartbeat,
        )
        return Admission(session, reply, outcome)

    def closed(self, session: Session, reason: str) -> None:
        """The stream of ``session`` ended; unroute it and record why (in the background)."""
        current = self.sessions.remove(session)
        self._update_gauges()
        self._metrics.disconnects.labels(reason).inc()
        duration = (self._clock() - session.connected_since).total_seconds()
        log_event(
            log,
            "disconnect",
            site_id=session.site_id,
            session_id=session.session_id,
            epoch=session.epoch,
            reason=reason,
            remote=session.remote,
            duration_s=duration,
        )
        if current:
            self._seen.pop(session.session_id, None)  # the disconnect record writes it
            self._gone[session.session_id] = (session, reason, self._clock())
            self._write_disconnects_soon()

    async def certificate_revoked(self, fingerprint: str) -> bool:
        """True when the certificate with this fingerprint is on the deny-list."""
        return await security_repo.certificate_revoked(self._read, fingerprint)

    def seen(self, session: Session) -> None:
        """Persist ``last_seen`` soon (called at most once per heartbeat interval).

        Batched: the writer loop stores every session marked since its last round in one
        statement (10,000 gateways at a 15 s heartbeat would otherwise be ~670 UPDATE
        transactions a second). See `flush_seen`.
        """
        self._seen[session.session_id] = session

    async def flush_seen(self) -> None:
        """Write ``last_seen`` of every session marked by `seen`, in one statement.

        Best effort: during a database outage the streams stay up and the marks are kept
        for the next round. Also the fence of last resort between replicas: a session
        whose row now names another session was taken over (perhaps on another replica,
        with its NOTIFY missed) and is closed as superseded.
        """
        if not self._seen:
            return
        batch, self._seen = list(self._seen.values()), {}
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    _TOUCH,
                    {
                        "sites": [s.site_id for s in batch],
                        "sessions": [s.session_id for s in batch],
                        "seen": [s.last_seen for s in batch],
                    },
                )
                owned = {row[0] for row in result}
        except _DB_ERRORS as exc:
            log_event(
                log, "last_seen_failed", level=logging.WARNING, sessions=len(batch), error=exc
            )
            for s in batch:
                self._seen.setdefault(s.session_id, s)
            return
        for s in batch:
            if s.session_id not in owned and not s.closing:
                self._supersede(s, "a newer session owns the site (gateway_sessions)")

    async def _seen_loop(self) -> None:
        while True:
            await asyncio.sleep(self._seen_interval)
            try:
                await self.flush_seen()
                if self._gone:  # retry what a failed round left
                    self._write_disconnects_soon()
            except Exception as exc:  # the writer must outlive any one bad round
                log_event(log, "last_seen_failed", level=logging.WARNING, error=exc)

    async def on_session_elsewhere(self, site_id: str, epoch: int, session_id: UUID) -> None:
        """A gateway of ``site_id`` registered with ``epoch`` (NOTIFY from any replica,
        this one included): close an older session held here."""
        session = self.sessions.for_site(site_id)
        if session is not None and session.epoch < epoch and session.session_id != session_id:
            self._supersede(session, f"superseded by session {session_id} (epoch {epoch})")

    async def check_current(self) -> int:
        """Close every session held here whose site now belongs to a newer session (after
        missed notifications); returns how many were closed."""
        held = list(self.sessions)
        if not held:
            return 0
        g = m.gateway_sessions
        async with self._read.connect() as conn:
            rows = await conn.execute(
                select(g.c.site_id, g.c.session_id).where(
                    g.c.site_id.in_([s.site_id for s in held])
                )
            )
            owner = {r.site_id: r.session_id for r in rows}
        stale = [s for s in held if owner.get(s.site_id) != s.session_id]
        for s in stale:
            self._supersede(s, "a newer session owns the site (gateway_sessions)")
        return len(stale)

    def _supersede(self, session: Session, detail: str) -> None:
        if self.sessions.evict(session, "superseded", detail):
            self._update_gauges()
            log_event(
                log,
                "session_superseded",
                site_id=session.site_id,
                old_session_id=session.session_id,
                old_epoch=session.epoch,
                replica=self._replica,
                detail=detail,
            )

    async def list_gateways(self) -> list[GatewayView]:
        """Every registered site with its gateway's connection state, by site id."""
        g = m.gateway_sessions
        query = (
            select(m.sites.c.site_id, g)
            .select_from(m.sites.outerjoin(g, g.c.site_id == m.sites.c.site_id))
            .order_by(m.sites.c.site_id)
        )
        async with self._read.connect() as conn:
            rows = (await conn.execute(query)).all()
        out: list[GatewayView] = []
        for row in rows:
            r = row._mapping
            live = self.sessions.for_site(r["site_id"])
            if live is not None:
                out.append(
                    GatewayView(
                        site_id=live.site_id,
                        connected=True,
                        connected_since=live.connected_since,
                        last_seen=live.last_seen,
                        assets_served=tuple(sorted(live.assets)),
                        remote=live.remote,
                        agent_version=live.agent_version,
                        epoch=live.epoch,
                        session_id=live.session_id,
                    )
                )
                continue
            served = r["assets_served"]
            out.append(
                GatewayView(
                    site_id=r["site_id"],
                    # Another replica may hold the stream (DESIGN.md §7): trust its record.
                    connected=bool(r["connected"]) and r["replica"] != self._replica,
                    connected_since=r["connected_since"],
                    last_seen=r["last_seen"],
                    assets_served=tuple(served.split(",")) if served else (),
                    remote=r["remote"],
                    agent_version=r["agent_version"],
                    epoch=r["epoch"],
                    session_id=r["session_id"],
                    disconnect_reason=r["disconnect_reason"],
                )
            )
        return out

    def _update_gauges(self) -> None:
        self._metrics.gateways_connected.set(len(self.sessions))
        self._metrics.assets_served.set(self.sessions.assets_served)

    async def _record_connect(
        self,
        conn: AsyncConnection,
        req: RegisterRequest,
        outcome: ClaimOutcome,
        session_id: UUID,
        remote: str,
        now: datetime,
    ) -> int:
        g = m.gateway_sessions
        values = {
            "session_id": session_id,
            "connected": True,
            "connected_since": now,
            "last_seen": now,
            "disconnected_at": None,
            "disconnect_reason": None,
            "remote": remote,
            "agent_version": req.agent_version,
            "replica": self._replica,
            "assets_served": ",".join(sorted(outcome.accepted)),
        }
        stmt = insert(g).values(site_id=req.site_id, epoch=1, **values)
        upsert = stmt.on_conflict_do_update(
            index_elements=[g.c.site_id], set_={**values, "epoch": g.c.epoch + 1}
        ).returning(g.c.epoch)
        epoch = int((await conn.execute(upsert)).scalar_one())
        # Fencing: the upsert took the row lock and raised the epoch; replicas holding
        # an older session of this site close it when this commits.
        await notify_session(conn, req.site_id, epoch, session_id)
        return epoch

    def _write_disconnects_soon(self) -> None:
        """Start the disconnect writer unless it is running (it takes what queues)."""
        if self._gone_writer is not None and not self._gone_writer.done():
            return
        task = asyncio.create_task(self.flush_disconnects(), name="gateways-gone")
        self._gone_writer = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush_disconnects(self) -> None:
        """Record every disconnect queued by `closed`: one statement per round, rounds
        until the queue is empty (a storm is a few statements, a lone disconnect is
        written at once). On failure the records stay queued; the last_seen writer's
        next round retries them."""
        while self._gone:
            batch = list(self._gone.values())
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        _GONE,
                        {
                            "sites": [s.site_id for s, _, _ in batch],
                            "sessions": [s.session_id for s, _, _ in batch],
                            "at": [at for _, _, at in batch],
                            "reasons": [reason for _, reason, _ in batch],
                            "seen": [s.last_seen for s, _, _ in batch],
                        },
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


__all__ = ["Admission", "GatewayService"]
