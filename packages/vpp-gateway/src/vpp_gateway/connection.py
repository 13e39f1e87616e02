"""The one outbound stream to the headend: register, send/receive tasks, heartbeats, reconnect.

Send and receive run as separate tasks, and the sender yields after every message: a
tight grpclib send loop starves the receive side otherwise (docs/stack_notes.md, grpclib).
Everything the stream sends goes through the sender task, acks first, then heartbeats, then
telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpclib.const
from grpclib.client import Channel, Stream
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

import vpp_protocol as pb
from vpp_protocol.keepalive import keepalive_config

from . import convert
from .backoff import Backoff
from .clock import Clock
from .log import EventLog
from .model import (
    Ack,
    CloseNotice,
    HeartbeatIn,
    Reading,
    RegisterOutcome,
    ReleaseCommand,
    SetpointCommand,
)
from .settings import GatewaySettings
from .telemetry import SpoolReplayer

CONNECT_PATH = "/vpp.agent.v1.AgentService/Connect"
#: Acks kept for the next session while disconnected (the oldest go first when full).
MAX_PENDING_ACKS = 10_000
#: Telemetry messages queued on a slow stream before the oldest are left to the spool.
MAX_QUEUED_TELEMETRY = 256

AgentStream = Stream[pb.AgentMessage, pb.HeadendMessage]


class SessionEnded(Exception):
    """A session ended for a known reason (the message), e.g. heartbeat timeout, superseded."""


def describe(exc: BaseException, where: str) -> str:
    """A short plain-words reason for a failed connect or a lost session."""
    if isinstance(exc, SessionEnded):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return f"refused: nothing listening at {where}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS failure: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure: {exc.reason or exc}"
    if isinstance(exc, GRPCError):
        status = exc.status
        if status in (grpclib.const.Status.UNAUTHENTICATED, grpclib.const.Status.PERMISSION_DENIED):
            return f"unauthorized: {exc.message or status.name}"
        if status is grpclib.const.Status.UNIMPLEMENTED:
            return f"{where} does not serve {pb.SERVICE_NAME}"
        return f"headend error {status.name}: {exc.message or ''}".rstrip(": ")
    if isinstance(exc, StreamTerminatedError):
        return f"connection lost ({exc}; keepalive timeout or peer gone)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc}"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _first_cause(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = inner[0] if inner else exc.exceptions[0]
    return exc


async def _end_request_stream(stream: AgentStream) -> None:
    """Half-close our side after SessionClosed, as the headend asks.

    The headend waits briefly for it before ending the call; without it grpclib resets the
    stream and messages not read yet are lost. The sender task may be mid-message: a
    failure here only means the stream is already gone.
    """
    with contextlib.suppress(StreamTerminatedError, ProtocolError, ConnectionError, GRPCError):
        await stream.end()


@dataclass(frozen=True, slots=True)
class SessionHooks:
    """What a session hands to the rest of the gateway."""

    #: Called with the headend's answer to Register, before the session counts as connected.
    on_register: Callable[[RegisterOutcome], Awaitable[None]]
    #: Setpoints and releases, in the order they arrived.
    on_setpoint: Callable[[SetpointCommand | ReleaseCommand], None]
    #: Replays the spool during every session (None: no replay).
    replayer: SpoolReplayer | None = None


class Connection:
    """Keeps one session with the headend alive; owns the stream and its tasks."""

    def __init__(
        self,
        settings: GatewaySettings,
        clock: Clock,
        hooks: SessionHooks,
        *,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
        log: EventLog | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_register = hooks.on_register
        self._on_setpoint = hooks.on_setpoint
        self._replayer = hooks.replayer
        self._ssl = ssl_context
        self._log = log or EventLog()
        self.backoff = Backoff(
            settings.backoff_base_s, settings.backoff_cap_s, rng or random.Random()
        )
        self.where = f"{settings.headend_host}:{settings.headend_port}"
        self._acks: deque[pb.AgentMessage] = deque(maxlen=MAX_PENDING_ACKS)
        self._control: deque[pb.AgentMessage] = deque()
        self._bulk: deque[tuple[pb.AgentMessage, asyncio.Future[None] | None]] = deque()
        self._wake = asyncio.Event()
        self._last_rx = 0.0
        #: Monotonic time of the last message heard on a registered session (None: never),
        #: and how many were heard in all: what the fail-safe counts silence from.
        self.heard_at: float | None = None
        self.heard_count = 0
        self.state = "idle"
        self.state_since: datetime = clock.now()
        self.last_reason = ""
        self.session_id = ""
        self.epoch = 0
        self.heartbeat_s = settings.heartbeat_s
        self.connects = 0
        self.failures = 0
        self.sent_readings = 0
        self.last_delays: deque[float] = deque(maxlen=16)

    # -- what the rest of the gateway calls ----------------------------------------
    @property
    def is_live(self) -> bool:
        return self.state == "connected"

    def send_telemetry(self, readings: Sequence[Reading]) -> None:
        if not self.is_live or not readings:
            return
        for msg in convert.telemetry_messages(readings, legacy=self._settings.legacy):
            if len(self._bulk) >= MAX_QUEUED_TELEMETRY:
                self._bulk.popleft()  # still in the spool (sent-recently): replayed if lost
            self._bulk.append((msg, None))
        self._wake.set()

    def send_ack(self, ack: Ack) -> None:
        self._acks.append(convert.ack_message(ack))
        self._wake.set()

    async def send_replay(self, readings: Sequence[Reading]) -> None:
        """Queue spooled readings and wait until they are on the wire."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        msgs = convert.telemetry_messages(readings, legacy=self._settings.legacy)
        for i, msg in enumerate(msgs):
            self._bulk.append((msg, fut if i == len(msgs) - 1 else None))
        self._wake.set()
        await fut

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_since = self._clock.now()

    # -- reconnect loop ----------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve the session, back off, again; until cancelled."""
        try:
            while True:
                started = self._clock.monotonic()
                reason = await self._attempt()
                lasted = self._clock.monotonic() - started
                if lasted >= self._settings.stable_after_s:
                    self.backoff.reset()
                delay = self.backoff.next_delay()
                self.last_delays.append(delay)
                self.last_reason = reason
                self._set_state("backoff")
                self._log.info(
                    "reconnect_wait",
                    delay_s=delay,
                    attempt=self.backoff.attempt,
                    ceiling_s=self.backoff.ceiling(),
                )
                await asyncio.sleep(delay)
        finally:
            self._set_state("stopped")

    async def _attempt(self) -> str:
        """One connect + session; returns why it ended."""
        self._set_state("connecting")
        registered = False
        channel = Channel(
            self._settings.headend_host,
            self._settings.headend_port,
            ssl=self._ssl,
            config=self._config(),
        )
        try:
            async with channel.request(
                CONNECT_PATH,
                grpclib.const.Cardinality.STREAM_STREAM,
                pb.AgentMessage,
                pb.HeadendMessage,
            ) as stream:
                outcome = await self._register(stream)
                registered = True
                await self._serve(stream, outcome)
            raise SessionEnded("headend ended the stream")
        except asyncio.CancelledError:
            if registered:
                self._log.info("disconnected", headend=self.where, reason="gateway stopping")
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            cause = _first_cause(exc)
            if isinstance(cause, asyncio.CancelledError):
                raise cause from exc
            reason = describe(cause, self.where)
            if registered:
                self._log.warning(
                    "disconnected", headend=self.where, reason=reason, session_id=self.session_id
                )
            else:
                self.failures += 1
                self._log.warning("connect_failed", headend=self.where, reason=reason)
            return reason
        finally:
            self._control.clear()
            for _, fut in self._bulk:
                if fut is not None and not fut.done():
                    fut.cancel()
            self._bulk.clear()
            channel.close()

    def _config(self) -> Configuration:
        s = self._settings
        return keepalive_config(
            s.keepalive_time_s,
            s.keepalive_timeout_s,
            ssl_target_name_override=s.tls.server_name if s.tls else None,
        )

    async def _register(self, stream: AgentStream) -> RegisterOutcome:
        self._set_state("registering")
        timeout = self._settings.register_timeout_s
        try:
            async with asyncio.timeout(timeout):
                event = await self._await_register_result(stream)
        except TimeoutError:
            raise SessionEnded(f"no RegisterResult within {timeout:g} s") from None
        self._heard()
        self.session_id, self.epoch = event.session_id, event.epoch
        self.heartbeat_s = event.heartbeat_interval_s or self._settings.heartbeat_s
        await self._on_register(event)
        self.connects += 1
        self._set_state("connected")
        self.last_reason = ""
        self._log.info(
            "connected",
            headend=self.where,
            session_id=event.session_id,
            epoch=event.epoch,
            accepted=len(event.accepted),
            rejected=len(event.rejected),
            heartbeat_s=self.heartbeat_s,
        )
        return event

    async def _await_register_result(self, stream: AgentStream) -> RegisterOutcome:
        await stream.send_request()
        await stream.send_message(convert.register_message(self._settings))
        while True:
            msg = await stream.recv_message()
            if msg is None:
                raise SessionEnded("headend ended the stream before answering Register")
            event = convert.headend_event(msg)
            if isinstance(event, RegisterOutcome):
                return event
            if isinstance(event, CloseNotice):
                await _end_request_stream(stream)
                raise SessionEnded(f"{event.reason}: {event.detail}".rstrip(": "))

    async def _serve(self, stream: AgentStream, outcome: RegisterOutcome) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sender(stream), name="vpp-send")
            tg.create_task(self._receiver(stream), name="vpp-recv")
            tg.create_task(self._heartbeats(), name="vpp-heartbeat")
            if self._replayer is not None:
                tg.create_task(self._replayer.run(self.send_replay), name="vpp-replay")

    async def _sender(self, stream: AgentStream) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._acks or self._control or self._bulk:
                if self._acks:
                    await stream.send_message(self._acks[0])
                    self._acks.popleft()  # only once it is out: a lost ack is sent again
                elif self._control:
                    await stream.send_message(self._control.popleft())
                else:
                    msg, fut = self._bulk.popleft()
                    await stream.send_message(msg)
                    if msg.telemetry_batch is not None:
                        self.sent_readings += len(msg.telemetry_batch.readings)
                    else:
                        self.sent_readings += 1
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                await asyncio.sleep(0)  # let the receive task run (docs/stack_notes.md)

    async def _receiver(self, stream: AgentStream) -> None:
        while True:
            msg = await stream.recv_message()
            if msg is None:
                raise SessionEnded("headend ended the stream")
            self._heard()
            event = convert.headend_event(msg)
            if isinstance(event, SetpointCommand | ReleaseCommand):
                self._on_setpoint(event)  # one ordered queue: a Release after its Setpoint
            elif isinstance(event, CloseNotice):
                await _end_request_stream(stream)
                raise SessionEnded(f"{event.reason}: {event.detail}".rstrip(": "))
            elif isinstance(event, HeartbeatIn | RegisterOutcome) or event is None:
                pass

    def _heard(self) -> None:
        self._last_rx = self.heard_at = self._clock.monotonic()
        self.heard_count += 1

    async def _heartbeats(self) -> None:
        seq = 0
        interval = self.heartbeat_s
        while True:
            seq += 1
            self._control.append(convert.heartbeat_message(seq, self._clock.now()))
            self._wake.set()
            await asyncio.sleep(interval)
            silent = self._clock.monotonic() - self._last_rx
            if silent > 3 * interval:
                raise SessionEnded(
                    f"heartbeat timeout: nothing heard from the headend for "
                    f"{silent:.1f} s (3 × {interval:g} s)"
                )
