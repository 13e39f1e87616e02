"""Gateway sessions: admitting a Register, recording connects and disconnects, listing.

`GatewayService.admit` turns a Register into a session (claims checked against the
registry, a new epoch from ``gateway_sessions``, telemetry watermarks) or a refusal;
the gRPC handler does the talking. ``last_seen`` and disconnect records are written in
batches by `session_records.SessionRecords`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncEngine

from vpp_protocol import PROTOCOL_VERSION

from .clock import Clock, utc_now
from .db import security_repo
from .db import session_repo as repo
from .db.engine import reader
from .db.notify_repo import notify_session
from .domain import ClaimOutcome, GatewayView, RegisterReply, RegisterRequest
from .ingest import Ingest
from .logs import log_event
from .metrics import Metrics
from .registry import authorize_in
from .session_records import SessionRecords
from .sessions import Session, SessionRegistry
from .settings import Settings

log = logging.getLogger(__name__)

_TAKEN_OVER = "a newer session owns the site (gateway_sessions)"


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
        settings: Settings,
        *,
        seen_flush_interval_s: float = 1.0,
        clock: Clock = utc_now,
    ) -> None:
        self._engine = engine
        self._read = reader(engine)  # autocommit: reads cost no BEGIN/ROLLBACK
        self.sessions = sessions
        self._ingest = ingest
        self._metrics = metrics
        self._auto_enroll = settings.auto_enroll
        self._heartbeat = settings.heartbeat_interval_s
        self._replica = settings.replica
        self._clock = clock
        self._records = SessionRecords(
            engine,
            taken_over=lambda s: self._supersede(s, _TAKEN_OVER),
            seen_flush_interval_s=seen_flush_interval_s,
        )

    async def start(self) -> None:
        """Mark sessions this replica left open (a crash) as disconnected."""
        async with self._engine.begin() as conn:
            await repo.close_left_open(conn, self._replica, self._clock())
        self._records.start()

    async def stop(self) -> None:
        """Stop the last_seen writer, then write pending disconnect records."""
        await self._records.stop()

    async def admit(self, req: RegisterRequest, remote: str) -> Admission:
        """Check the claims; open and route a session unless the site is refused."""
        session_id = uuid4()
        now = self._clock()
        outcome, epoch = await self._claim(req, remote, session_id, now)
        self._log_rejections(req.site_id, outcome, remote)
        if not outcome.site_known:
            return Admission(None, self._reply(outcome, session_id, 0, {}), outcome)
        self._ingest.served_by(req.site_id, outcome.accepted)  # their site, for /metrics
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
        return Admission(session, self._reply(outcome, session_id, epoch, watermarks), outcome)

    async def _claim(
        self, req: RegisterRequest, remote: str, session_id: UUID, now: datetime
    ) -> tuple[ClaimOutcome, int]:
        """The claims checked and, for a known site, the connect recorded: its new epoch.

        One transaction: claims, watermarks of assets new to this process, and the epoch
        upsert (+ NOTIFY) — a connect storm costs one checkout per Register.
        """
        epoch = 0
        async with self._engine.begin() as conn:
            outcome = await authorize_in(conn, req, auto_enroll=self._auto_enroll)
            if outcome.site_known:
                await self._ingest.load_watermarks(outcome.accepted, conn)
                epoch = await repo.record_connect(
                    conn,
                    site_id=req.site_id,
                    session_id=session_id,
                    at=now,
                    remote=remote,
                    agent_version=req.agent_version,
                    replica=self._replica,
                    assets_served=outcome.accepted,
                )
                # Fencing: the upsert took the row lock and raised the epoch; replicas
                # holding an older session of this site close it when this commits.
                await notify_session(conn, req.site_id, epoch, session_id)
        return outcome, epoch

    def _log_rejections(self, site_id: str, outcome: ClaimOutcome, remote: str) -> None:
        for r in outcome.rejected:
            self._metrics.assets_rejected.labels(r.code).inc()
            log_event(
                log,
                "asset_rejected",
                level=logging.WARNING,
                site_id=site_id,
                asset_id=r.asset_id,
                code=r.code,
                reason=r.reason,
                remote=remote,
            )

    def _reply(
        self, outcome: ClaimOutcome, session_id: UUID, epoch: int, watermarks: dict[str, int]
    ) -> RegisterReply:
        known = outcome.site_known
        return RegisterReply(
            accepted=outcome.accepted if known else (),
            rejected=outcome.rejected,
            session_id=session_id,
            epoch=epoch,
            watermarks=watermarks,
            protocol_version=PROTOCOL_VERSION,
            default_asset_id=outcome.default_asset_id if known else "",
            heartbeat_interval_s=self._heartbeat,
        )

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
            self._records.gone(session, reason, self._clock())

    def seen(self, session: Session) -> None:
        """Persist ``last_seen`` soon, batched (called at most once per heartbeat interval)."""
        self._records.seen(session)

    async def certificate_revoked(self, fingerprint: str) -> bool:
        """True when the certificate with this fingerprint is on the deny-list."""
        return await security_repo.certificate_revoked(self._read, fingerprint)

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
        async with self._read.connect() as conn:
            owner = await repo.owners(conn, [s.site_id for s in held])
        stale = [s for s in held if owner.get(s.site_id) != s.session_id]
        for s in stale:
            self._supersede(s, _TAKEN_OVER)
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

    async def list_gateways(
        self,
        *,
        after: repo.GatewayKey | None = None,
        limit: int | None = None,
        site_id: str | None = None,
    ) -> list[GatewayView]:
        """Registered sites with their gateway's connection state, by site id: every one,
        or a page (those after ``after``, at most ``limit``), or ``site_id``'s alone. The
        sites come from the database; a session this replica holds overrides its stored
        record."""
        async with self._read.connect() as conn:
            records = await repo.records(conn, after=after, limit=limit, site_id=site_id)
        out: list[GatewayView] = []
        for r in records:
            live = self.sessions.for_site(r.site_id)
            out.append(
                _live_view(live, self._replica) if live is not None else self._record_view(r)
            )
        return out

    def _record_view(self, r: repo.SessionRecord) -> GatewayView:
        return GatewayView(
            site_id=r.site_id,
            # Another replica may hold the stream (DESIGN.md §7): trust its record.
            connected=bool(r.connected) and r.replica != self._replica,
            connected_since=r.connected_since,
            last_seen=r.last_seen,
            assets_served=r.assets_served,
            remote=r.remote,
            agent_version=r.agent_version,
            epoch=r.epoch,
            session_id=r.session_id,
            disconnect_reason=r.disconnect_reason,
            replica=r.replica,
            disconnected_at=r.disconnected_at,
        )

    def _update_gauges(self) -> None:
        self._metrics.gateways_connected.set(len(self.sessions))
        self._metrics.assets_served.set(self.sessions.assets_served)


def _live_view(live: Session, replica: str) -> GatewayView:
    return GatewayView(
        site_id=live.site_id,
        connected=True,
        connected_since=live.connected_since,
        last_seen=live.last_seen,
        assets_served=tuple(sorted(live.assets)),
        remote=live.remote,
        agent_version=live.agent_version,
        epoch=live.epoch,
        session_id=live.session_id,
        replica=replica,
    )


__all__ = ["Admission", "GatewayService"]
