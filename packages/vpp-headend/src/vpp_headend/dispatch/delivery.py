"""Routing and sending: which session serves a delivery, and putting setpoints on it.

A setpoint goes out only while its session is the site's current one in
``gateway_sessions`` (the row is share-locked, so a takeover on another replica waits or
wins): a replica never sends on a stream that has been superseded elsewhere. What goes
out is a domain `SetpointCommand` (or a `ReleaseCommand`, `release`); ``push`` (the gRPC
side) turns it into a message. A setpoint carries its time in force (``duration_s`` or
``ends_at``) on its first delivery and on every re-delivery.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import dispatch_repo as repo
from ..db import dispatch_routing as routing
from ..db._sql import Writes
from ..db.dispatch_rows import DeliveryRow, DispatchRow, EventRow, Locked, OpenDelivery
from ..domain import SetpointCommand, TargetKind
from ..sessions import Session
from .deps import DispatchDeps
from .effects import AfterCommit, move, write
from .transitions import advance

_CREATED_HERE_MAX = 10_000


def sent_detail(session: Session, timed: bool) -> str:
    """The ``sent`` event's detail: the session, and whether the gateway can honour a
    time in force (an older protocol keeps the setpoint until superseded)."""
    detail = f"session epoch {session.epoch}"
    if timed and not session.can_release:
        detail += (
            f"; the gateway speaks protocol {session.protocol_version}: it does not "
            "enforce duration_s / ends_at"
        )
    return detail


class Router:
    """Delivers setpoints to the sessions this replica holds."""

    def __init__(self, deps: DispatchDeps, *, ack_grace: timedelta) -> None:
        self._engine = deps.engine
        self._read = deps.read
        self._sessions = deps.sessions
        self._metrics = deps.metrics
        self._push_fn = deps.push
        self._ack_grace = ack_grace
        self._clock = deps.clock
        # Dispatches created here are routed here right after commit: their own NOTIFY,
        # when it comes back to this replica, has nothing left to do.
        self._created_here: OrderedDict[UUID, None] = OrderedDict()

    def created_here(self, dispatch_id: UUID) -> None:
        """A dispatch is being created on this replica (routed at once)."""
        self._created_here[dispatch_id] = None
        while len(self._created_here) > _CREATED_HERE_MAX:
            self._created_here.popitem(last=False)

    def forget(self, dispatch_id: UUID) -> None:
        """No NOTIFY of it will come back (not created, or nothing left pending)."""
        self._created_here.pop(dispatch_id, None)

    def route(self, target_kind: str, target_id: str, site_id: str) -> Session | None:
        """The open session of this replica that serves this delivery, if any."""
        if target_kind == "asset":
            session = self._sessions.for_asset(target_id)
        else:
            session = self._sessions.for_site(site_id)
        return session if session is not None and session.site_id == site_id else None

    def push(self, session: Session, od: OpenDelivery) -> None:
        """Put one delivery's setpoint on the session's stream."""
        kind: TargetKind | str = "default" if session.legacy else od.target_kind
        cmd = SetpointCommand(
            setpoint_id=od.dispatch_id,
            target_kind=kind,  # type: ignore[arg-type]  # a TargetKind or "default"
            target_id=od.target_id,
            power_kw=od.power_kw,
            issued_at=od.issued_at,
            expires_at=od.expires_at,
            duration_s=od.duration_s,
            ends_at=od.ends_at,
        )
        self._push_fn(session, cmd)

    async def send_new(self, session: Session, dispatch_id: UUID) -> int:
        """pending → sent for a just-created delivery, then push it. Returns 1 if sent."""
        now = self._clock()
        after = AfterCommit(self._metrics)
        to_send: OpenDelivery | None = None
        async with self._engine.begin() as conn:
            locked = await repo.lock_with_deliveries(conn, dispatch_id)
            if locked is None or not await routing.session_is_current(
                conn, session.site_id, session.session_id
            ):
                return 0
            dlv = locked.deliveries.get(session.site_id)
            if dlv is not None and dlv.state == "pending":
                await self._mark_sent(conn, locked, session, now, after)
                to_send = _open_delivery(locked.dispatch, dlv)
        after.run()
        if to_send is None:
            return 0
        self.push(session, to_send)
        return 1

    async def on_notified(self, dispatch_id: UUID) -> int:
        """A dispatch was created on some replica (NOTIFY): deliver its pending
        deliveries whose site's stream this replica holds. Returns setpoints sent."""
        if self._created_here.pop(dispatch_id, 0) is None:
            return 0  # created (and routed) here
        async with self._read.connect() as conn:
            pending = await routing.pending_deliveries(conn, dispatch_id)
        sent = 0
        for site_id, target_kind, target_id in pending:
            session = self.route(target_kind, target_id, site_id)
            if session is not None:
                sent += await self.send_new(session, dispatch_id)
        return sent

    async def deliver_pending(self, session: Session) -> int:
        """On connect: send the newest open delivery per target, in issue order.

        Older pending ones for the same target are superseded. One in flight from an
        earlier session — ``sent`` (never acknowledged) or ``received`` (no final ack) — is
        sent again, until the sweeper's deadline (``expires_at`` + ack grace) even if it
        expired meanwhile: the gateway answers a setpoint it already handled with the final
        ack from its journal, never applying it twice, and a late one it never had with
        EXPIRED. A ``pending`` one is never delivered late; a cancelled one (or one whose
        release is on its way, ``cancelling``) never. Each is pushed as soon as its
        transaction committed, so that a cancel committed after it puts its Release behind
        it on the stream. Returns setpoints sent.
        """
        now = self._clock()
        async with self._read.connect() as conn:
            open_ = await routing.open_deliveries_for_site(conn, session.site_id)
        newest, older = self._newest_per_target(open_, session, now)
        after = AfterCommit(self._metrics)
        for od in older:
            if od.state == "pending":
                async with self._engine.begin() as conn:
                    await move(
                        conn,
                        od.dispatch_id,
                        od.site_id,
                        "superseded",
                        now,
                        after,
                        reason="a newer setpoint for the same target was pending",
                    )
        sent = 0
        for od in sorted(newest, key=lambda o: (o.issued_at, str(o.dispatch_id))):
            sent_here = od.sent_at is not None and od.sent_at >= session.connected_since
            if od.state != "pending" and sent_here:
                continue  # sent on this very session already
            async with self._engine.begin() as conn:
                locked = await repo.lock_with_deliveries(conn, od.dispatch_id)
                dlv = locked.deliveries.get(od.site_id) if locked is not None else None
                if locked is None or dlv is None or dlv.state not in routing.OPEN_STATES:
                    continue
                if not await routing.session_is_current(conn, session.site_id, session.session_id):
                    break  # another replica took the site over; it delivers
                await self._mark_sent(conn, locked, session, now, after)
            self.push(session, _open_delivery(locked.dispatch, dlv))
            sent += 1
        after.run()
        return sent

    def _newest_per_target(
        self, open_: list[OpenDelivery], session: Session, now: datetime
    ) -> tuple[list[OpenDelivery], list[OpenDelivery]]:
        """(newest open delivery per target, the older ones), skipping what the sweeper
        ends and asset targets this session does not serve."""
        newest: dict[tuple[str, str], OpenDelivery] = {}
        older: list[OpenDelivery] = []
        for od in open_:  # oldest first
            deadline = od.expires_at if od.state == "pending" else od.expires_at + self._ack_grace
            if deadline <= now:
                continue  # the sweeper ends it
            if od.target_kind == "asset" and od.target_id not in session.assets:
                continue
            key = (od.target_kind, od.target_id)
            if key in newest:
                older.append(newest[key])
            newest[key] = od
        return list(newest.values()), older

    async def _mark_sent(
        self,
        conn: AsyncConnection,
        locked: Locked,
        session: Session,
        now: datetime,
        after: AfterCommit,
    ) -> None:
        """The delivery to the session's site goes out (again): ``pending`` → ``sent``,
        or for a re-delivery the state stays and the event says so."""
        dispatch_id, site_id = locked.dispatch.dispatch_id, session.site_id
        attempts = locked.deliveries[site_id].attempts
        if attempts > 0:
            detail = f"re-sent on session epoch {session.epoch} (attempt {attempts + 1})"
            writes = Writes()
            writes.add(repo.resent_update(dispatch_id, site_id, now, attempts + 1))
            writes.add(
                repo.events_insert([EventRow(dispatch_id, now, "sent", "site", site_id, detail)])
            )
            await writes.run(conn)
            return
        timed = locked.dispatch.duration_s is not None or locked.dispatch.ends_at is not None
        t = advance(locked, site_id, "sent", now, detail=sent_detail(session, timed), sent=(now, 1))
        if t is not None:
            await write(conn, t)
            after.transition(t)


def _open_delivery(dispatch: DispatchRow, delivery: DeliveryRow) -> OpenDelivery:
    return OpenDelivery(
        dispatch_id=dispatch.dispatch_id,
        site_id=delivery.site_id,
        power_kw=delivery.power_kw,
        state=delivery.state,
        sent_at=delivery.sent_at,
        target_kind=dispatch.target_kind,
        target_id=dispatch.target_id,
        issued_at=dispatch.issued_at,
        expires_at=dispatch.expires_at,
        duration_s=dispatch.duration_s,
        ends_at=dispatch.ends_at,
    )


__all__ = ["Router", "sent_detail"]
