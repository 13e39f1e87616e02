"""SQL of the replicas' signals (notify.py): the channels, the NOTIFYs sent inside the
transaction that makes a change, and the LISTENs of the listening connection."""

from __future__ import annotations

from uuid import UUID

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

DISPATCH_CHANNEL = "vpp_dispatch"
SESSION_CHANNEL = "vpp_session"
RELEASE_CHANNEL = "vpp_release"
CHANNELS = (DISPATCH_CHANNEL, SESSION_CHANNEL, RELEASE_CHANNEL)

_NOTIFY = text("SELECT pg_notify(:c, :p)")


async def notify_session(conn: AsyncConnection, site_id: str, epoch: int, session_id: UUID) -> None:
    """Announce a new session of a site (delivered when ``conn``'s transaction commits)."""
    await conn.execute(_NOTIFY, {"c": SESSION_CHANNEL, "p": f"{site_id} {epoch} {session_id}"})


async def notify_release(conn: AsyncConnection, dispatch_id: UUID) -> None:
    """Announce a cancel with releases to send (delivered when ``conn``'s transaction
    commits)."""
    await conn.execute(_NOTIFY, {"c": RELEASE_CHANNEL, "p": str(dispatch_id)})


async def listen(conn: psycopg.AsyncConnection[object]) -> None:
    """LISTEN on every channel (``conn`` in autocommit)."""
    for channel in CHANNELS:
        await conn.execute(f"LISTEN {channel}")


__all__ = [
    "CHANNELS",
    "DISPATCH_CHANNEL",
    "RELEASE_CHANNEL",
    "SESSION_CHANNEL",
    "listen",
    "notify_release",
    "notify_session",
]
