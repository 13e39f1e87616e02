"""One gateway's bidi Connect call on either gRPC client: the raw HTTP/2 one (`h2.py`,
the default) or grpclib's (the reference to compare with)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from grpclib.client import Channel, Stream
from grpclib.const import Cardinality

from vpp_protocol.upb import pb

from . import h2

CONNECT = "/vpp.agent.v1.AgentService/Connect"


class Raw:
    """Pre-encoded bytes that grpclib's codec sends as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


class Call(Protocol):
    """One gateway's bidi Connect call, whichever client carries it."""

    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> Any: ...  # a pb.HeadendMessage, or None at the end

    async def end(self) -> None: ...


class _GrpclibCall:
    """The call on grpclib's client (h2 in pure Python): the reference to compare with."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream[Raw, Any]) -> None:
        self._stream = stream

    async def send(self, data: bytes) -> None:
        await self._stream.send_message(Raw(data))

    async def recv(self) -> Any:
        return await self._stream.recv_message()

    async def end(self) -> None:
        await self._stream.end()


@contextlib.asynccontextmanager
async def grpclib_call(host: str, port: int) -> AsyncIterator[Call]:
    """A Connect call on its own grpclib Channel; at a normal exit grpclib waits for the
    trailers and raises GRPCError on a non-OK status."""
    channel = Channel(host, port)
    try:
        async with channel.request(
            CONNECT, Cardinality.STREAM_STREAM, Raw, pb.HeadendMessage
        ) as stream:
            yield _GrpclibCall(stream)
    finally:
        channel.close()


class _RawCall:
    """The call on the raw HTTP/2 client (tools/loadgen/h2.py)."""

    __slots__ = ("_proto",)

    def __init__(self, proto: h2.GrpcCallProtocol) -> None:
        self._proto = proto

    async def send(self, data: bytes) -> None:
        await self._proto.send_message(data)

    async def recv(self) -> Any:
        data = await self._proto.recv_message()
        return None if data is None else pb.HeadendMessage.FromString(data)

    async def end(self) -> None:
        await self._proto.end()


@contextlib.asynccontextmanager
async def raw_call(host: str, port: int) -> AsyncIterator[Call]:
    """A Connect call on its own raw HTTP/2 connection. Like grpclib, a normal exit after
    `end` waits for the trailers and raises GRPCError on a non-OK status."""
    proto = await h2.open_call(host, port, CONNECT)
    try:
        yield _RawCall(proto)
        if proto.local_ended:
            await proto.finished()
    finally:
        proto.close()


CLIENTS: dict[str, Callable[[str, int], contextlib.AbstractAsyncContextManager[Call]]] = {
    "raw": raw_call,
    "grpclib": grpclib_call,
}
