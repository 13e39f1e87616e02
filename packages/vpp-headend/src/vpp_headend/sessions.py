"""In-memory registry of open gateway sessions: site → session, asset → session.

Routing reads it; the gRPC handler adds and removes sessions. A newer session for a
site supersedes the older one (half-open TCP after a gateway restart): the old one is
asked to close with reason ``superseded`` and routing follows the new one at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeAlias
from uuid import UUID

from vpp_protocol.upb import pb

from .domain import CloseReasonName


class _CloseSentinel:
    """Marks the end of a session's outbox."""


class _TickSentinel:
    """Wakes a session's sender for its heartbeat and silence checks."""


#: The first protocol version whose agents honour duration_s / ends_at and take Release.
RELEASE_PROTOCOL: Final = 2

CLOSE: Final = _CloseSentinel()
TICK: Final = _TickSentinel()
Outgoing: TypeAlias = pb.HeadendMessage | _CloseSentinel | _TickSentinel


@dataclass(eq=False)
class Session:
    """One open gateway stream and what it serves."""

    site_id: str
    session_id: UUID
    epoch: int
    assets: frozenset[str]
    default_asset_id: str
    remote: str
    agent_version: str
    connected_since: datetime
    last_seen: datetime
    #: What the gateway said in Register; below `RELEASE_PROTOCOL` it cannot release.
    protocol_version: int = 0
    #: Its receiver waits for room in the ingest queue (or for an ack's database write).
    backpressured: bool = False
    #: Its connect-time setpoints went out: a cancel's Release may go straight to it now
    #: (before, the connect sends it, after the setpoints, so a newer one takes over first).
    caught_up: bool = False
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    close_reason: CloseReasonName | None = None
    close_detail: str = ""

    @property
    def legacy(self) -> bool:
        """A legacy single-asset session (its setpoints carry no target)."""
        return bool(self.default_asset_id)

    @property
    def can_release(self) -> bool:
        """The gateway honours a setpoint's end and takes Release (protocol 2 on)."""
        return self.protocol_version >= RELEASE_PROTOCOL

    @property
    def closing(self) -> bool:
        """True once a close was requested."""
        return self.close_reason is not None

    def touch(self, now: datetime) -> None:
        """The gateway was heard from (its silence is the stream's `SilencePolicy`)."""
        self.last_seen = now

    def send(self, message: pb.HeadendMessage) -> bool:
        """Queue a message for the gateway; False when the session is closing."""
        if self.closing:
            return False
        self.outbox.put_nowait(message)
        return True

    def close(self, reason: CloseReasonName, detail: str) -> None:
        """Ask the stream to send SessionClosed and end (idempotent: the first reason wins)."""
        if self.close_reason is None:
            self.close_reason = reason
            self.close_detail = detail
            self.outbox.put_nowait(CLOSE)


class SessionRegistry:
    """Open sessions by site and by asset."""

    def __init__(self) -> None:
        self._by_site: dict[str, Session] = {}
        self._by_asset: dict[str, Session] = {}
        self.shutting_down = False

    def open(self, session: Session) -> Session | None:
        """Make ``session`` the one serving its site and assets; return the superseded one."""
        old = self._by_site.get(session.site_id)
        if old is not None:
            self._unroute(old)
            old.close("superseded", f"superseded by session {session.session_id}")
        self._by_site[session.site_id] = session
        for asset_id in session.assets:
            self._by_asset[asset_id] = session
        return old

    def remove(self, session: Session) -> bool:
        """Forget ``session`` if it is still current; False if it was superseded already."""
        if self._by_site.get(session.site_id) is not session:
            return False
        self._unroute(session)
        del self._by_site[session.site_id]
        return True

    def evict(self, session: Session, reason: CloseReasonName, detail: str) -> bool:
        """Stop routing to ``session`` and ask it to close (another replica took the site
        over); False when it was not current any more."""
        current = self.remove(session)
        session.close(reason, detail)
        return current

    def _unroute(self, session: Session) -> None:
        for asset_id in session.assets:
            if self._by_asset.get(asset_id) is session:
                del self._by_asset[asset_id]

    def for_asset(self, asset_id: str) -> Session | None:
        """The open session serving an asset."""
        return self._by_asset.get(asset_id)

    def for_site(self, site_id: str) -> Session | None:
        """The open session of a site."""
        return self._by_site.get(site_id)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_site.values()))

    def __len__(self) -> int:
        return len(self._by_site)

    @property
    def assets_served(self) -> int:
        """Number of routable assets."""
        return len(self._by_asset)

    def close_all(self, reason: CloseReasonName, detail: str) -> list[Session]:
        """Ask every open session to close; return them."""
        sessions = list(self._by_site.values())
        for s in sessions:
            s.close(reason, detail)
        return sessions


__all__ = [
    "CLOSE",
    "RELEASE_PROTOCOL",
    "TICK",
    "Outgoing",
    "Session",
    "SessionRegistry",
]
