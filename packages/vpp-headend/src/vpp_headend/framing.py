"""The one place the headend reaches into grpclib's private names (pinned by
``test_headend_framing.py``): message framing with a size limit, the peer, a connection hook.

grpclib offers none of these publicly: it buffers a message of any announced length
before decoding it, shows the peer certificate only as a dict, and attaches nothing per
connection. `grpc_timeout.py` builds on `ConnectionHookServer` and uses only the public
methods of `grpclib.protocol`.
"""

from __future__ import annotations

from typing import Any, Final

from grpclib.protocol import AbstractHandler, H2Protocol
from grpclib.server import Server, Stream

from .errors import FrameTooLargeError, ProtocolViolationError

#: The grpclib release the private names below were checked against.
GRPCLIB_VERSION: Final = "0.4.9"
_PREFIX = 5  # gRPC message prefix: a compressed flag and a 4-byte big-endian length


async def read_frame(stream: Stream[Any, Any], max_bytes: int) -> bytes | None:
    """The body of the next gRPC message on ``stream``, or None at the end of the stream.

    Reads the 5-byte prefix itself and refuses a message longer than ``max_bytes``
    (`FrameTooLargeError`) before reading its body; a compressed or truncated message is
    a `ProtocolViolationError`.
    """
    raw = stream._stream  # grpclib's HTTP/2 stream: the only way to see the prefix
    try:
        meta = await raw.recv_data(_PREFIX)
        if not meta:
            return None
        compressed, length = meta[0], int.from_bytes(meta[1:_PREFIX], "big")
        if compressed:
            raise ProtocolViolationError("compressed messages are not supported")
        if length > max_bytes:
            raise FrameTooLargeError(
                f"message of {length} bytes exceeds the limit of {max_bytes} bytes"
            )
        return await raw.recv_data(length)
    except AssertionError:  # grpclib's buffer: the stream ended inside a message
        raise ProtocolViolationError("truncated message (stream ended inside it)") from None


def peer_ssl_object(stream: Stream[Any, Any]) -> Any:
    """The `ssl.SSLObject` of the stream's connection; None on a plaintext connection."""
    transport = getattr(stream.peer, "_transport", None)  # Peer exposes only a dict form
    if transport is None:
        return None
    return transport.get_extra_info("ssl_object")


def remote_address(stream: Stream[Any, Any]) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of the peer, or ``?`` when unknown."""
    try:
        addr = stream.peer.addr()
    except Exception:  # peer info is best effort
        return "?"
    if not addr:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class ConnectionHookServer(Server):
    """A `grpclib.server.Server` that lets a subclass wrap each connection's handler."""

    def wrap_handler(self, handler: AbstractHandler) -> AbstractHandler:
        """The handler a new connection uses instead of grpclib's own ``handler``."""
        return handler

    def _protocol_factory(self) -> H2Protocol:  # grpclib's per-connection hook
        protocol = super()._protocol_factory()
        protocol.handler = self.wrap_handler(protocol.handler)
        return protocol


__all__ = [
    "GRPCLIB_VERSION",
    "ConnectionHookServer",
    "peer_ssl_object",
    "read_frame",
    "remote_address",
]
