"""The load harness's raw HTTP/2 gRPC client (tools/loadgen/h2.py), frame by frame.

The protocol object is driven with bytes through ``data_received``; what it writes is
captured by a recording transport and parsed with hyperframe (h2's own frame library),
and server frames are built with hyperframe and hpack, so the client is checked against
an independent implementation of the framing, not against itself.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from loadgen import h2 as h2c

PATH = "/vpp.agent.v1.AgentService/Connect"


class RecordingTransport(asyncio.Transport):
    """Collects what the protocol writes; the only stand-in for the network here."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def take(self) -> list[Frame]:
        """The frames written since the last call (the connection preface skipped)."""
        data = bytes(self.out)
        self.out.clear()
        if data.startswith(h2c.PREFACE):
            data = data[len(h2c.PREFACE) :]
        frames: list[Frame] = []
        while data:
            f, length = Frame.parse_frame_header(memoryview(data[:9]))
            f.parse_body(memoryview(data[9 : 9 + length]))
            frames.append(f)
            data = data[9 + length :]
        return frames


def grpc_msg(body: bytes) -> bytes:
    return struct.pack(">BI", 0, len(body)) + body


def data(payload: bytes, *flags: str, stream: int = 1) -> bytes:
    return bytes(DataFrame(stream, data=payload, flags=flags).serialize())


def headers(block: list[tuple[str, str]], *flags: str) -> bytes:
    f = HeadersFrame(1, data=hpack.Encoder().encode(block), flags=("END_HEADERS", *flags))
    return bytes(f.serialize())


def connect(window: int = h2c.MAX_WINDOW) -> tuple[h2c.GrpcCallProtocol, RecordingTransport]:
    proto = h2c.GrpcCallProtocol(h2c.request_headers("127.0.0.1:1", PATH), window=window)
    transport = RecordingTransport()
    proto.connection_made(transport)
    return proto, transport


async def test_connection_start_preface_settings_window_and_headers() -> None:
    _, t = connect()
    assert bytes(t.out).startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    settings, window, hdrs = t.take()
    assert isinstance(settings, SettingsFrame)
    assert settings.stream_id == 0
    assert settings.settings[SettingsFrame.INITIAL_WINDOW_SIZE] == 2**31 - 1
    assert settings.settings[SettingsFrame.ENABLE_PUSH] == 0
    assert isinstance(window, WindowUpdateFrame)
    assert (window.stream_id, window.window_increment) == (0, 2**31 - 1 - 65_535)
    assert isinstance(hdrs, HeadersFrame)
    assert hdrs.stream_id == 1
    assert hdrs.flags == {"END_HEADERS"}
    assert hpack.Decoder().decode(hdrs.data) == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PATH),
        (":authority", "127.0.0.1:1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


async def test_header_block_is_reused_per_process_and_decodes_on_every_fresh_connection() -> None:
    block = h2c.request_headers("h:2", PATH)
    assert h2c.request_headers("h:2", PATH) is block
    # Each connection's server decoder starts empty: the same bytes decode every time.
    for _ in range(2):
        assert dict(hpack.Decoder().decode(block))[":authority"] == "h:2"


async def test_settings_is_acked_and_applied() -> None:
    proto, t = connect()
    t.take()
    f = SettingsFrame(0, settings={SettingsFrame.MAX_FRAME_SIZE: 20_000})
    proto.data_received(bytes(f.serialize()))
    (ack,) = t.take()
    assert isinstance(ack, SettingsFrame)
    assert ack.flags == {"ACK"}
    assert ack.settings == {}
    # A settings ACK from the server is not acked again.
    ack_in = SettingsFrame(0)
    ack_in.flags.add("ACK")
    proto.data_received(bytes(ack_in.serialize()))
    assert t.take() == []
    # A message that fits the new frame size (and the default windows) goes in one frame.
    await proto.send_message(b"x" * 18_000)
    (frame,) = t.take()
    assert isinstance(frame, DataFrame)
    assert frame.data == grpc_msg(b"x" * 18_000)


async def test_ping_is_answered_with_the_same_payload_and_acks_are_ignored() -> None:
    proto, t = connect()
    t.take()
    proto.data_received(bytes(PingFrame(0, opaque_data=b"12345678").serialize()))
    # length 8, type PING, flags ACK, stream 0, the same opaque data
    assert bytes(t.out) == b"\x00\x00\x08\x06\x01\x00\x00\x00\x0012345678"
    (pong,) = t.take()
    assert isinstance(pong, PingFrame)
    assert pong.flags == {"ACK"}
    assert pong.opaque_data == b"12345678"
    ack = PingFrame(0, opaque_data=b"abcdefgh")
    ack.flags.add("ACK")
    proto.data_received(bytes(ack.serialize()))
    assert t.take() == []


async def test_a_frame_split_across_data_received_calls() -> None:
    proto, _ = connect()
    wire = data(grpc_msg(b"hello"))
    for i in range(len(wire)):  # one byte at a time, headers included
        proto.data_received(wire[i : i + 1])
    assert await proto.recv_message() == b"hello"


async def test_several_frames_in_one_call() -> None:
    proto, t = connect()
    t.take()
    wire = (
        bytes(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1_000}).serialize())
        + headers([(":status", "200"), ("content-type", "application/grpc")])
        + data(grpc_msg(b"one") + grpc_msg(b"two"))
        + bytes(PingFrame(0, opaque_data=b"\x00" * 8).serialize())
        + data(grpc_msg(b"three"))
    )
    proto.data_received(wire[:-3])  # and the last frame's tail in the next call
    proto.data_received(wire[-3:])
    assert [await proto.recv_message() for _ in range(3)] == [b"one", b"two", b"three"]
    kinds = [type(f).__name__ for f in t.take()]
    assert kinds == ["SettingsFrame", "PingFrame"]


async def test_a_grpc_message_spanning_data_frames() -> None:
    proto, _ = connect()
    msg = grpc_msg(b"a" * 40_000)
    proto.data_received(data(msg[:3]) + data(msg[3:16_000]))
    proto.data_received(data(msg[16_000:32_000]))
    waiting = asyncio.ensure_future(proto.recv_message())
    await asyncio.sleep(0)
    assert not waiting.done()
    proto.data_received(data(msg[32_000:]))
    assert await waiting == b"a" * 40_000


async def test_padded_data_frames() -> None:
    proto, _ = connect()
    f = DataFrame(1, data=grpc_msg(b"pad"), pad_length=7)
    f.flags.add("PADDED")
    proto.data_received(bytes(f.serialize()))
    assert await proto.recv_message() == b"pad"


async def test_window_given_back_for_connection_and_stream() -> None:
    proto, t = connect(window=100)
    t.take()
    proto.data_received(data(grpc_msg(b"x" * 30)))  # 35 bytes: under half the window
    assert t.take() == []
    proto.data_received(data(grpc_msg(b"y" * 20)))  # 60 in all
    conn, stream = t.take()
    assert isinstance(conn, WindowUpdateFrame)
    assert isinstance(stream, WindowUpdateFrame)
    assert (conn.stream_id, conn.window_increment) == (0, 60)
    assert (stream.stream_id, stream.window_increment) == (1, 60)


async def test_send_waits_for_the_connection_window() -> None:
    proto, t = connect()
    t.take()
    body = b"z" * 70_000  # 70,005 bytes framed: more than the initial 65,535
    sending = asyncio.ensure_future(proto.send_message(body))
    await asyncio.sleep(0.01)
    assert not sending.done()
    sent = t.take()
    assert all(isinstance(f, DataFrame) and len(f.data) <= 16_384 for f in sent)
    assert sum(len(f.data) for f in sent if isinstance(f, DataFrame)) == 65_535
    # The stream window alone is not enough; the connection window as well opens it.
    proto.data_received(bytes(WindowUpdateFrame(1, window_increment=10_000).serialize()))
    await asyncio.sleep(0.01)
    assert not sending.done()
    assert t.take() == []
    proto.data_received(bytes(WindowUpdateFrame(0, window_increment=10_000).serialize()))
    await asyncio.wait_for(sending, 1)
    rest = t.take()
    assert sum(len(f.data) for f in rest if isinstance(f, DataFrame)) == 70_005 - 65_535
    payload = b"".join(f.data for f in sent + rest if isinstance(f, DataFrame))
    assert payload == grpc_msg(body)


async def test_send_waits_for_the_stream_window_from_settings() -> None:
    proto, t = connect()
    t.take()
    proto.data_received(
        bytes(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 4}).serialize())
    )
    t.take()
    first = asyncio.ensure_future(proto.send_message(b"abcdef"))  # 11 bytes framed
    second = asyncio.ensure_future(proto.send_message(b"gh"))
    await asyncio.sleep(0.01)
    (head,) = t.take()
    assert isinstance(head, DataFrame)
    assert head.data == grpc_msg(b"abcdef")[:4]
    assert not first.done()
    assert not second.done()
    # A larger INITIAL_WINDOW_SIZE adds its difference to the open stream's window.
    proto.data_received(
        bytes(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 100}).serialize())
    )
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    frames = [f for f in t.take() if isinstance(f, DataFrame)]
    assert b"".join(f.data for f in [head, *frames]) == grpc_msg(b"abcdef") + grpc_msg(b"gh")


async def test_end_sends_an_empty_data_frame_with_end_stream_and_trailers_end_the_call() -> None:
    proto, t = connect()
    t.take()
    await proto.send_message(b"m")
    await proto.end()
    msg, end = t.take()
    assert isinstance(msg, DataFrame)
    assert isinstance(end, DataFrame)
    assert (end.data, end.flags, end.stream_id) == (b"", {"END_STREAM"}, 1)
    proto.data_received(
        headers([(":status", "200"), ("content-type", "application/grpc")])
        + data(grpc_msg(b"last"))
        + headers([("grpc-status", "0")], "END_STREAM")
    )
    assert await proto.recv_message() == b"last"
    assert await proto.recv_message() is None
    await proto.finished()
    proto.close()
    assert t.closed
    assert t.take() == []  # no RST_STREAM for a call that ended on both sides


async def test_trailers_only_response_with_an_error_status() -> None:
    proto, t = connect()
    t.take()
    proto.data_received(
        headers(
            [(":status", "200"), ("grpc-status", "7"), ("grpc-message", "not registered")],
            "END_STREAM",
        )
        + bytes(RstStreamFrame(1, error_code=0).serialize())  # as grpclib does after it
    )
    assert await proto.recv_message() is None
    await proto.send_message(b"dropped")  # the call is over: nothing more is written
    await proto.end()
    assert t.take() == []
    with pytest.raises(h2c.GRPCError) as err:
        await proto.finished()
    assert (err.value.status, err.value.message) == (7, "not registered")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (bytes(RstStreamFrame(1, error_code=2).serialize()), "Stream reset by remote party"),
        (
            bytes(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize()),
            "Received GOAWAY frame",
        ),
    ],
)
async def test_reset_and_goaway_end_the_call_with_stream_terminated(
    wire: bytes, message: str
) -> None:
    proto, t = connect()
    t.take()
    waiting = asyncio.ensure_future(proto.recv_message())
    await asyncio.sleep(0)
    proto.data_received(wire)
    with pytest.raises(h2c.StreamTerminatedError, match=message):
        await waiting
    with pytest.raises(h2c.StreamTerminatedError):
        await proto.send_message(b"x")
    with pytest.raises(h2c.StreamTerminatedError):
        await proto.finished()


async def test_connection_lost_wakes_a_waiting_sender_and_receiver() -> None:
    proto, t = connect()
    t.take()
    proto.data_received(
        bytes(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize())
    )
    sending = asyncio.ensure_future(proto.send_message(b"blocked"))
    receiving = asyncio.ensure_future(proto.recv_message())
    await asyncio.sleep(0)
    proto.connection_lost(None)
    results: list[Any] = await asyncio.gather(sending, receiving, return_exceptions=True)
    assert all(isinstance(r, h2c.StreamTerminatedError) for r in results)
    assert "Connection lost" in str(results[0])


async def test_a_data_frame_larger_than_our_max_frame_size_aborts() -> None:
    proto, t = connect()
    proto.data_received(data(b"\x00" * 16_385))
    assert t.closed
    with pytest.raises(h2c.StreamTerminatedError, match="frame too large"):
        await proto.recv_message()


# -- against a real HTTP/2 peer: grpclib's server (h2), in this event loop -------------------


class Blob:
    """Message bytes as they are, for grpclib's codec."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def FromString(cls, data: bytes) -> Blob:
        return cls(data)

    def SerializeToString(self) -> bytes:
        return self.data


class EchoService:
    """Echoes every message; ``fail`` ends the call with NOT_FOUND instead."""

    def __mapping__(self) -> dict[str, Any]:
        from grpclib.const import Cardinality, Handler

        return {
            "/test.Echo/Echo": Handler(self.echo, Cardinality.STREAM_STREAM, Blob, Blob),
            "/test.Echo/Fail": Handler(self.fail, Cardinality.STREAM_STREAM, Blob, Blob),
        }

    async def echo(self, stream: Any) -> None:
        async for msg in stream:
            await stream.send_message(msg)

    async def fail(self, stream: Any) -> None:
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        await stream.recv_message()
        raise GRPCError(Status.NOT_FOUND, "nope")


async def _serve() -> tuple[Any, int]:
    from grpclib.server import Server

    server = Server([EchoService()])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return server, port


async def test_large_messages_both_ways_through_real_flow_control() -> None:
    """5 MB each way with a 70 kB receive window on our side: the server's h2 enforces
    our window (it stalls unless we give window back) and its own (we must wait for its
    WINDOW_UPDATEs past its 4 MB), and messages span many 16 kB DATA frames."""
    server, port = await _serve()
    try:
        proto = await h2c.open_call("127.0.0.1", port, "/test.Echo/Echo", window=70_000)
        bodies = [bytes([i]) * 1_000_000 for i in range(5)]

        async def receive() -> list[bytes]:
            out = []
            while (msg := await proto.recv_message()) is not None:
                out.append(msg)
            return out

        receiving = asyncio.create_task(receive())
        for body in bodies:
            await proto.send_message(body)
        await proto.end()
        assert await asyncio.wait_for(receiving, 30) == bodies
        await asyncio.wait_for(proto.finished(), 5)
        proto.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_non_ok_status_from_a_real_server() -> None:
    server, port = await _serve()
    try:
        proto = await h2c.open_call("127.0.0.1", port, "/test.Echo/Fail")
        await proto.send_message(b"hi")
        assert await asyncio.wait_for(proto.recv_message(), 5) is None
        with pytest.raises(h2c.GRPCError) as err:
            await proto.finished()
        assert (err.value.status, err.value.message) == (5, "nope")
        proto.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_connection_refused_is_an_oserror() -> None:
    server, port = await _serve()
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await h2c.open_call("127.0.0.1", port, "/test.Echo/Echo")
