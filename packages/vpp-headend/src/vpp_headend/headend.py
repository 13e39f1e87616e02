"""One headend: the engine, the services, the ingest writer and the gRPC server.

`Headend.start` / `Headend.stop` are what the Litestar lifespan calls, and what tests
call directly to run a headend in their own event loop on ephemeral ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID

from grpclib._typing import IServable
from grpclib.config import Configuration
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server
from sqlalchemy.ext.asyncio import AsyncEngine

from . import convert
from .auth import TokenCache
from .db import security_repo
from .db.engine import make_engine, ping, reader
from .db.migrate import current_revision, head_revision
from .db.partitions import ensure_partitions
from .db.url import redacted
from .dispatch import DispatchService, DispatchTiming
from .domain import ReleaseCommand, SetpointCommand
from .errors import UnavailableError
from .gateways import GatewayService
from .gcwatch import GcWatch
from .grpc_service import AgentService
from .grpc_timeout import TimeoutCheckingServer
from .ingest import Ingest
from .limits import Limits
from .logs import log_event
from .loopwatch import LoopWatch
from .metrics import Metrics
from .notify import Listener
from .registry import Registry
from .rollup import Rolled, rollup
from .sessions import Session, SessionRegistry
from .settings import Settings
from .tls import server_context

log = logging.getLogger(__name__)

_GRPC_BACKLOG = 4096
_T = TypeVar("_T")


class Headend:
    """Owns every long-lived part of a headend process and their tasks."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if settings.database_url is None:
            raise ValueError("Headend needs settings.database_url (the CLI starts embedded)")
        self.settings = settings
        self._clock = clock
        self.metrics = Metrics()
        self._gc = GcWatch(self.metrics.registry)
        self._loop_watch = LoopWatch(self.metrics.registry)
        self.sessions = SessionRegistry()
        #: REST token lookups, each answer kept for ``token_cache_s`` (auth.py).
        self.tokens = TokenCache(
            lambda token_sha256: security_repo.role_of(self.reader, token_sha256),
            ttl_s=settings.token_cache_s,
        )
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._server: Server | None = None
        self._service: AgentService | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._rollups: asyncio.Task[None] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self.grpc_port: int | None = None
        self._registry: Registry | None = None
        self._ingest: Ingest | None = None
        self._gateways: GatewayService | None = None
        self._dispatch: DispatchService | None = None
        self._listener: Listener | None = None

    # -- accessors (valid between start and stop) ------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        return _running(self._engine)

    @property
    def reader(self) -> AsyncEngine:
        """The engine's autocommit view, for read-only REST handlers (`db.engine.reader`)."""
        return _running(self._reader)

    @property
    def registry(self) -> Registry:
        return _running(self._registry)

    @property
    def ingest(self) -> Ingest:
        return _running(self._ingest)

    @property
    def gateways(self) -> GatewayService:
        return _running(self._gateways)

    @property
    def dispatch(self) -> DispatchService:
        return _running(self._dispatch)

    @property
    def started(self) -> bool:
        """True between a successful `start` and `stop`."""
        return self._server is not None

    @property
    def grpc_listening(self) -> bool:
        """True while the gRPC server accepts connections."""
        return self._server is not None and not self.sessions.shutting_down

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the database, start the services and the gRPC server."""
        s = self.settings
        assert s.database_url is not None
        engine = self._engine = make_engine(
            s.database_url,
            pool_size=s.db_pool_size,
            pool_timeout_s=s.db_pool_timeout_s,
            on_checkout=self.metrics.db_checkout.observe,
        )
        self._reader = reader(engine)
        try:
            await ping(engine)
        except Exception as exc:
            await engine.dispose()
            self._engine = self._reader = None
            raise UnavailableError(
                f"database {redacted(s.database_url)} is not reachable: {exc}"
            ) from exc
        have, want = await current_revision(engine), head_revision()
        if have != want:
            await engine.dispose()
            self._engine = self._reader = None
            raise UnavailableError(
                f"database schema is at {have or 'nothing'}, this headend needs {want}: "
                "run `vpp-headend db upgrade`"
            )
        created = await ensure_partitions(engine, self._clock().date(), s.partition_days_ahead)
        if created:
            log_event(log, "partitions_created", names=created)
        self._registry = Registry(engine)
        self._ingest = Ingest(
            engine,
            self.metrics,
            queue_rows=s.ingest_queue_rows,
            batch_rows=s.ingest_batch_rows,
            latest_flush_interval_s=s.latest_flush_interval_s,
            linger_s=s.ingest_linger_s,
            clock=self._clock,
        )
        self.metrics.add_lag_source(self._ingest.latest_in_memory, self._clock)
        self._gateways = GatewayService(
            engine,
            self.sessions,
            self._ingest,
            self.metrics,
            auto_enroll=s.auto_enroll,
            heartbeat_interval_s=s.heartbeat_interval_s,
            replica=s.replica,
            clock=self._clock,
        )
        self._dispatch = DispatchService(
            engine,
            self._registry,
            self.sessions,
            self.metrics,
            push=_push,
            envelopes=self._ingest.envelopes,
            timing=DispatchTiming(
                ack_grace_s=s.ack_grace_s,
                sweep_interval_s=s.sweep_interval_s,
                envelope_max_age_s=s.envelope_max_age_s,
                delivery_window_s=s.delivery_window_s,
                delivery_settle_s=s.delivery_settle_s,
            ),
            clock=self._clock,
        )
        await self._ingest.start()
        await self._gateways.start()
        await self._log_rest_auth()
        await self._dispatch.start()
        self._listener = Listener(
            s.database_url,
            on_dispatch=self._on_dispatch_notified,
            on_session=self._gateways.on_session_elsewhere,
            on_resync=self._resync,
            on_release=self._on_release_notified,
            reconnect_s=s.listen_reconnect_s,
        )
        await self._listener.start()
        self._service = AgentService(
            self._gateways,
            self._dispatch,
            self._ingest,
            self.metrics,
            heartbeat_interval_s=s.heartbeat_interval_s,
            register_timeout_s=s.register_timeout_s,
            admit_concurrency=s.admit_concurrency,
            close_grace_s=s.close_grace_s,
            limits=Limits(
                max_message_bytes=s.max_message_bytes,
                max_assets_per_register=s.max_assets_per_register,
                max_readings_per_message=s.max_readings_per_message,
            ),
            require_peer_certificate=s.tls,
            clock=self._clock,
        )
        handlers: list[IServable] = [self._service, Health()]
        handlers = ServerReflection.extend(handlers)
        ssl_context = await self._ssl_context()
        # A malformed or spent grpc-timeout gets a status, not a traceback (grpc_timeout.py).
        self._server = TimeoutCheckingServer(handlers, config=self._grpc_config())
        sock = socket.create_server((s.host, s.grpc_port), reuse_port=False)
        self.grpc_port = sock.getsockname()[1]
        # A deep accept queue: after a headend restart every gateway reconnects within
        # its backoff window; with asyncio's default (100) a busy loop let the queue
        # overflow and connects were lost (the kernel caps this at net.core.somaxconn).
        await self._server.start(sock=sock, ssl=ssl_context, backlog=_GRPC_BACKLOG)
        self._maintenance = asyncio.create_task(self._partition_loop(), name="partitions")
        self._rollups = asyncio.create_task(self._rollup_loop(), name="rollups")
        self._gc.install(s.gc_young_threshold)
        self._loop_watch.start()
        self._gc_task = asyncio.create_task(
            self._gc.run(s.gc_freeze_interval_s, s.gc_full_collect_interval_s), name="gc"
        )
        log_event(
            log,
            "grpc_listening",
            host=s.host,
            port=self.grpc_port,
            tls="mutual" if s.tls else "off",
            heartbeat_interval_s=s.heartbeat_interval_s,
            auto_enroll=s.auto_enroll,
        )

    async def _log_rest_auth(self) -> None:
        """Say at start whether the REST API asks for tokens (docs/security.md)."""
        s = self.settings
        _, tokens = await security_repo.role_of(self.engine, "")
        if s.rest_auth == "required" or tokens:
            log_event(log, "rest_auth", mode=s.rest_auth, enforced=True)
            return
        log_event(
            log,
            "rest_auth",
            level=logging.INFO if s.loopback else logging.WARNING,
            mode=s.rest_auth,
            enforced=False,
            detail="no API token exists: the REST API is open until one is created "
            "(vpp-headend tokens create --role operator)",
        )

    async def _ssl_context(self) -> ssl.SSLContext | None:
        """The mutual-TLS server context; None (with a warning when not loopback) for plaintext."""
        s = self.settings
        if s.tls_cert is not None and s.tls_key is not None and s.tls_client_ca is not None:
            try:
                return await asyncio.to_thread(
                    server_context, s.tls_cert, s.tls_key, s.tls_client_ca
                )
            except (OSError, ssl.SSLError) as exc:
                raise UnavailableError(f"cannot load the TLS files: {exc}") from exc
        if s.insecure:
            log_event(
                log,
                "insecure_plaintext_grpc",
                level=logging.WARNING,
                host=s.host,
                detail="gRPC without TLS (--insecure): site identities are not verified; "
                "any client can claim any registered site. Never use this in production.",
            )
        else:
            log_event(log, "plaintext_grpc_loopback", host=s.host)
        return None

    def _grpc_config(self) -> Configuration:
        s = self.settings
        # With only _keepalive_time set, grpclib's 300 s minimum ping interval suppresses
        # pings (STACK_NOTES): set the interval and max-pings-without-data as well.
        return Configuration(
            _keepalive_time=s.keepalive_time_s,
            _keepalive_timeout=s.keepalive_timeout_s,
            _keepalive_permit_without_calls=True,
            _http2_max_pings_without_data=0,
            _http2_min_sent_ping_interval_without_data=s.keepalive_time_s,
        )

    async def stop(self) -> None:
        """End every stream with SERVER_SHUTDOWN, stop the server, flush ingest, close DB."""
        self.sessions.shutting_down = True
        closing = self.sessions.close_all("server_shutdown", "headend is shutting down")
        if closing:
            log_event(log, "shutdown_closing_sessions", sessions=len(closing))
        if self._service is not None:
            done = await self._service.wait_streams_closed(self.settings.shutdown_grace_s)
            if not done:
                log_event(
                    log,
                    "shutdown_streams_timeout",
                    level=logging.WARNING,
                    streams=self._service.open_streams,
                )
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in (self._maintenance, self._rollups, self._gc_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._maintenance = self._rollups = self._gc_task = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._dispatch is not None:
            await self._dispatch.stop()
        if self._ingest is not None:
            await self._ingest.stop()
        if self._gateways is not None:
            await self._gateways.stop()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = self._reader = None
        self._gc.uninstall()
        self._loop_watch.stop()
        log_event(log, "stopped")

    async def ready(self) -> list[str]:
        """What is not ready (empty list: ready)."""
        problems: list[str] = []
        if not self.grpc_listening:
            problems.append("gRPC server is not listening")
        if self._engine is None:
            problems.append("database engine is not started")
        else:
            try:
                async with asyncio.timeout(2.0):
                    await ping(self._engine)
            except Exception as exc:
                problems.append(f"database is not reachable: {type(exc).__name__}")
        if self._ingest is not None:
            problems += self._ingest.problems()  # a stopped or failing writer, not silence
        return problems

    async def _on_dispatch_notified(self, dispatch_id: UUID) -> None:
        if not self.sessions.shutting_down:
            await self.dispatch.on_notified(dispatch_id)

    async def _on_release_notified(self, dispatch_id: UUID) -> None:
        if not self.sessions.shutting_down:
            await self.dispatch.on_release_notified(dispatch_id)

    async def _resync(self) -> None:
        """After the LISTEN connection came back: notifications may have been missed.
        Close sessions taken over elsewhere, then deliver what is pending for the rest
        (setpoints, then Releases)."""
        await self.gateways.check_current()
        for session in self.sessions:
            await self.dispatch.deliver_pending(session)

    async def _partition_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.partition_check_interval_s)
            try:
                created = await ensure_partitions(
                    self.engine, self._clock().date(), self.settings.partition_days_ahead
                )
                if created:
                    log_event(log, "partitions_created", names=created)
            except Exception as exc:  # retried at the next check
                log_event(log, "partitions_failed", level=logging.WARNING, error=exc)

    async def _rollup_loop(self) -> None:
        """Roll closed minutes into ``telemetry_1m`` (src/vpp_headend/rollup.py)."""
        overlap = timedelta(seconds=self.settings.rollup_overlap_s)
        while True:
            await asyncio.sleep(self.settings.rollup_interval_s)
            try:
                done = await rollup(self.engine, self._clock(), overlap=overlap, paced=True)
                if isinstance(done, Rolled) and done.rows:
                    log_event(log, "rollup", level=logging.DEBUG, rows=done.rows)
            except Exception as exc:  # retried at the next run; the headend carries on
                log_event(log, "rollup_failed", level=logging.WARNING, error=exc)


def _push(session: Session, cmd: SetpointCommand | ReleaseCommand) -> bool:
    """A dispatch's setpoint or release onto a session's stream, as a wire message
    (convert.py)."""
    if isinstance(cmd, ReleaseCommand):
        return session.send(convert.release_message(cmd))
    return session.send(convert.setpoint_message(cmd))


def _running(value: _T | None) -> _T:
    if value is None:
        raise UnavailableError("headend is not running")
    return value


__all__ = ["Headend"]
