"""The gRPC AgentService: one long-lived bidirectional stream per gateway.

A stream runs two tasks: a receiver (Register first, then telemetry, acks and
heartbeats) and a sender (RegisterResult, then setpoints from the session's outbox and
a Heartbeat every interval). Whichever ends first ends the stream; the other is
cancelled. A close requested by the headend (superseded, shutdown, heartbeat timeout,
protocol error) is a SessionClosed message, then the end of the stream with a gRPC
status. Nothing a gateway sends can crash the server or another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast

import grpclib.const
from google.protobuf.message import (  # type: ignore[import-untyped,unused-ignore]
    DecodeError as PbDecodeError,
)
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from vpp_protocol.upb import pb

from . import convert
from .db.engine import DB_UNAVAILABLE
from .dispatch import DispatchService
from .domain import CloseReasonName
from .errors import FrameTooLargeError, HeadendError, ProtocolViolationError
from .gateways import GatewayService
from .ingest import Ingest
from .limits import Limits
from .logs import log_event
from .metrics import Metrics
from .sessions import CLOSE, TICK, Session
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


class _Closed(Exception):
    """The sender finished a headend-initiated close."""

    def __init__(self, reason: CloseReasonName, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class AgentService:
    """grpclib servicer of ``vpp.agent.v1.AgentService``.

    Incoming frames are decoded as upb messages (fast telemetry path); replies are the
    public betterproto2 dataclasses.
    """

    def __init__(
        self,
        gateways: GatewayService,
        dispatch: DispatchService,
        ingest: Ingest,
        metrics: Metrics,
        *,
        heartbeat_interval_s: float,
        register_timeout_s: float,
        close_grace_s: float = 1.0,
        limits: Limits | None = None,
        require_peer_certificate: bool = False,
        admit_concurrency: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._gateways = gateways
        self._dispatch = dispatch
        self._ingest = ingest
        self._metrics = metrics
        self._hb = heartbeat_interval_s
        self._register_timeout = register_timeout_s
        # A reconnect storm (thousands of gateways after a network blip) must queue here,
        # not in the database pool, where a checkout wait past its timeout fails the
        # stream and the gateway comes back again: admission is a few DB round trips.
        self._admit_slots = asyncio.Semaphore(admit_concurrency)
        self._close_grace = close_grace_s
        self._clock = clock
        self._limits = limits or Limits()
        self._require_cert = require_peer_certificate
        self._streams: set[asyncio.Task[Any]] = set()
        # Reasons already logged per session (`_drop`); gone with the session.
        self._drops_logged: weakref.WeakKeyDictionary[Session, set[str]] = (
            weakref.WeakKeyDictionary()
        )

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
            await self._connect(stream)
        except StreamTerminatedError:
            pass  # the peer went away; nothing to answer
        finally:
            self._streams.discard(task)

    async def _connect(self, stream: AgentStream) -> None:
        remote = _remote(stream)
        peer = _peer(stream)
        if self._require_cert:
            refusal = await self._check_peer(peer)
            if refusal is not None:
                await self._refuse(stream, "unauthorized", refusal, remote, None)
                return
        try:
            request = await self._first_register(stream)
        except ProtocolViolationError as exc:
            await self._refuse(stream, "protocol_error", exc.detail, remote, None)
            return
        if request is None:
            return
        if peer is not None and peer.site_id != request.site_id:
            await self._refuse(
                stream,
                "unauthorized",
                f"Register.site_id {request.site_id!r} does not match the site "
                f"{peer.site_id!r} of the client certificate",
                remote,
                request.site_id,
            )
            return
        if self._gateways.sessions.shutting_down:
            await self._refuse(stream, "server_shutdown", "headend is shutting down", remote, None)
            return
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
                f"site {request.site_id!r} is not registered",
                remote,
                request.site_id,
            )
            return
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
        reason = "connection_lost"
        sender = asyncio.create_task(self._send_loop(stream, session), name="session-send")
        receiver = asyncio.create_task(self._recv_loop(stream, session), name="session-recv")
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
                    self._log_failure(session, failure)
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
                await asyncio.wait({sender}, timeout=self._close_grace)
                if not isinstance(failure, FrameTooLargeError):
                    await self._drain(stream)
                raise GRPCError(_CLOSE_STATUS["protocol_error"], failure.detail)
            failure = sender.exception()
            if isinstance(failure, _Closed):
                reason = failure.reason
                # Let the gateway read SessionClosed: grpclib resets a stream the client
                # has not half-closed when the status is not OK, and a reset discards
                # what the client has not read yet. A gateway ends its side on SessionClosed.
                await asyncio.wait({receiver}, timeout=self._close_grace)
                raise GRPCError(_CLOSE_STATUS[failure.reason], failure.detail)
            if failure is not None:
                self._log_failure(session, failure)
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

    async def _check_peer(self, peer: PeerIdentity | None) -> str | None:
        """Why a TLS peer may not open a session (no site in its certificate, revoked)."""
        if peer is None:
            return "no client certificate"
        if peer.site_id is None:
            return f"the client certificate ({peer.subject}) names no valid site id"
        if await self._gateways.certificate_revoked(peer.fingerprint):
            return f"the client certificate {peer.fingerprint} is revoked"
        return None

    async def _recv(self, stream: AgentStream) -> Any:
        """The next AgentMessage (upb), or None at the end of the stream.

        grpclib buffers a whole message of whatever length the 5-byte prefix announces
        before decoding it, with no limit; this reads the prefix itself and refuses a
        message longer than ``max_message_bytes`` before reading its body.
        """
        raw = stream._stream  # grpclib's HTTP/2 stream: the only way to see the prefix
        try:
            meta = await raw.recv_data(5)
            if not meta:
                return None
            compressed, length = meta[0], int.from_bytes(meta[1:5], "big")
            if compressed:
                raise ProtocolViolationError("compressed messages are not supported")
            if length > self._limits.max_message_bytes:
                raise FrameTooLargeError(
                    f"message of {length} bytes exceeds the limit of "
                    f"{self._limits.max_message_bytes} bytes"
                )
            body = await raw.recv_data(length)
        except AssertionError:  # grpclib: the stream ended inside a message
            raise ProtocolViolationError("truncated message (stream ended inside it)") from None
        try:
            return pb.AgentMessage.FromString(body)
        except PbDecodeError as exc:
            raise ProtocolViolationError(f"malformed AgentMessage: {exc}") from None

    def _log_failure(self, session: Session, failure: BaseException) -> None:
        if not isinstance(failure, StreamTerminatedError | ConnectionError):
            log.error("stream of site %s failed", session.site_id, exc_info=failure)

    async def _drain(self, stream: AgentStream) -> None:
        """Read and discard until the gateway ends its side (bounded by the close grace)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._close_grace):
                while await self._recv(stream) is not None:
                    pass

    async def _first_register(self, stream: AgentStream) -> Any:
        """The Register that must open a stream; None when the peer left first."""
        try:
            async with asyncio.timeout(self._register_timeout):
                frame = await self._recv(stream)
        except TimeoutError:
            raise ProtocolViolationError(
                f"no Register within {self._register_timeout:g} s"
            ) from None
        if frame is None:
            return None
        kind = convert.body_kind(frame)
        if kind != "register":
            raise ProtocolViolationError(f"the first message must be Register, not {kind}")
        return convert.register_from_pb(frame.register, self._limits.max_assets_per_register)

    async def _refuse(
        self,
        stream: AgentStream,
        reason: CloseReasonName,
        detail: str,
        remote: str,
        site_id: str | None,
    ) -> None:
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

    # -- sender --------------------------------------------------------------------------

    async def _send_loop(self, stream: AgentStream, session: Session) -> None:
        """Setpoints from the outbox, heartbeats on time, and the close.

        The sender sleeps on the outbox only; a timer puts a TICK there at the next
        heartbeat or silence deadline. (A timeout around the wait raised and swallowed a
        TimeoutError per session per interval: thousands of tracebacks a second at fleet
        scale, all cyclic garbage for the collector.) Deadlines only move later, so the
        one pending timer is never late.
        """
        interval = self._hb
        seq = 0
        next_hb = time.monotonic() + interval
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        try:
            while True:
                now = time.monotonic()
                silent_until = session.last_seen_mono + 3 * interval
                if now >= silent_until and session.backpressured:
                    # Its frames wait in our buffers (ingest is full): not the gateway's
                    # silence. A dead connection is still caught by HTTP/2 keepalive.
                    session.last_seen_mono = now
                    silent_until = now + 3 * interval
                if now >= silent_until:
                    session.close(
                        "heartbeat_timeout", f"nothing heard for {3 * interval:g} s (3 intervals)"
                    )
                if now >= next_hb:
                    seq += 1
                    await stream.send_message(convert.heartbeat_message(seq, self._clock()))
                    next_hb += interval * (1 + int((now - next_hb) // interval))
                    continue
                if timer is None:
                    timer = loop.call_later(
                        min(next_hb, silent_until) - now, session.outbox.put_nowait, TICK
                    )
                item = await session.outbox.get()
                if item is TICK:
                    timer = None
                    continue
                if item is CLOSE:
                    reason = cast(CloseReasonName, session.close_reason)
                    with contextlib.suppress(StreamTerminatedError, ConnectionError):
                        await stream.send_message(
                            convert.session_closed(reason, session.close_detail)
                        )
                    raise _Closed(reason, session.close_detail)
                await stream.send_message(cast(pb.HeadendMessage, item))
                # Yield between sends: grpclib does not while the window has room.
                await asyncio.sleep(0)
        finally:
            if timer is not None:
                timer.cancel()

    # -- receiver ------------------------------------------------------------------------

    async def _recv_loop(self, stream: AgentStream, session: Session) -> None:
        """Everything the gateway sends after Register; returns when it ends the stream."""
        last_persisted = time.monotonic()
        limit = self._limits.max_readings_per_message
        while True:
            frame = await self._recv(stream)
            if frame is None:
                return
            now = self._clock()
            session.touch(now)
            kind = convert.body_kind(frame)
            if kind == "telemetry_batch":
                readings = frame.telemetry_batch.readings
                if len(readings) > limit:
                    raise ProtocolViolationError(
                        f"TelemetryBatch of {len(readings)} readings; the limit is {limit}"
                    )
                await self._telemetry(session, readings, now)
            elif kind == "telemetry":
                await self._telemetry(session, (frame.telemetry,), now)
            elif kind == "setpoint_ack":
                await self._ack(session, frame.setpoint_ack)
            elif kind == "heartbeat":
                if time.monotonic() - last_persisted >= self._hb:
                    last_persisted = time.monotonic()
                    self._gateways.seen(session)
            elif kind == "register":
                raise ProtocolViolationError("Register sent twice on one stream")
            else:
                raise ProtocolViolationError("empty AgentMessage (no body)")

    async def _telemetry(
        self, session: Session, readings: Iterable[pb.Telemetry], received_at: datetime
    ) -> None:
        """Store a frame's readings. A reading no column can hold is the device's fault,
        not a protocol violation: it is dropped and counted, the rest of the frame is
        stored and the stream stays open."""
        ingest, metrics, assets = self._ingest, self._metrics, session.assets
        default = session.default_asset_id
        rows: list[convert.Row] = []
        n = 0
        for r in readings:
            n += 1
            asset_id = r.asset_id or default
            if asset_id not in assets:
                self._drop(session, asset_id, "foreign_asset" if asset_id else "no_asset")
                continue
            row = convert.reading_row(r, asset_id, received_at)
            if isinstance(row, str):
                self._drop(session, asset_id, "invalid", row, r.seq)
                continue
            if ingest.accept(asset_id, row[1]):
                rows.append(row)
        metrics.telemetry_received.inc(n)
        session.backpressured = True
        try:
            await ingest.put(rows)  # waits while the queue is full: backpressure
        finally:
            session.backpressured = False

    def _drop(
        self,
        session: Session,
        asset_id: str,
        reason: str,
        rejected: convert.RejectReason | None = None,
        seq: int | None = None,
    ) -> None:
        """Count a dropped reading; log the first of each reason per session only (a
        broken device repeats its fault every reading, and would flood the log)."""
        self._metrics.telemetry_dropped.labels(reason).inc()
        if rejected is not None:
            self._metrics.telemetry_rejected.labels(rejected).inc()
        why = rejected or reason
        logged = self._drops_logged.setdefault(session, set())
        if why in logged:
            return
        logged.add(why)
        log_event(
            log,
            "telemetry_dropped",
            level=logging.WARNING,
            site_id=session.site_id,
            asset_id=asset_id[:64] or None,
            reason=why,
            seq=seq,
            session_id=session.session_id,
            detail="further drops for this reason on this session are counted, not logged",
        )

    async def _ack(self, session: Session, msg: pb.SetpointAck) -> None:
        try:
            ack = convert.ack_from_pb(msg, session.default_asset_id)
        except ProtocolViolationError as exc:
            # A bad ack is logged and ignored: closing would not make the gateway's
            # report any better, and it would drop the telemetry flowing alongside.
            self._metrics.protocol_errors.inc()
            self._metrics.acks_ignored.labels("invalid").inc()
            log_event(
                log,
                "ack_invalid",
                level=logging.WARNING,
                site_id=session.site_id,
                detail=exc.detail,
            )
            return
        # While the database is slow, the gateway's frames wait behind this ack: that is
        # not the gateway's silence (the sender would close the stream for it).
        session.backpressured = True
        try:
            # A database that cannot take the ack now (down, a killed connection) is not
            # the gateway's fault: the ack waits in `AckRetry` and the stream goes on.
            await self._dispatch.acks.handle(session, ack)
        except HeadendError as exc:
            log_event(log, "ack_failed", level=logging.WARNING, detail=exc.detail)
        except Exception:
            # A bug, or a value the database refused: this ack is lost (and logged with
            # its traceback), the stream and the site's telemetry are not.
            self._metrics.acks_ignored.labels("error").inc()
            log.exception(
                "event=ack_dropped site_id=%s setpoint_id=%s", session.site_id, ack.setpoint_id
            )
        finally:
            session.backpressured = False


def _peer(stream: AgentStream) -> PeerIdentity | None:
    """The TLS identity of the stream's peer; None on a plaintext connection."""
    transport = getattr(stream.peer, "_transport", None)  # grpclib exposes only a dict form
    if transport is None:
        return None
    return peer_identity(transport.get_extra_info("ssl_object"))


def _remote(stream: AgentStream) -> str:
    try:
        addr = stream.peer.addr()
    except Exception:  # peer info is best effort
        return "?"
    if not addr:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


__all__ = ["CONNECT_PATH", "AgentService"]
