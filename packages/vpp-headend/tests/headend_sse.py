"""GET /events in tests: the app served by a real uvicorn on the test's loop, and a
Server-Sent Events reader over httpx.

httpx's ASGITransport (`headend_http.app_client`) hands over a response only once the app
has sent all of it, so a stream that never ends needs a real server. Its listening socket
gets a small send buffer (accepted sockets inherit it, and a set size turns Linux's
autotuning off): a client that stops reading holds up the server after ~100 KB, not
after the megabytes autotuning would buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from headend_waits import eventually
from litestar import Litestar


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest keeps its own handlers
        yield


@contextlib.asynccontextmanager
async def serve_http(app: Litestar) -> AsyncIterator[str]:
    """Serve ``app`` on a loopback port in this loop; yields its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=2
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started, 5, "uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: its type and its data as JSON (None when it had none)."""

    event: str
    data: Any


class SseReader:
    """Reads events off a streaming response in the background, in order; keeps every
    line read (`lines`) and every event handed out (`seen`)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines: list[str] = []
        self.seen: list[Event] = []
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading (the test that wants a client that does not read never calls it)."""
        if self._pump is None:
            self._pump = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    async def _read(self) -> None:
        kind, data = "message", list[str]()
        try:
            async for line in self.response.aiter_lines():
                self.lines.append(line)
                if line == "":
                    if data:
                        self._events.put_nowait(Event(kind, json.loads("\n".join(data))))
                    kind, data = "message", []
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
        except httpx.HTTPError:
            pass
        finally:
            self._events.put_nowait(None)

    async def next(self, within: float = 5.0) -> Event | None:
        """The next event (comments and ``retry:`` skipped); None when the stream ended."""
        self.start()
        async with asyncio.timeout(within):
            got = await self._events.get()
        if got is None:
            self._events.put_nowait(None)  # ended for every later call too
        else:
            self.seen.append(got)
        return got

    async def until(
        self, match: Callable[[Event], bool], within: float = 10.0, what: str = "event"
    ) -> Event:
        """Read on until an event ``match``es; fail after ``within`` s or at the end."""
        try:
            async with asyncio.timeout(within):
                while True:
                    got = await self.next(within)
                    if got is None:
                        raise AssertionError(f"stream ended before {what}; read {self.seen}")
                    if match(got):
                        return got
        except TimeoutError:
            raise AssertionError(f"no {what} within {within} s; read {self.seen}") from None

    async def until_all(
        self, matches: list[Callable[[Event], bool]], within: float = 10.0, what: str = "events"
    ) -> None:
        """Read on until each of ``matches`` has matched an event read (in any order)."""

        def all_seen(_: Event) -> bool:
            return all(any(m(e) for e in self.seen) for m in matches)

        if not (self.seen and all_seen(self.seen[-1])):
            await self.until(all_seen, within, what)

    async def ended(self, within: float = 5.0) -> bool:
        """True once the stream ends (events read meanwhile are kept in `seen`)."""
        async with asyncio.timeout(within):
            while await self.next(within) is not None:
                pass
        return True


@contextlib.asynccontextmanager
async def open_events(
    base_url: str,
    params: Sequence[tuple[str, str]] = (),
    *,
    receive_buffer: int | None = None,
) -> AsyncIterator[SseReader]:
    """``GET /events`` as a stream (``receive_buffer``: the client socket's SO_RCVBUF,
    small to make a client that stops reading hold the server up soon)."""
    options = (
        [] if receive_buffer is None else [(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)]
    )
    transport = httpx.AsyncHTTPTransport(socket_options=options)
    async with (
        httpx.AsyncClient(transport=transport, base_url=base_url, timeout=None) as client,
        client.stream(
            "GET",
            "/events",
            params=tuple(params),
        ) as response,
    ):
        assert response.status_code == 200, (await response.aread()).decode()
        reader = SseReader(response)
        try:
            yield reader
        finally:
            await reader.stop()


__all__ = ["Event", "SseReader", "open_events", "serve_http"]
