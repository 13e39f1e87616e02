"""The gRPC AgentService: one long-lived bidirectional stream per gateway (transport only).

After Register and its RegisterResult, a stream runs two tasks: a receiver (telemetry,
acks and heartbeats) and a sender (`stream_session.send_loop`: setpoints from the
session's outbox, the heartbeats `SilencePolicy` asks for). Whichever ends first ends the
stream; the other is cancelled. A close requested by the headend (superseded, shutdown,
heartbeat timeout, protocol error) is a SessionClosed message, then the end of the
stream with a gRPC status. Nothing a gateway sends can crash the server or another
session. What a message means is decided elsewhere: `intake` (telemetry), `ack_intake`,
`stream_session`; `framing` reads the frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, NoReturn

import grpclib.const
from google.protobuf.message import (  # type: ignore[import-untyped,unused-ignore]
    DecodeError as PbDecodeError,
)
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from vpp_protocol.upb import pb

from . import convert
from .ack_intake import AckIntake
from .db.engine import DB_UNAVAILABLE
from .dispatch import DispatchService
from .domain import CloseReasonName, RegisterRequest
from .errors import FrameTooLargeError, ProtocolViolationError
from .framing import peer_ssl_object, read_frame, remote_address
from .gateways import GatewayService
from .ingest import Ingest
from .intake import DropLog, Intake, TelemetryIntake
from .logs import log_event
from .metrics import Metrics
from .sessions import Session
from .stream_session import (
    SYSTEM_CLOCK,
    CloseSent,
    SilencePolicy,
    StreamClock,
    StreamSettings,
    send_loop,
)
from .tls import PeerIdentity, peer_identity

log = logging.getLogger(__name__)

CONNECT_PATH = "/vpp.agent.v1.AgentService/Connect"

_CLOSE_STATUS: dict[str, Status] = {
    "superseded": Status.ABORTED,
    "server_shutdown": Status.UNAVAILABLE,
    "heartbeat_timeout": Status.DEADLINE_EXCEEDED,
    "unauthorized": Status.PERMISSION_DENIED,
    "protocol_error": Status.INVALID_ARGUMENT,
}

AgentStream = Stream[Any, pb.HeadendMessage]  # both directions are upb messages


class AgentService:
    """grpclib servicer of ``vpp.agent.v1.AgentService``.

    Incoming frames are read by `framing.read_frame` (size limit first) and decoded as
    upb messages (fast telemetry path); replies are upb messages built by `convert`.
    """

    def __init__(
        self,
        gateways: GatewayService,
        dispatch: DispatchService,
        ingest: Ingest,
        metrics: Metrics,
        settings: StreamSettings,
        *,
        clock: StreamClock = SYSTEM_CLOCK,
    ) -> None:
        self._gateways = gateways
        self._dispatch = dispatch
        self._ingest = ingest
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        # A reconnect storm (thousands of gateways after a network blip) must queue here,
        # not in the database pool, where a checkout wait past its timeout fails the
        # stream and the gateway comes back again: admission is a few DB round trips.
        self._admit_slots = asyncio.Semaphore(settings.admit_concurrency)
        self._telemetry = TelemetryIntake(ingest.accept, settings.limits.max_readings_per_message)
        self._drops = DropLog(metrics)
        self._acks = AckIntake(dispatch.acks.handle, metrics)
        self._streams: set[asyncio.Task[Any]] = set()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            CONNECT_PATH: grpclib.const.Handler(
                self.connect,
                grpclib.const.Cardinality.STREAM_STREAM,
                pb.AgentMessage,
                pb.HeadendMessage,
            )
        }

    @property
    def open_streams(self) -> int:
        """Stream handlers still running."""
        return len(self._streams)

    async def wait_streams_closed(self, grace_s: float) -> bool:
        """Wait until every stream handler returned; False on timeout."""
        pending = set(self._streams)
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=grace_s)
        return not still

    # -- the handler ---------------------------------------------------------------------

    async def connect(self, stream: AgentStream) -> None:
        """Handle one gateway stream from Register to the end."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            remote = remote_address(stream)
            request = await self._opening(stream, remote)
            if request is not None:
                await self._serve(stream, await self._admit(stream, request, remote))
        except StreamTerminatedError:
            pass  # the peer went away; nothing to answer
        finally:
            self._streams.discard(task)

    async def _opening(self, stream: AgentStream, remote: str) -> RegisterRequest | None:
        """The stream's Register, once its peer may open a session; None when the peer
        left first. Anything else is refused (`_refuse`)."""
        peer = peer_identity(peer_ssl_object(stream))
        if self._settings.require_peer_certificate:
            refusal = await _peer_refusal(peer, self._gateways)
            if refusal is not None:
                await self._refuse(stream, "unauthorized", refusal, remote, None)
        try:
            request = await self._first_register(stream)
        except ProtocolViolationError as exc:
            await self._refuse(stream, "protocol_error", exc.detail, remote, None)
        if request is None:
            return None
        if peer is not None and peer.site_id != request.site_id:
            await self._refuse(
                stream,
                "unauthorized",
                f"Register.site_id {request.site_id!r} does not match the site "
                f"{peer.site_id!r} of the client certificate",
                remote,
                request.site_id,
            )
        if self._gateways.sessions.shutting_down:
            await self._refuse(stream, "server_shutdown", "headend is shutting down", remote, None)
        return request

    async def _admit(self, stream: AgentStream, request: RegisterRequest, remote: str) -> Session:
        """Admit the Register and answer it; the session, or a refusal."""
        try:
            async with self._admit_slots:
                admission = await self._gateways.admit(request, remote)
        except DB_UNAVAILABLE as exc:
            # Nothing was admitted; the gateway backs off and retries (UNAVAILABLE is
            # gRPC's "try again"), instead of an INTERNAL error with a traceback.
            log_event(
                log,
                "register_unavailable",
                level=logging.WARNING,
                site_id=request.site_id,
                remote=remote,
                error=exc,
            )
            raise GRPCError(
                Status.UNAVAILABLE, "database unavailable or busy; retry with backoff"
            ) from None
        await stream.send_message(convert.register_result(admission.reply))
        session = admission.session
        if session is None:
            await self._refuse(
                stream,
                "unauthorized",
                f"site {request.site_id!r} is not registered: on the headend, "
                "vpp-headend assets import <its site file>",
                remote,
                request.site_id,
            )
        log_event(
            log,
            "connect",
            site_id=session.site_id,
            session_id=session.session_id,
            epoch=session.epoch,
            remote=remote,
            assets=len(session.assets),
            rejected=len(admission.outcome.rejected),
            legacy=request.legacy,
            agent_version=request.agent_version or None,
        )
        return session

    async def _serve(self, stream: AgentStream, session: Session) -> None:
        """Run an admitted session's sender and receiver until the stream ends."""
        policy = SilencePolicy(self._settings.heartbeat_interval_s, self._clock.monotonic())
        grace = self._settings.close_grace_s
        reason = "connection_lost"
        sender = asyncio.create_task(
            send_loop(stream.send_message, session, policy, self._clock), name="session-send"
        )
        receiver = asyncio.create_task(
            self._recv_loop(stream, session, policy), name="session-recv"
        )
        try:
            async with self._admit_slots:
                await self._dispatch.deliver_pending(session)
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                failure = receiver.exception()
                if failure is None:
                    reason = "client_closed"
                    return
                if not isinstance(failure, ProtocolViolationError):
                    _log_failure(session, failure)
                    return
                reason = "protocol_error"
                self._metrics.protocol_errors.inc()
                log_event(
                    log,
                    "protocol_error",
                    level=logging.WARNING,
                    site_id=session.site_id,
                    session_id=session.session_id,
                    detail=failure.detail,
                )
                session.close("protocol_error", failure.detail)
                await asyncio.wait({sender}, timeout=grace)
                if not isinstance(failure, FrameTooLargeError):
                    await self._drain(stream)
                raise GRPCError(_CLOSE_STATUS["protocol_error"], failure.detail)
            failure = sender.exception()
            if isinstance(failure, CloseSent):
                reason = failure.reason
                # Let the gateway read SessionClosed: grpclib resets a stream the client
                # has not half-closed when the status is not OK, and a reset discards
                # what the client has not read yet. A gateway ends its side on SessionClosed.
                await asyncio.wait({receiver}, timeout=grace)
                raise GRPCError(_CLOSE_STATUS[failure.reason], failure.detail)
            if failure is not None:
                _log_failure(session, failure)
        finally:
            for t in (sender, receiver):
                t.cancel()
            try:
                await asyncio.gather(sender, receiver, return_exceptions=True)
            finally:
                # grpclib may cancel this handler again while it waits here (connection
                # lost, then stream reset): the session must be unrouted all the same, or
                # it stays "connected" for good and dispatches go to a dead stream.
                self._gateways.closed(session, reason)

    async def _recv(self, stream: AgentStream) -> Any:
        """The next AgentMessage (upb), or None at the end of the stream."""
        body = await read_frame(stream, self._settings.limits.max_message_bytes)
        if body is None:
            return None
        try:
            return pb.AgentMessage.FromString(body)
        except PbDecodeError as exc:
            raise ProtocolViolationError(f"malformed AgentMessage: {exc}") from None

    async def _drain(self, stream: AgentStream) -> None:
        """Read and discard until the gateway ends its side (bounded by the close grace)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._settings.close_grace_s):
                while await self._recv(stream) is not None:
                    pass

    async def _first_register(self, stream: AgentStream) -> RegisterRequest | None:
        """The Register that must open a stream; None when the peer left first."""
        timeout = self._settings.register_timeout_s
        try:
            async with asyncio.timeout(timeout):
                frame = await self._recv(stream)
        except TimeoutError:
            raise ProtocolViolationError(f"no Register within {timeout:g} s") from None
        if frame is None:
            return None
        kind = convert.body_kind(frame)
        if kind != "register":
            raise ProtocolViolationError(f"the first message must be Register, not {kind}")
        return convert.register_from_pb(
            frame.register, self._settings.limits.max_assets_per_register
        )

    async def _refuse(
        self,
        stream: AgentStream,
        reason: CloseReasonName,
        detail: str,
        remote: str,
        site_id: str | None,
    ) -> NoReturn:
        """SessionClosed + a gRPC status for a stream that never got a session."""
        if reason == "protocol_error":
            self._metrics.protocol_errors.inc()
        log_event(
            log,
            "refused",
            level=logging.WARNING,
            reason=reason,
            detail=detail,
            remote=remote,
            site_id=site_id,
        )
        with contextlib.suppress(StreamTerminatedError, ConnectionError):
            await stream.send_message(convert.session_closed(reason, detail))
        await self._drain(stream)
        raise GRPCError(_CLOSE_STATUS[reason], detail)

    # -- receiver ------------------------------------------------------------------------

    async def _recv_loop(
        self, stream: AgentStream, session: Session, policy: SilencePolicy
    ) -> None:
        """Everything the gateway sends after Register; returns when it ends the stream."""
        clock, telemetry = self._clock, self._telemetry
        while True:
            frame = await self._recv(stream)
            if frame is None:
                return
            now = clock.now()
            session.touch(now)
            policy.heard(clock.monotonic())
            kind = convert.body_kind(frame)
            if kind == "telemetry_batch":
                await self._store(session, telemetry.batch(session, frame.telemetry_batch, now))
            elif kind == "telemetry":
                await self._store(session, telemetry.readings(session, (frame.telemetry,), now))
            elif kind == "setpoint_ack":
                await self._acks.take(session, frame.setpoint_ack)
            elif kind == "heartbeat":
                if policy.persist_due(clock.monotonic()):
                    self._gateways.seen(session)
            elif kind == "register":
                raise ProtocolViolationError("Register sent twice on one stream")
            else:
                raise ProtocolViolationError("empty AgentMessage (no body)")

    async def _store(self, session: Session, intake: Intake) -> None:
        """Count a frame's drops and readings, then queue its rows for the writer."""
        if intake.drops:
            self._drops.record(session, intake.drops)
        self._metrics.telemetry_received.inc(intake.received)
        session.backpressured = True
        try:
            await self._ingest.put(intake.rows)  # waits while the queue is full: backpressure
        finally:
            session.backpressured = False


async def _peer_refusal(peer: PeerIdentity | None, gateways: GatewayService) -> str | None:
    """Why a TLS peer may not open a session (no site in its certificate, revoked)."""
    if peer is None:
        return "no client certificate"
    if peer.site_id is None:
        return f"the client certificate ({peer.subject}) names no valid site id"
    if await gateways.certificate_revoked(peer.fingerprint):
        return f"the client certificate {peer.fingerprint} is revoked"
    return None


def _log_failure(session: Session, failure: BaseException) -> None:
    if not isinstance(failure, StreamTerminatedError | ConnectionError):
        log_event(
            log, "stream_failed", level=logging.ERROR, exc_info=failure, site_id=session.site_id
        )


__all__ = ["CONNECT_PATH", "AgentService", "StreamClock", "StreamSettings"]
