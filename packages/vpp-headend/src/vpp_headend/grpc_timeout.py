"""grpclib's `Server`, answering a malformed or spent ``grpc-timeout`` with a gRPC status.

grpclib 0.4.x reads ``grpc-timeout`` in its request handler, before any hook a server
can attach: a malformed value gets UNKNOWN, and one already spent when its deadline
timer is set (``1n``) raises out of grpclib and is answered UNKNOWN "Internal Server
Error" with a traceback, once per call. `TimeoutCheckingServer` checks the header as
each request arrives: not 1 to 8 ASCII digits and a unit (the gRPC wire format) →
INVALID_ARGUMENT; under `MIN_TIMEOUT_S` → DEADLINE_EXCEEDED. Both are trailers-only
responses, no handler runs, nothing is logged as an error. Longer timeouts are
grpclib's: its timer ends the call with DEADLINE_EXCEEDED, logged at INFO.

The per-connection hook is `framing.ConnectionHookServer` (where grpclib's private
names are kept); this module uses only the public methods of `grpclib.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Collection
from typing import Any

from grpclib.const import Status
from grpclib.metadata import decode_timeout, encode_grpc_message
from grpclib.protocol import AbstractHandler, Stream
from h2.exceptions import H2Error

from .framing import ConnectionHookServer
from .logs import log_event

log = logging.getLogger(__name__)

#: Below this, a deadline is treated as spent on arrival. grpclib reads the clock twice
#: (deadline, then timer) a few µs apart; only a pause (a full GC) between the two could
#: exceed this, and no call on a network meets a 10 ms deadline for sure anyway.
MIN_TIMEOUT_S = 0.010
_TIMEOUT = re.compile(r"[0-9]{1,8}[HMSmun]")

Headers = Collection[tuple[str, str]]


def timeout_problem(headers: Headers) -> tuple[Status, str] | None:
    """The status and message for a request's bad ``grpc-timeout`` header(s), or None."""
    shortest: float | None = None
    for name, value in headers:
        if name != "grpc-timeout":
            continue
        if not _TIMEOUT.fullmatch(value):
            shown = value[:32].encode("unicode_escape").decode("ascii")
            return (
                Status.INVALID_ARGUMENT,
                f"invalid grpc-timeout header {shown!r}: expected 1 to 8 digits and a unit "
                "(H, M, S, m, u, n)",
            )
        timeout = decode_timeout(value)
        shortest = timeout if shortest is None else min(shortest, timeout)
    if shortest is not None and shortest < MIN_TIMEOUT_S:
        return (
            Status.DEADLINE_EXCEEDED,
            f"deadline exceeded on arrival (grpc-timeout {shortest:g} s is under "
            f"{MIN_TIMEOUT_S * 1000:g} ms)",
        )
    return None


class _TimeoutGate(AbstractHandler):
    """A connection's handler: grpclib's own, after the ``grpc-timeout`` check."""

    def __init__(self, inner: AbstractHandler, tasks: set[asyncio.Task[None]]) -> None:
        self._inner = inner
        self._tasks = tasks  # owned by the server, which awaits them when it closes
        self._refusing: dict[Stream, asyncio.Task[None]] = {}

    def accept(self, stream: Stream, headers: Any, release_stream: Callable[[], Any]) -> None:
        problem = timeout_problem(headers)
        if problem is None:
            self._inner.accept(stream, headers, release_stream)
            return
        status, message = problem
        log_event(log, "grpc_timeout_refused", status=status.name, detail=message)
        task = asyncio.get_running_loop().create_task(
            _answer(stream, status, message, release_stream), name="grpc-timeout-refusal"
        )
        self._refusing[stream] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._refusing.pop(stream, None))

    def cancel(self, stream: Stream) -> None:
        task = self._refusing.pop(stream, None)
        if task is None:
            self._inner.cancel(stream)
        else:
            task.cancel()

    def close(self) -> None:
        for task in self._refusing.values():
            task.cancel()
        self._inner.close()


async def _answer(
    stream: Stream, status: Status, message: str, release_stream: Callable[[], Any]
) -> None:
    """A trailers-only response (what grpclib sends for its own early refusals)."""
    headers = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", str(status.value)),
        ("grpc-message", encode_grpc_message(message)),
    ]
    try:
        with contextlib.suppress(H2Error, ConnectionError):  # the client is gone
            await stream.send_headers(headers, end_stream=True)
            if stream.closable:
                stream.reset_nowait()  # whatever the client still sends is not read
    finally:
        release_stream()


class TimeoutCheckingServer(ConnectionHookServer):
    """`grpclib.server.Server` whose connections check ``grpc-timeout`` first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timeout_refusals: set[asyncio.Task[None]] = set()

    def wrap_handler(self, handler: AbstractHandler) -> AbstractHandler:
        return _TimeoutGate(handler, self._timeout_refusals)

    async def wait_closed(self) -> None:
        await super().wait_closed()
        if self._timeout_refusals:
            await asyncio.gather(*self._timeout_refusals, return_exceptions=True)


__all__ = ["MIN_TIMEOUT_S", "TimeoutCheckingServer", "timeout_problem"]
