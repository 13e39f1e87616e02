"""A small TCP proxy for fault tests: forward, cut, stall (no FIN) or refuse connections.

Sits between gateways and the headend on loopback. Test-only: it never listens on
anything but the address it is given (127.0.0.1 in our tests).

- ``cut()``: close every proxied connection at once (both sides see a reset/EOF).
- ``stall()``: stop forwarding bytes but keep the sockets open, as a network that drops
  packets without a FIN does; only keepalive/heartbeats can detect it. ``stall("up")`` or
  ``stall("down")`` drops one direction only (a half-open path).
- ``refuse(True)``: close new connections immediately (headend unreachable).
- ``resume()``: forward again (new connections only after a cut).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)  # identity semantics: pipes live in a set
class _Pipe:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Proxy ``listen_host:listen_port`` → ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listen_host = listen_host
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        # one "flowing" gate per direction: up = client → target, down = target → client
        self._flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
        for gate in self._flowing.values():
            gate.set()
        self._refusing = False
        self._handlers: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._pipes)

    async def start(self, port: int = 0) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self._listen_host, port)
        return self

    async def stop(self) -> None:
        """Stop listening, drop every connection and wait for every task it started."""
        if self._server is not None:
            self._server.close()
        self.resume()  # release pumps parked on a stalled gate so they can see the abort
        self.cut()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        """Drop every open connection now."""
        for pipe in list(self._pipes):
            for writer in (pipe.client, pipe.upstream):
                writer.transport.abort()
        self._pipes.clear()

    def stall(self, direction: str = "both") -> None:
        """Stop forwarding ("both", "up" or "down"); sockets stay open (no FIN, no RST)."""
        for name in ("up", "down") if direction == "both" else (direction,):
            self._flowing[name].clear()

    def resume(self) -> None:
        """Forward again in both directions and accept new connections."""
        for gate in self._flowing.values():
            gate.set()
        self._refusing = False

    def refuse(self, on: bool = True) -> None:
        self._refusing = on

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._proxy(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self.connections_accepted += 1
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        pipe.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pipe, self._flowing["up"])),
            asyncio.create_task(self._pump(up_reader, writer, pipe, self._flowing["down"])),
        ]
        try:
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
        finally:
            for task in pipe.tasks:
                task.cancel()
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
            self._pipes.discard(pipe)
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pipe: _Pipe,
        flowing: asyncio.Event,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await src.read(65536)
                if not data:
                    break
                await flowing.wait()
                if pipe not in self._pipes:
                    break
                dst.write(data)
                await dst.drain()
        for task in pipe.tasks:
            if task is not asyncio.current_task():
                task.cancel()
