"""A minimal raw HTTP/2 client for one gRPC bidi call per connection (the load harness).

Why: grpclib's client runs h2/hyperframe in pure Python, and at thousands of simulated
gateways it cost about as much CPU as the headend it was measuring on a 2-core machine.
This client does only what one long-lived bidi call needs: it writes frames with
``struct`` and pre-encoded bytes (the HPACK request block is encoded once per process),
and parses the few frame types a gRPC server sends. It is honest HTTP/2 all the same:
connection and stream send windows are tracked and a send waits when a frame does not
fit; SETTINGS and PING are acked; the receive window is given back.

It is a load-generator tool, not a general client: one stream (id 1) per connection, no
TLS, no compression, no request metadata beyond the gRPC headers. Errors carry grpclib's
exception names (`StreamTerminatedError`, `GRPCError`) so the harness's error kinds
compare between the two clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import cast

import hpack

from .h2frames import (
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    DATA_MSG_HEAD,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FRAME_HEAD,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    MSG_HEAD,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    STREAM_ID,
    U32,
    WINDOW_UPDATE,
    CallEnded,
    GRPCError,
    StreamTerminatedError,
    connection_start,
    frame,
    request_headers,
)

# What the harness and the frame-level tests use; the framing itself is in h2frames.
__all__ = [
    "PREFACE",
    "GRPCError",
    "GrpcCallProtocol",
    "StreamTerminatedError",
    "open_call",
    "request_headers",
]


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
    waiters.clear()


class GrpcCallProtocol(asyncio.Protocol):
    """One gRPC bidi call (stream 1) on its own HTTP/2 connection.

    The hot path is `send_message` when the windows have room: one ``transport.write`` of
    a packed header plus the message, no awaits. Messages from the server arrive as raw
    bytes through `recv_message`; `finished` waits for the trailers and raises like
    grpclib would on a non-OK status."""

    def __init__(self, header_block: bytes, *, window: int = MAX_WINDOW) -> None:
        self._header_block = header_block
        self._transport: asyncio.Transport | None = None
        # Send side: what the server lets us send.
        self._conn_window = DEFAULT_WINDOW
        self._stream_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._max_frame = DEFAULT_MAX_FRAME
        self._paused = False
        self._send_lock = asyncio.Lock()
        self._send_waiters: list[asyncio.Future[None]] = []
        self._local_ended = False
        # Receive side.
        self._window = window
        self._unacked = 0
        self._rbuf = bytearray()
        self._msgbuf = bytearray()
        self._header_frags: list[bytes] | None = None
        self._header_end_stream = False
        self._decoder: hpack.Decoder | None = None
        self._inbox: deque[bytes] = deque()
        self._recv_waiters: list[asyncio.Future[None]] = []
        self._remote_ended = False
        self._grpc_status: int | None = None
        self._grpc_message = ""
        self._error: Exception | None = None  # the call failed without a status
        self._send_error: Exception | None = None  # nothing more can be sent

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(connection_start(self._header_block, self._window))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(StreamTerminatedError("Connection lost"))
        self._transport = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        _wake(self._send_waiters)

    def data_received(self, data: bytes) -> None:
        """Parse every complete frame; keep a partial one for the next call."""
        buf: bytes | bytearray
        if self._rbuf:
            self._rbuf += data
            buf = self._rbuf
        else:
            buf = data
        pos, end = 0, len(buf)
        while end - pos >= 9:
            hi, lo, ftype, flags, sid = FRAME_HEAD.unpack_from(buf, pos)
            stop = pos + 9 + (hi << 16 | lo)
            if stop > end:
                break
            if stop - pos - 9 > DEFAULT_MAX_FRAME:  # we never raised SETTINGS_MAX_FRAME_SIZE
                self._abort(StreamTerminatedError("Protocol error: frame too large"))
                return
            self._on_frame(ftype, flags, sid & 0x7FFFFFFF, bytes(buf[pos + 9 : stop]))
            pos = stop
        self._rbuf = bytearray(buf[pos:]) if pos < end else bytearray()

    # -- the call --------------------------------------------------------------------------

    async def send_message(self, body: bytes) -> None:
        """One gRPC message (flag 0, 4-byte length, body) in DATA frames on stream 1.

        Once the server has ended the call the message is dropped (nobody reads it; the
        server may have reset the stream): the outcome is its status, see `finished`."""
        if self._local_ended:
            raise StreamTerminatedError("the request stream was already ended")
        if self._remote_ended and self._error is None:
            return
        if self._send_error is not None:
            raise self._send_error
        size = len(body) + 5
        if (
            size <= self._max_frame
            and size <= self._conn_window
            and size <= self._stream_window
            and not self._paused
            and not self._send_lock.locked()
            and self._transport is not None
        ):
            self._conn_window -= size
            self._stream_window -= size
            self._transport.write(
                DATA_MSG_HEAD.pack(size >> 16, size & 0xFFFF, DATA, 0, STREAM_ID, 0, len(body))
                + body
            )
            return
        async with self._send_lock:
            with contextlib.suppress(CallEnded):
                await self._send_chunks(MSG_HEAD.pack(0, len(body)) + body)

    async def _send_chunks(self, data: bytes) -> None:
        """The slow path: as many DATA frames as the frame size and the windows allow,
        waiting for WINDOW_UPDATE (or the transport's buffer to drain) in between."""
        pos = 0
        while pos < len(data):
            room = min(self._conn_window, self._stream_window, self._max_frame)
            if room <= 0 or self._paused:
                await self._wait_send()
                continue
            chunk = data[pos : pos + room]
            assert self._transport is not None
            self._transport.write(frame(DATA, 0, STREAM_ID, chunk))
            self._conn_window -= len(chunk)
            self._stream_window -= len(chunk)
            pos += len(chunk)

    async def _wait_send(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._send_waiters.append(fut)
        await fut
        if self._remote_ended and self._error is None:
            raise CallEnded
        if self._send_error is not None:
            raise self._send_error

    async def end(self) -> None:
        """Half-close: an empty DATA frame with END_STREAM (after any queued message).

        If the server has already ended the call nothing is sent (it may have reset the
        stream), but the call counts as ended here all the same, so `finished` reports
        its status whichever came first."""
        async with self._send_lock:
            if self._local_ended:
                return
            if self._remote_ended and self._error is None:
                self._local_ended = True
                return
            if self._send_error is not None:
                raise self._send_error
            assert self._transport is not None
            self._local_ended = True
            self._transport.write(frame(DATA, END_STREAM, STREAM_ID))

    @property
    def local_ended(self) -> bool:
        """Whether `end` was called (and END_STREAM sent, unless the call was over)."""
        return self._local_ended

    async def recv_message(self) -> bytes | None:
        """The next message from the server; None once the server ended the call."""
        while not self._inbox:
            if self._remote_ended:
                if self._error is not None:
                    raise self._error
                return None
            await self._wait_recv()
        return self._inbox.popleft()

    async def finished(self) -> None:
        """Wait for the server's end of the call; raise unless its status is OK."""
        while not self._remote_ended:
            await self._wait_recv()
        if self._error is not None:
            raise self._error
        if self._grpc_status != 0:
            raise GRPCError(self._grpc_status, self._grpc_message or "missing grpc-status")

    async def _wait_recv(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recv_waiters.append(fut)
        await fut

    def close(self) -> None:
        """Cancel the stream if it is still open and close the connection."""
        if self._transport is None:
            return
        if not self._remote_ended and self._send_error is None:
            self._transport.write(frame(RST_STREAM, 0, STREAM_ID, U32.pack(CANCEL)))
        self._transport.close()

    # -- frames from the server ------------------------------------------------------------

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == DATA:
            self._on_data(flags, payload)
        elif ftype in (HEADERS, CONTINUATION):
            self._on_headers(ftype, flags, payload)
        elif ftype == SETTINGS:
            if not flags & ACK:
                self._on_settings(payload)
        elif ftype == PING:
            if not flags & ACK and self._transport is not None:
                self._transport.write(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif ftype == RST_STREAM:
            if sid == STREAM_ID and not self._remote_ended:
                code = U32.unpack_from(payload)[0]
                self._fail(
                    StreamTerminatedError(f"Stream reset by remote party, error_code: {code}")
                )
        elif ftype == GOAWAY:
            code = U32.unpack_from(payload, 4)[0]
            self._fail(
                StreamTerminatedError(
                    f"Received GOAWAY frame, closing connection; error_code: {code}"
                )
            )
        # PRIORITY, PUSH_PROMISE (disabled by our SETTINGS) and unknown types: ignored.

    def _on_settings(self, payload: bytes) -> None:
        for off in range(0, len(payload) - 5, 6):
            ident, value = SETTING.unpack_from(payload, off)
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                # Applies to open streams as a delta (RFC 9113 6.9.2); may go negative.
                self._stream_window += value - self._peer_initial_window
                self._peer_initial_window = value
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value
        if self._transport is not None:
            self._transport.write(frame(SETTINGS, ACK, 0))
        _wake(self._send_waiters)

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        inc = U32.unpack_from(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            self._conn_window += inc
        elif sid == STREAM_ID:
            self._stream_window += inc
        _wake(self._send_waiters)

    def _on_data(self, flags: int, payload: bytes) -> None:
        self._give_back(len(payload))  # flow control counts the padding too
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        mb = self._msgbuf
        mb += payload
        got = False
        while len(mb) >= 5:
            compressed, length = MSG_HEAD.unpack_from(mb)
            if len(mb) < 5 + length:
                break
            if compressed:
                self._abort(StreamTerminatedError("compressed message (none was offered)"))
                return
            self._inbox.append(bytes(mb[5 : 5 + length]))
            del mb[: 5 + length]
            got = True
        if got:
            _wake(self._recv_waiters)
        if flags & END_STREAM:
            self._end_remote()

    def _give_back(self, n: int) -> None:
        """Batched WINDOW_UPDATEs (connection and stream) once half the window is used."""
        self._unacked += n
        if self._unacked < max(1, self._window // 2) or self._transport is None:
            return
        inc = U32.pack(self._unacked)
        out = frame(WINDOW_UPDATE, 0, 0, inc)
        if not self._remote_ended:
            out += frame(WINDOW_UPDATE, 0, STREAM_ID, inc)
        self._transport.write(out)
        self._unacked = 0

    def _on_headers(self, ftype: int, flags: int, payload: bytes) -> None:
        """Collect a header block (HEADERS + CONTINUATIONs); the block that ends the
        stream carries the gRPC status. Decoding keeps the HPACK table in step; there
        are only two blocks a call (response headers, trailers)."""
        if ftype == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._header_frags = []
            self._header_end_stream = bool(flags & END_STREAM)
        if self._header_frags is None:
            self._abort(StreamTerminatedError("Protocol error: CONTINUATION without HEADERS"))
            return
        self._header_frags.append(payload)
        if not flags & END_HEADERS:
            return
        block, self._header_frags = b"".join(self._header_frags), None
        if self._decoder is None:
            self._decoder = hpack.Decoder()
        headers = dict(self._decoder.decode(block, raw=True))
        if self._header_end_stream:
            status = headers.get(b"grpc-status", b"")
            self._grpc_status = int(status) if status.isdigit() else None
            self._grpc_message = headers.get(b"grpc-message", b"").decode(errors="replace")
            self._end_remote()

    # -- state -----------------------------------------------------------------------------

    def _end_remote(self) -> None:
        self._remote_ended = True
        _wake(self._recv_waiters)

    def _fail(self, exc: Exception) -> None:
        """Nothing more can be sent; and unless the server had already ended the call
        (its status is then the outcome, as in grpclib), the call failed with ``exc``."""
        if not self._remote_ended:
            self._error = exc
            self._remote_ended = True
        if self._send_error is None:
            self._send_error = exc
        _wake(self._recv_waiters)
        _wake(self._send_waiters)

    def _abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.close()


async def open_call(
    host: str, port: int, path: str, *, window: int = MAX_WINDOW
) -> GrpcCallProtocol:
    """Connect and start the call (request headers sent); OSError if it cannot connect."""
    block = request_headers(f"{host}:{port}", path)
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: GrpcCallProtocol(block, window=window), host, port
    )
    return proto
