"""framing.py: the grpclib version and private names it was written against, and its
functions on a real grpclib server on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpclib
import grpclib.const
import grpclib.protocol
import grpclib.server
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import AbstractHandler
from grpclib.server import Stream

from vpp_headend import framing
from vpp_headend.errors import FrameTooLargeError

_PATH = "/test.Framing/Read"
_LIMIT = 64


def test_grpclib_is_the_version_framing_was_written_against() -> None:
    assert grpclib.__version__ == framing.GRPCLIB_VERSION, (
        f"grpclib is {grpclib.__version__}: re-check every private name in "
        "vpp_headend/framing.py against it, then set framing.GRPCLIB_VERSION"
    )


def test_the_private_grpclib_names_framing_uses_are_where_it_expects_them() -> None:
    # ConnectionHookServer (and so grpc_timeout.py) overrides the per-connection hook.
    assert callable(grpclib.server.Server._protocol_factory)
    assert "handler" in grpclib.protocol.H2Protocol.__init__.__code__.co_names
    # The peer's transport, read for its TLS object.
    peer = grpclib.protocol.Peer(transport=object())  # type: ignore[arg-type]
    assert hasattr(peer, "_transport")
    # The server stream's HTTP/2 stream (for the 5-byte prefix): set in __init__.
    assert "_stream" in grpclib.server.Stream.__init__.__code__.co_names
    assert callable(grpclib.protocol.Stream.recv_data)


async def test_grpclib_raises_assertion_error_for_a_stream_ended_inside_a_message() -> None:
    # read_frame maps exactly this to "truncated message" (test_headend_security_fuzz.py
    # sends truncated frames end to end).
    buffer = grpclib.protocol.Buffer(ack_callback=lambda _: None)
    buffer.add(b"abc", 3)
    buffer.eof()
    with pytest.raises(AssertionError):
        await buffer.read(5)


class _Raw:
    """A message that is its bytes."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> _Raw:
        return cls(data)


class _Reader:
    """A servicer that reads its stream with `framing` and reports what it saw."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.peers: list[tuple[object, str]] = []

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {_PATH: grpclib.const.Handler(self.read, Cardinality.STREAM_STREAM, _Raw, _Raw)}

    async def read(self, stream: Stream[Any, Any]) -> None:
        assert hasattr(stream, "_stream")
        assert hasattr(stream.peer, "_transport")
        self.peers.append((framing.peer_ssl_object(stream), framing.remote_address(stream)))
        try:
            while (body := await framing.read_frame(stream, _LIMIT)) is not None:
                self.frames.append(body)
        except FrameTooLargeError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, exc.detail) from None


class _CountingServer(framing.ConnectionHookServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wrapped = 0

    def wrap_handler(self, handler: AbstractHandler) -> AbstractHandler:
        self.wrapped += 1
        return handler


async def _exchange(port: int, bodies: list[bytes]) -> None:
    channel = Channel("127.0.0.1", port)
    try:
        async with channel.request(_PATH, Cardinality.STREAM_STREAM, _Raw, _Raw) as stream:
            for i, body in enumerate(bodies):
                await stream.send_message(_Raw(body), end=i == len(bodies) - 1)
            async with asyncio.timeout(5):
                assert await stream.recv_message() is None
    finally:
        channel.close()


async def test_frames_peers_and_the_connection_hook_on_a_real_server() -> None:
    reader = _Reader()
    server = _CountingServer([reader])
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await server.start(sock=sock)
    try:
        await _exchange(port, [b"one", b"", b"x" * _LIMIT])
        assert reader.frames == [b"one", b"", b"x" * _LIMIT]
        ssl_object, remote = reader.peers[0]
        assert ssl_object is None  # plaintext
        assert remote.startswith("127.0.0.1:")

        with pytest.raises(GRPCError) as err:
            await _exchange(port, [b"ok", b"x" * (_LIMIT + 1)])
        assert err.value.status == Status.INVALID_ARGUMENT
        assert err.value.message == f"message of {_LIMIT + 1} bytes exceeds the limit of 64 bytes"
        assert reader.frames[-1] == b"ok"
        assert server.wrapped == 2  # once per connection
    finally:
        server.close()
        await server.wait_closed()
