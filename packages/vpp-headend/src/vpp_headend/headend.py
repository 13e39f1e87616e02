"""One headend: the engine, the services, the ingest writer and the gRPC server.

`Headend.open(settings)` is the composition root: an async context manager that checks
the database, starts every part in order and yields a frozen `Headend` whose fields are
all running; leaving it stops them in reverse order (the GET /events streams end first,
then the gateways' with SERVER_SHUTDOWN; the engine closes last). The Litestar lifespan
and `serve.run` use it, and tests use it to run a headend in their own event loop on
ephemeral ports.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from uuid import UUID

from grpclib._typing import IServable
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server
from sqlalchemy.ext.asyncio import AsyncEngine

from vpp_protocol.keepalive import keepalive_config

from . import convert
from .auth import TokenCache
from .clock import Clock, utc_now
from .db import security_repo
from .db.engine import make_engine, ping, reader
from .dispatch import DispatchDeps, DispatchService, DispatchTiming
from .domain import ReleaseCommand, SetpointCommand
from .events import EventFeed
from .gateways import GatewayService
from .gcwatch import GcWatch
from .grpc_service import AgentService, StreamClock, StreamSettings
from .grpc_timeout import TimeoutCheckingServer
from .ingest import Ingest
from .jobs import PeriodicJobs, create_partitions
from .logs import log_event
from .loopwatch import LoopWatch
from .metrics import Metrics
from .notify import Listener
from .preflight import check_database, grpc_ssl_context, log_rest_auth
from .registry import Registry
from .sessions import Session, SessionRegistry
from .settings import Settings
from .telemetry_queries import TelemetryQueries

log = logging.getLogger(__name__)

# A deep accept queue: after a headend restart every gateway reconnects within its backoff
# window, and asyncio's default (100) overflowed (docs/scaling.md); the kernel caps it at
# net.core.somaxconn.
_GRPC_BACKLOG = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Headend:
    """Every long-lived part of a running headend; only `Headend.open` builds one."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    engine: AsyncEngine
    #: The engine's autocommit view, for read-only handlers (`db.engine.reader`).
    reader: AsyncEngine
    sessions: SessionRegistry
    #: REST token lookups, each answer kept for ``token_cache_s`` (auth.py).
    tokens: TokenCache
    registry: Registry
    ingest: Ingest
    telemetry: TelemetryQueries
    gateways: GatewayService
    dispatch: DispatchService
    listener: Listener
    agent: AgentService
    grpc_port: int
    #: GET /events: what changed, read from the database while a client listens (events/).
    events: EventFeed

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, clock: Clock = utc_now, metrics: Metrics | None = None
    ) -> AsyncIterator[Headend]:
        """Start a headend on ``settings``; UnavailableError names what stopped it (an
        unreachable or unmigrated database, unreadable TLS files), with nothing left
        running."""
        if settings.database_url is None:
            raise ValueError("Headend needs settings.database_url (the CLI starts embedded)")
        started = False
        try:
            async with AsyncExitStack() as stack:
                headend = await _start(stack, settings, clock, metrics or Metrics())
                started = True
                yield headend
        finally:
            if started:
                log_event(log, "stopped")

    @property
    def grpc_listening(self) -> bool:
        """True until shutdown begins."""
        return not self.sessions.shutting_down

    async def ready(self) -> list[str]:
        """What is not ready (empty list: ready)."""
        if not self.grpc_listening:
            return ["gRPC server is not listening (the headend is shutting down)"]
        problem = await _check_database(self.engine, self.metrics)
        problems = [] if problem is None else [problem]
        return problems + self.ingest.problems()  # a stopped or failing writer, not silence


async def _start(stack: AsyncExitStack, s: Settings, clock: Clock, metrics: Metrics) -> Headend:
    """Start every part in order; each pushes its stop onto ``stack`` once started."""
    engine = await _open_database(stack, s, clock, metrics)
    _watch_runtime(stack, s, metrics)
    ro = reader(engine)
    sessions = SessionRegistry()
    registry = Registry(engine)
    ingest = Ingest(engine, metrics, s, clock=clock)
    metrics.add_reading_times(ingest.reading_times, per_asset=s.metrics_per_asset)
    metrics.add_probe(partial(_check_database, engine, metrics))  # vpp_database_up per scrape
    gateways = GatewayService(engine, sessions, ingest, metrics, s, clock=clock)
    dispatch = DispatchService(
        DispatchDeps(
            engine=engine,
            registry=registry,
            sessions=sessions,
            metrics=metrics,
            push=_push,
            envelopes=ingest.envelopes,
            clock=clock,
        ),
        DispatchTiming.from_settings(s),
    )
    await ingest.start()
    stack.push_async_callback(ingest.stop)
    await gateways.start()
    stack.push_async_callback(gateways.stop)
    await log_rest_auth(engine, s)
    await dispatch.start()
    stack.push_async_callback(dispatch.stop)
    listener = _listener(s, sessions, gateways, dispatch)
    await listener.start()
    stack.push_async_callback(listener.stop)
    jobs = PeriodicJobs(engine, s, clock)
    jobs.start()
    stack.push_async_callback(jobs.stop)
    stream = StreamSettings.from_settings(s)
    agent = AgentService(gateways, dispatch, ingest, metrics, stream, clock=StreamClock(now=clock))
    grpc_port = await _serve_grpc(stack, s, agent, sessions)
    # Stopped first: the browsers' streams end (and they reconnect elsewhere) before ours.
    events = EventFeed(ro, metrics, s, clock=clock, held=ingest.held)
    stack.push_async_callback(events.stop)
    return Headend(
        settings=s,
        clock=clock,
        metrics=metrics,
        engine=engine,
        reader=ro,
        sessions=sessions,
        tokens=TokenCache(
            lambda token_sha256: security_repo.role_of(ro, token_sha256),
            ttl_s=s.token_cache_s,
        ),
        registry=registry,
        ingest=ingest,
        telemetry=TelemetryQueries(ro, registry, ingest),
        gateways=gateways,
        dispatch=dispatch,
        listener=listener,
        agent=agent,
        grpc_port=grpc_port,
        events=events,
    )


async def _check_database(engine: AsyncEngine, metrics: Metrics) -> str | None:
    """Ping the database (2 s at most) and set ``vpp_database_up``; what is wrong, or None."""
    try:
        async with asyncio.timeout(2.0):
            await ping(engine)
    except Exception as exc:
        metrics.database_up.set(0)
        return f"database is not reachable: {type(exc).__name__}"
    metrics.database_up.set(1)
    return None


async def _open_database(
    stack: AsyncExitStack, s: Settings, clock: Clock, metrics: Metrics
) -> AsyncEngine:
    """The engine, once the database answers at this headend's schema revision, with the
    telemetry partitions ahead created."""
    assert s.database_url is not None
    engine = make_engine(
        s.database_url,
        pool_size=s.db_pool_size,
        pool_timeout_s=s.db_pool_timeout_s,
        on_checkout=metrics.db_checkout.observe,
    )
    stack.push_async_callback(engine.dispose)
    await check_database(engine, s.database_url)
    await create_partitions(engine, clock, s.partition_days_ahead)
    return engine


def _watch_runtime(stack: AsyncExitStack, s: Settings, metrics: Metrics) -> None:
    """The garbage-collector tuning and watch, and the event-loop lag watch."""
    gc_watch = GcWatch(metrics.registry)
    loop_watch = LoopWatch(metrics.registry)
    gc_watch.install(s.gc_young_threshold)
    stack.callback(gc_watch.uninstall)
    loop_watch.start()
    stack.callback(loop_watch.stop)
    task = asyncio.create_task(
        gc_watch.run(s.gc_freeze_interval_s, s.gc_full_collect_interval_s), name="gc"
    )
    stack.push_async_callback(_cancel, task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _serve_grpc(
    stack: AsyncExitStack, s: Settings, agent: AgentService, sessions: SessionRegistry
) -> int:
    """Listen for gateways; on the way out, end every stream before the server closes."""
    # grpc.health.v1 answers SERVING for "" (the server) and for the service by name.
    handlers: list[IServable] = ServerReflection.extend([agent, Health({agent: []})])
    ssl_context = await grpc_ssl_context(s)
    # A malformed or spent grpc-timeout gets a status, not a traceback (grpc_timeout.py).
    server = TimeoutCheckingServer(
        handlers, config=keepalive_config(s.keepalive_time_s, s.keepalive_timeout_s)
    )
    sock = socket.create_server((s.host, s.grpc_port), reuse_port=False)
    port: int = sock.getsockname()[1]
    await server.start(sock=sock, ssl=ssl_context, backlog=_GRPC_BACKLOG)
    stack.push_async_callback(_close_server, server)
    stack.push_async_callback(_end_streams, s, agent, sessions)
    log_event(
        log,
        "grpc_listening",
        host=s.host,
        port=port,
        tls="mutual" if s.tls else "off",
        heartbeat_interval_s=s.heartbeat_interval_s,
        auto_enroll=s.auto_enroll,
    )
    return port


async def _close_server(server: Server) -> None:
    server.close()
    await server.wait_closed()


async def _end_streams(s: Settings, agent: AgentService, sessions: SessionRegistry) -> None:
    """Every stream ends with SERVER_SHUTDOWN; wait up to ``shutdown_grace_s`` for them."""
    sessions.shutting_down = True
    closing = sessions.close_all("server_shutdown", "headend is shutting down")
    if closing:
        log_event(log, "shutdown_closing_sessions", sessions=len(closing))
    if not await agent.wait_streams_closed(s.shutdown_grace_s):
        log_event(
            log, "shutdown_streams_timeout", level=logging.WARNING, streams=agent.open_streams
        )


def _listener(
    s: Settings, sessions: SessionRegistry, gateways: GatewayService, dispatch: DispatchService
) -> Listener:
    """LISTEN for the other replicas' notifications (notify.py)."""

    async def on_dispatch(dispatch_id: UUID) -> None:
        if not sessions.shutting_down:
            await dispatch.on_notified(dispatch_id)

    async def on_release(dispatch_id: UUID) -> None:
        if not sessions.shutting_down:
            await dispatch.on_release_notified(dispatch_id)

    async def on_resync() -> None:
        # Notifications may have been missed while the connection was down: close sessions
        # taken over elsewhere, then deliver what is pending for the rest.
        await gateways.check_current()
        for session in sessions:
            await dispatch.deliver_pending(session)

    assert s.database_url is not None
    return Listener(
        s.database_url,
        on_dispatch=on_dispatch,
        on_session=gateways.on_session_elsewhere,
        on_resync=on_resync,
        on_release=on_release,
        reconnect_s=s.listen_reconnect_s,
    )


def _push(session: Session, cmd: SetpointCommand | ReleaseCommand) -> bool:
    """A dispatch's setpoint or release onto a session's stream, as a wire message."""
    if isinstance(cmd, ReleaseCommand):
        return session.send(convert.release_message(cmd))
    return session.send(convert.setpoint_message(cmd))


__all__ = ["Headend"]
