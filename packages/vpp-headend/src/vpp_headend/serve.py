"""Running a headend process: the gRPC server and uvicorn (HTTP) in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn

from .app import create_app
from .errors import ListenError
from .eventloop import running_loop_name
from .events import EventFeed
from .headend import Headend
from .logs import log_event
from .preflight import listen_socket
from .settings import Settings

log = logging.getLogger(__name__)

#: What a failed bind says (anything else that fails while the headend opens is not one).
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL})


class _Server(uvicorn.Server):
    """uvicorn.Server that does not re-raise SIGINT/SIGTERM after a graceful shutdown.

    uvicorn re-raises the captured signal once `serve` returns, which kills the process
    before the CLI stops an embedded PostgreSQL; the shutdown was already graceful, so
    the process exits normally instead.
    """

    def __init__(self, config: uvicorn.Config, events: EventFeed) -> None:
        super().__init__(config)
        self.events = events

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the GET /events streams first: uvicorn waits for every open response
        before it returns, and those end only when the feed lets them."""
        await self.events.stop()
        await super().shutdown(sockets)


async def run(
    settings: Settings,
    *,
    on_ready: Callable[[int, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> bool:
    """Serve until SIGINT/SIGTERM or ``stop`` is set; False if HTTP never started.

    The HTTP port is bound first and the headend opens next (a port in use or a database
    check fails fast, as a ListenError or UnavailableError naming it), then uvicorn
    serves the app on the same loop, on that socket: uvicorn's own bind would log the
    error and ``sys.exit``. Its loggers have no handler of their own (``log_config=None``)
    and propagate to the CLI's. Once uvicorn has stopped serving HTTP the headend
    closes: every gRPC stream ends with SERVER_SHUTDOWN, ingest is flushed, the database
    is closed.
    """
    sock = listen_socket(settings.host, settings.http_port, "HTTP")
    try:
        async with _open_headend(settings) as headend:
            config = uvicorn.Config(
                create_app(settings, headend),
                host=settings.host,
                port=sock.getsockname()[1],
                log_config=None,
                access_log=False,
                lifespan="on",
            )
            server = _Server(config, headend.events)
            helpers = [asyncio.create_task(_announce(server, headend, on_ready))]
            if stop is not None:
                helpers.append(asyncio.create_task(_stop_on(stop, server)))
            try:
                await server.serve(sockets=[sock])
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
            return bool(server.started)
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def _open_headend(settings: Settings) -> AsyncIterator[Headend]:
    """`Headend.open`, with the gRPC port's failed bind as a ListenError naming it."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            headend = await stack.enter_async_context(Headend.open(settings))
        except OSError as exc:
            if exc.errno not in _BIND_ERRNOS:
                raise
            raise ListenError(settings.host, settings.grpc_port, "gRPC", exc) from None
        yield headend


async def _stop_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True


async def _announce(
    server: uvicorn.Server, headend: Headend, on_ready: Callable[[int, int], None] | None
) -> None:
    # uvicorn exposes "started" only as a flag (no event or callback): poll it.
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    http_port = next(
        (s.getsockname()[1] for srv in server.servers for s in (srv.sockets or ())),
        headend.settings.http_port,
    )
    grpc_port = headend.grpc_port
    log_event(
        log,
        "listening",
        host=headend.settings.host,
        http_port=http_port,
        grpc_port=grpc_port,
        loop=running_loop_name(),
    )
    if on_ready is not None:
        on_ready(http_port, grpc_port)


__all__ = ["run"]
