"""HTTP/2 framing for the raw gRPC client (`h2.py`): frame constants, the errors it raises
and the byte strings it writes (RFC 9113)."""

from __future__ import annotations

import struct
from functools import lru_cache

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
# Flags.
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# SETTINGS identifiers.
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x2, 0x4, 0x5
CANCEL = 0x8  # RST_STREAM error code

STREAM_ID = 1
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1

#: 24-bit length (as 8 + 16 bits), type, flags, stream id.
FRAME_HEAD = struct.Struct(">BHBBI")
#: A DATA frame header on stream 1 directly followed by the gRPC message prefix.
DATA_MSG_HEAD = struct.Struct(">BHBBIBI")
MSG_HEAD = struct.Struct(">BI")
U32 = struct.Struct(">I")
SETTING = struct.Struct(">HI")


class StreamTerminatedError(Exception):
    """The call ended without a gRPC status: RST_STREAM, GOAWAY or the connection lost.

    Named like grpclib's exception so the harness reports the same error kind."""


class GRPCError(Exception):
    """The server ended the call with a non-OK (or missing) ``grpc-status``."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class CallEnded(Exception):
    """Internal: the server ended the call while a message waited for window."""


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame: the 9-byte header and the payload."""
    n = len(payload)
    return FRAME_HEAD.pack(n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


@lru_cache(maxsize=16)
def request_headers(authority: str, path: str) -> bytes:
    """The HPACK block of the call's request HEADERS, encoded once per process per target.

    A fresh Encoder has an empty dynamic table, exactly like the server's decoder on a
    new connection, and this is the only header block a connection ever sends: the same
    bytes are valid as the first block of every new connection."""
    return bytes(
        hpack.Encoder().encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
            huffman=True,
        )
    )


def connection_start(header_block: bytes, window: int) -> bytes:
    """Preface, SETTINGS, connection WINDOW_UPDATE and the request HEADERS, in one write.

    ``window`` is what we let the server send before we give window back; the server's
    messages are few and small, so a large window means it never waits on us."""
    settings = SETTING.pack(SETTINGS_ENABLE_PUSH, 0) + SETTING.pack(
        SETTINGS_INITIAL_WINDOW_SIZE, window
    )
    out = PREFACE + frame(SETTINGS, 0, 0, settings)
    if window > DEFAULT_WINDOW:
        out += frame(WINDOW_UPDATE, 0, 0, U32.pack(window - DEFAULT_WINDOW))
    return out + frame(HEADERS, END_HEADERS, STREAM_ID, header_block)
