"""A gateway stream's settings, its clock, its heartbeat and silence policy, and its sender.

`SilencePolicy` decides, from an injected monotonic clock, when the headend sends a
Heartbeat and when it closes a gateway it has not heard from; `send_loop` only waits and
acts on what it returns (and sends the session's outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, NoReturn, cast

from grpclib.exceptions import StreamTerminatedError

from vpp_protocol.upb import pb

from . import convert
from .clock import Clock, utc_now
from .domain import CloseReasonName
from .limits import Limits
from .sessions import CLOSE, TICK, Session
from .settings import Settings

#: A gateway heard from in none of this many heartbeat intervals is closed as silent.
SILENCE_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class StreamClock:
    """A stream's time: ``now`` for timestamps, ``monotonic`` for intervals and silence."""

    now: Clock = utc_now
    monotonic: Callable[[], float] = time.monotonic


#: The real clocks.
SYSTEM_CLOCK: Final = StreamClock()


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSettings:
    """What the gRPC edge needs of `Settings`, validated."""

    heartbeat_interval_s: float
    register_timeout_s: float  # time a new stream gets to send Register
    close_grace_s: float = 1.0  # after SessionClosed, time the gateway gets to end its side
    admit_concurrency: int = 8  # Registers admitted at once (each a few DB round trips)
    limits: Limits = field(default_factory=Limits)
    require_peer_certificate: bool = False  # mutual TLS: a site's certificate opens its stream

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval_s", "register_timeout_s", "admit_concurrency"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)!r}")
        if not self.close_grace_s >= 0:
            raise ValueError(f"close_grace_s must be >= 0, not {self.close_grace_s!r}")

    @classmethod
    def from_settings(cls, s: Settings) -> StreamSettings:
        """The stream settings of a headend's `Settings`."""
        return cls(
            heartbeat_interval_s=s.heartbeat_interval_s,
            register_timeout_s=s.register_timeout_s,
            close_grace_s=s.close_grace_s,
            admit_concurrency=s.admit_concurrency,
            limits=Limits(
                max_message_bytes=s.max_message_bytes,
                max_assets_per_register=s.max_assets_per_register,
                max_readings_per_message=s.max_readings_per_message,
            ),
            require_peer_certificate=s.tls,
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Send Heartbeat number ``seq`` now."""

    seq: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close the session as silent (``heartbeat_timeout``)."""

    detail: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing is due before ``until`` (monotonic seconds)."""

    until: float


Tick = Heartbeat | Close | Wait


class SilencePolicy:
    """When a stream's next Heartbeat is due and when its gateway counts as silent.

    With interval ``i`` and start ``t0``, heartbeat ``n`` is due at ``t0 + n·i``; a late
    tick sends one heartbeat and skips those it missed (the next is due at the first
    ``t0 + k·i`` after it). The gateway is silent at ``max(heard, held) + 3·i``, where
    ``heard`` is its last message and ``held`` the last tick that found the stream held
    by backpressure: its frames then wait in the headend's buffers, which is not the
    gateway's silence (a dead connection is still caught by HTTP/2 keepalive). Close
    is returned once; every answer after it is a Heartbeat or a Wait.
    """

    __slots__ = ("_closing", "_heard", "_interval", "_next_beat", "_persisted", "_seq")

    def __init__(self, interval_s: float, start: float) -> None:
        self._interval = interval_s
        self._next_beat = start + interval_s
        self._heard = start
        self._persisted = start
        self._seq = 0
        self._closing = False

    @property
    def silent_at(self) -> float:
        """When the gateway counts as silent unless it is heard from before."""
        return self._heard + SILENCE_INTERVALS * self._interval

    def heard(self, now: float) -> None:
        """The gateway sent something."""
        self._heard = now

    def persist_due(self, now: float) -> bool:
        """Whether a gateway Heartbeat received ``now`` should be written as last_seen
        (at most once per interval; `GatewayService.seen` batches the writes)."""
        if now - self._persisted < self._interval:
            return False
        self._persisted = now
        return True

    def on_tick(self, now: float, *, held: bool) -> Tick:
        """What is due at ``now``; ``held``: the stream waits for room in ingest."""
        interval = self._interval
        silent_at = self.silent_at
        if now >= silent_at and held:
            self._heard = now  # time held by backpressure is not silence
            silent_at = self.silent_at
        if now >= silent_at and not self._closing:
            self._closing = True
            span = SILENCE_INTERVALS * interval
            return Close(f"nothing heard for {span:g} s ({SILENCE_INTERVALS} intervals)")
        if now >= self._next_beat:
            self._seq += 1
            self._next_beat += interval * (1 + int((now - self._next_beat) // interval))
            return Heartbeat(self._seq)
        return Wait(min(self._next_beat, silent_at))


class CloseSent(Exception):
    """The sender sent the SessionClosed of a close the headend asked for."""

    def __init__(self, reason: CloseReasonName, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


async def send_loop(
    send: Callable[[pb.HeadendMessage], Awaitable[None]],
    session: Session,
    policy: SilencePolicy,
    clock: StreamClock,
) -> NoReturn:
    """Setpoints from the outbox, heartbeats on time, and the close (`CloseSent`).

    The sender sleeps on the outbox only; a timer puts a TICK there when `policy` next
    has something due. (A timeout around the wait raised and swallowed a TimeoutError
    per session per interval: thousands of tracebacks a second at fleet scale, all
    cyclic garbage for the collector.) Deadlines only move later, so the one pending
    timer is never late.
    """
    monotonic = clock.monotonic
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None
    try:
        while True:
            now = monotonic()
            due = policy.on_tick(now, held=session.backpressured)
            if isinstance(due, Close):
                session.close("heartbeat_timeout", due.detail)
                continue
            if isinstance(due, Heartbeat):
                await send(convert.heartbeat_message(due.seq, clock.now()))
                continue
            if timer is None:
                timer = loop.call_later(due.until - now, session.outbox.put_nowait, TICK)
            item = await session.outbox.get()
            if item is TICK:
                timer = None
                continue
            if item is CLOSE:
                reason = cast(CloseReasonName, session.close_reason)
                with contextlib.suppress(StreamTerminatedError, ConnectionError):
                    await send(convert.session_closed(reason, session.close_detail))
                raise CloseSent(reason, session.close_detail)
            await send(cast(pb.HeadendMessage, item))
            # Yield between sends: grpclib does not while the window has room.
            await asyncio.sleep(0)
    finally:
        if timer is not None:
            timer.cancel()


__all__ = [
    "SILENCE_INTERVALS",
    "SYSTEM_CLOCK",
    "Close",
    "CloseSent",
    "Heartbeat",
    "SilencePolicy",
    "StreamClock",
    "StreamSettings",
    "Tick",
    "Wait",
    "send_loop",
]
