"""A small TCP proxy for fault tests: forward, cut, stall (no FIN) or refuse connections.

Sits between gateways and the headend on loopback. Test-only: it never listens on
anything but the address it is given (127.0.0.1 in our tests).

- ``cut()``: close every proxied connection at once (both sides see a reset/EOF).
- ``stall()``: stop forwarding bytes but keep the sockets open, as a network that drops
  packets without a FIN does; only keepalive/heartbeats can detect it.
- ``refuse(True)``: close new connections immediately (headend unreachable).
- ``resume()``: forward again (new connections only after a cut).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
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
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
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
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pipe in list(self._pipes):
            for task in pipe.tasks:
                task.cancel()
            await asyncio.gather(*pipe.tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop every open connection now."""
        for pipe in list(self._pipes):
            for writer in (pipe.client, pipe.upstream):
                writer.transport.abort()
        self._pipes.clear()

    def stall(self) -> None:
        """Stop forwarding in both directions; sockets stay open (no FIN, no RST)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()
        self._refusing = False

    def refuse(self, on: bool = True) -> None:
        self._refusing = on

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            asyncio.create_task(self._pump(reader, up_writer, pipe)),
            asyncio.create_task(self._pump(up_reader, writer, pipe)),
        ]
        await asyncio.gather(*pipe.tasks, return_exceptions=True)
        self._pipes.discard(pipe)
        for w in (writer, up_writer):
            w.transport.abort()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await src.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                if pipe not in self._pipes:
                    break
                dst.write(data)
                await dst.drain()
        for task in pipe.tasks:
            if task is not asyncio.current_task():
                task.cancel()
