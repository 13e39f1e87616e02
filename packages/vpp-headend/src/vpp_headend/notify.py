"""Signals between headend replicas over PostgreSQL LISTEN/NOTIFY (DESIGN.md §7).

Three channels, each NOTIFYed inside the transaction that makes the change, so a
replica hears of it only once it is committed and visible:

- ``vpp_dispatch``: payload ``<dispatch_id>``; a dispatch was created. The replica
  holding the target site's stream delivers it.
- ``vpp_release``: payload ``<dispatch_id>``; a dispatch was cancelled with releases on
  their way. The replica holding a releasing site's stream sends its Release.
- ``vpp_session``: payload ``<site_id> <epoch> <session_id>``; a gateway registered. A
  replica holding an older session of that site closes it (SUPERSEDED).

The channels and the NOTIFY statements are in `db.notify_repo`. `Listener` keeps one
dedicated autocommit psycopg connection LISTENing and reconnects when the database drops
it; after a reconnect it calls ``on_resync`` so the caller can catch up on what it may
have missed (NOTIFY is not replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from uuid import UUID

import psycopg

from .db.notify_repo import DISPATCH_CHANNEL, RELEASE_CHANNEL, SESSION_CHANNEL, listen
from .db.url import libpq_url
from .logs import log_event

log = logging.getLogger(__name__)

OnDispatch = Callable[[UUID], Awaitable[None]]
OnSession = Callable[[str, int, UUID], Awaitable[None]]
OnResync = Callable[[], Awaitable[None]]


class Listener:
    """LISTENs on every channel and runs a handler task per notification."""

    def __init__(
        self,
        database_url: str,
        *,
        on_dispatch: OnDispatch,
        on_session: OnSession,
        on_resync: OnResync,
        on_release: OnDispatch | None = None,
        reconnect_s: float = 1.0,
    ) -> None:
        self._url = libpq_url(database_url)
        self._on_dispatch = on_dispatch
        self._on_release = on_release
        self._on_session = on_session
        self._on_resync = on_resync
        self._reconnect_s = reconnect_s
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.listening = asyncio.Event()
        self.connects = 0

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start listening; returns once the first LISTEN is in place."""
        self._task = asyncio.create_task(self._run(), name="notify-listener")
        async with asyncio.timeout(timeout_s):
            await self.listening.wait()

    async def stop(self) -> None:
        """Stop listening and wait for running handlers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: reconnect
                log_event(log, "listen_lost", level=logging.WARNING, error=exc)
            self.listening.clear()
            await asyncio.sleep(self._reconnect_s)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        async with conn:
            await listen(conn)
            self.connects += 1
            self.listening.set()
            if self.connects > 1:
                log_event(log, "listen_resumed", connects=self.connects)
                self._spawn(self._on_resync())
            async for n in conn.notifies():
                self._handle(n.channel, n.payload)

    def _handle(self, channel: str, payload: str) -> None:
        try:
            if channel == DISPATCH_CHANNEL:
                self._spawn(self._on_dispatch(UUID(payload)))
            elif channel == RELEASE_CHANNEL:
                if self._on_release is not None:
                    self._spawn(self._on_release(UUID(payload)))
            elif channel == SESSION_CHANNEL:
                site_id, epoch, session_id = payload.split(" ")
                self._spawn(self._on_session(site_id, int(epoch), UUID(session_id)))
        except ValueError:
            log_event(log, "notify_malformed", level=logging.WARNING, channel=channel)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(self._guard(work))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _guard(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:  # one failed delivery must not stop the listener
            log_event(log, "notify_handler_failed", level=logging.WARNING, error=exc)


__all__ = ["Listener"]
