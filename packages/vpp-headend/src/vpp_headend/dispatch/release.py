"""Sending Releases: a cancelled dispatch's ``cancelling`` deliveries, on the streams
this replica holds (DESIGN.md §3b).

A Release goes out right after the cancel (the site's session is here), when the cancel's
NOTIFY reaches the replica holding the stream, or on the site's next connect (after its
pending setpoints), fenced like a setpoint: only on the site's current session. Once per
session: a gateway that reconnects before acking gets it again (the gateway answers a
Release for a setpoint no longer in force RELEASED with no allocations).

A gateway that speaks a protocol before `RELEASE_PROTOCOL` cannot release: its delivery is
``cancelled`` at once with a reason saying the setpoint stays in force on site until a
newer one supersedes it. A ``cancelling`` delivery whose gateway never comes back stays
``cancelling``: the gateway's own fail-safe (``failsafe_after_s``) releases its assets on
site, and its RELEASED ack, whenever it reconnects, ends the delivery ``cancelled``.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ..db import dispatch_repo as repo
from ..db import dispatch_routing as routing
from ..db import release_repo
from ..db._sql import Writes
from ..db.dispatch_rows import EventRow
from ..domain import ReleaseCommand
from ..sessions import RELEASE_PROTOCOL, Session
from .cancel import release_text
from .deps import DispatchDeps
from .effects import AfterCommit, write
from .transitions import advance


def cannot_release(session: Session) -> str:
    """Why a cancel ends at once for a gateway of an older protocol."""
    return (
        f"cancelled; the gateway speaks protocol {session.protocol_version} (release needs "
        f"{RELEASE_PROTOCOL}) and cannot release: the setpoint stays in force on site "
        "until a newer one supersedes it"
    )


class Releaser:
    """Puts Releases on the streams of this replica's sessions."""

    def __init__(self, deps: DispatchDeps) -> None:
        self._engine = deps.engine
        self._read = deps.read
        self._sessions = deps.sessions
        self._metrics = deps.metrics
        self._push = deps.push
        self._clock = deps.clock

    async def for_dispatch(self, dispatch_id: UUID) -> int:
        """Releases of one cancelled dispatch whose site's stream is here (after the
        cancel, or its NOTIFY). A session still sending its connect-time setpoints is
        left to `for_session`, which comes after them. Returns Releases sent."""
        async with self._read.connect() as conn:
            sites = await release_repo.releasing_of(conn, dispatch_id)
        sent = 0
        for site_id, _, _ in sites:
            session = self._sessions.for_site(site_id)
            if session is not None and session.caught_up:
                sent += await self.send(session, dispatch_id)
        return sent

    async def for_session(self, session: Session) -> int:
        """On connect: every release the site still owes, oldest dispatch first."""
        async with self._read.connect() as conn:
            owed = await release_repo.releasing_for_site(conn, session.site_id)
        sent = 0
        for r in owed:
            if not _sent_on(r.release_sent_at, session):
                sent += await self.send(session, r.dispatch_id)
        return sent

    async def send(self, session: Session, dispatch_id: UUID) -> int:
        """The Release of one ``cancelling`` delivery on ``session`` (once per session);
        for an older gateway, the cancel ends instead. Returns 1 if a Release went out."""
        now = self._clock()
        after = AfterCommit(self._metrics)
        cmd: ReleaseCommand | None = None
        site_id = session.site_id
        async with self._engine.begin() as conn:
            locked = await repo.lock_with_deliveries(conn, dispatch_id)
            dlv = locked.deliveries.get(site_id) if locked is not None else None
            if locked is None or dlv is None or dlv.state != release_repo.RELEASING:
                return 0
            if _sent_on(dlv.release_sent_at, session):
                return 0
            if not await routing.session_is_current(conn, site_id, session.session_id):
                return 0  # another replica took the site over; it sends
            if not session.can_release:
                t = advance(locked, site_id, "cancelled", now, reason=cannot_release(session))
                if t is not None:
                    await write(conn, t)
                    after.transition(t)
            else:
                attempt = "again " if dlv.release_sent_at is not None else ""
                detail = f"release sent {attempt}on session epoch {session.epoch}"
                writes = Writes()
                writes.add(release_repo.release_sent_update(dispatch_id, site_id, now))
                writes.add(
                    repo.events_insert(
                        [EventRow(dispatch_id, now, dlv.state, "site", site_id, detail)]
                    )
                )
                await writes.run(conn)
                cancel = locked.dispatch
                cmd = ReleaseCommand(
                    setpoint_id=dispatch_id,
                    reason=release_text(cancel.cancel_reason),
                    issued_at=cancel.cancel_requested_at or now,
                )
        after.run()
        if cmd is None:
            return 0
        self._push(session, cmd)
        return 1


def _sent_on(release_sent_at: datetime | None, session: Session) -> bool:
    """A Release already went out on this very session."""
    return release_sent_at is not None and release_sent_at >= session.connected_since


__all__ = ["Releaser", "cannot_release"]
