"""Load harness: G gateways x A assets against real headend processes on one PostgreSQL.

Each simulated gateway has its own gRPC connection, registers, sends one TelemetryBatch
of A readings every ``cadence`` seconds (random phase) and acks every setpoint APPLIED at
once, like a real gateway. The clients run in their own processes, with pre-built upb
messages and many connections per process, so what is measured is the headend. The
parent process fires dispatches over REST at a rate and reports:

- readings/s stored in PostgreSQL (the headends' committed-rows counters over the window)
- telemetry lag p50/p99: generation ``ts`` -> row visible in ``telemetry`` (probe assets
  polled every ``--lag-poll`` seconds; that is the resolution)
- dispatch POST -> APPLIED p50/p99 (GET polled every 10 ms), the same on the headend's
  clock (dispatch_events), and the POST and GET round trips inside it
- the headends' event-loop lag (``vpp_event_loop_lag_seconds``) over the window
- headend CPU (% of one core) and RSS per process, the PostgreSQL backends' CPU and the
  client processes' CPU, all over the same window
- errors (stream failures, failed POSTs, dispatches not applied in time)

as a table and as JSON (``--json PATH``, or ``-`` for stdout)::

    python tools/loadgen.py --gateways 1000 --assets 10 --cadence 4 --duration 30 \\
        --dispatch-rate 2 --replicas 1 --database-url postgresql://postgres@127.0.0.1/postgres

A fresh database is created on the server (``--database-url`` or
``VPP_BENCH_DATABASE_URL``), migrated and loaded with the sites, and dropped at the end.

The gateways' gRPC client is ``--client raw`` by default: a minimal HTTP/2 client on
asyncio Protocols (``tools/loadgen_h2.py``: frames packed with ``struct``, the request
headers HPACK-encoded once per process, flow control honoured). grpclib's client runs
h2/hyperframe in pure Python and on a 2-core machine cost about as much CPU as the headend
it measured; ``--client grpclib`` keeps it selectable to compare the two. Both drive the
same gateway logic (`_gateway`). Clients and the parent run on uvloop where it is
installed (a dependency of vpp-headend), like the headends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import loadgen_h2
import psycopg
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality

from vpp_headend.eventloop import loop_factory
from vpp_protocol import PROTOCOL_VERSION
from vpp_protocol.upb import pb

CONNECT = "/vpp.agent.v1.AgentService/Connect"
_ROWS_STORED = re.compile(r"^vpp_telemetry_rows_stored_total (\S+)$", re.M)
# Histograms read at both ends of the window, summed over the headends: name -> the
# metric and the labels its series must carry (besides le).
_BUCKETS: dict[str, tuple[str, dict[str, str]]] = {
    "loop_lag": ("vpp_event_loop_lag_seconds", {}),
    "post_in_app": (
        "vpp_http_request_duration_seconds",
        {"method": "POST", "route": "/dispatch", "status": "202"},
    ),
    "gc_young": ("vpp_gc_pause_seconds", {"generation": "0"}),
    "db_checkout": ("vpp_db_pool_checkout_seconds", {}),
}
_BUCKET_LINE = re.compile(r"^(\w+)_bucket\{([^}]*)\} (\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_LISTENING = re.compile(r"event=listening .*http_port=(\d+) grpc_port=(\d+)")


@dataclass(frozen=True)
class LoadConfig:
    """One run of the harness."""

    gateways: int = 100
    assets: int = 10
    cadence_s: float = 4.0
    duration_s: float = 20.0
    dispatch_rate: float = 2.0  # dispatches per second over REST, 0 = none
    replicas: int = 1
    client_procs: int = 2
    connect_rate: float = 500.0  # new connections per second, all clients together
    connect_timeout_s: float = 300.0
    lag_poll_s: float = 0.1
    probe_assets: int = 50
    host: str = "127.0.0.1"
    client: str = "raw"  # the simulated gateways' gRPC client: "raw" or "grpclib"
    # One more headend process that holds no gateway streams and takes all REST traffic
    # (dispatch POST/GET): the control plane off the telemetry loops (DESIGN.md §7).
    control_replica: bool = False

    def __post_init__(self) -> None:
        if self.gateways < 1 or self.assets < 1 or self.replicas < 1 or self.client_procs < 1:
            raise ValueError("gateways, assets, replicas and client_procs must be >= 1")
        if self.cadence_s <= 0 or self.duration_s <= 0 or self.dispatch_rate < 0:
            raise ValueError("cadence and duration must be > 0, dispatch rate >= 0")
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {sorted(CLIENTS)}, not {self.client!r}")


@dataclass
class Report:
    """What a run measured."""

    config: dict[str, Any]
    offered_readings_per_s: float = 0.0
    readings_per_s: float = 0.0
    rows_stored: int = 0
    window_s: float = 0.0
    connected: int = 0
    connect_s: float = 0.0
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    lag_max_s: float | None = None
    lag_samples: int = 0
    dispatch_p50_ms: float | None = None
    dispatch_p99_ms: float | None = None
    # The same dispatches on the headend's clock (dispatch_events): issued -> applied
    # without the REST round trips and polling of the measurement.
    server_applied_p50_ms: float | None = None
    server_applied_p99_ms: float | None = None
    # The REST round trips inside the dispatch figure, and the harness parent's own CPU
    # (it posts, polls and runs the lag probe): what the REST view adds, and whether the
    # measuring side is the bottleneck.
    rest_post_p50_ms: float | None = None
    rest_post_p99_ms: float | None = None
    rest_get_p50_ms: float | None = None
    rest_get_p99_ms: float | None = None
    # POST /dispatch inside the headend (vpp_http_request_duration_seconds, bucket bounds):
    # the rest of the POST round trip is the HTTP server, the network and the client.
    post_in_app_p50_ms: float | None = None
    post_in_app_p99_ms: float | None = None
    parent_cpu_pct: float = 0.0
    # vpp_event_loop_lag_seconds over the window, all headends: the upper bound of the
    # histogram bucket holding the quantile (how long ready work waited for its turn).
    loop_lag_p50_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    # Young-generation collections in the window (vpp_gc_pause_seconds{generation="0"}).
    gc_young_count: int = 0
    gc_young_p50_ms: float | None = None
    gc_young_p99_ms: float | None = None
    # Time to get a pooled connection (vpp_db_pool_checkout_seconds): waits on the pool.
    db_checkout_p50_ms: float | None = None
    db_checkout_p99_ms: float | None = None
    dispatches: int = 0
    dispatches_applied: int = 0
    headend_cpu_pct: list[float] = field(default_factory=list)
    headend_rss_mb: list[float] = field(default_factory=list)
    db_backend_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0  # the client processes over the window, like the headend's
    client_cpu_total_s: float = 0.0  # their whole life: start-up, connects, teardown
    errors: dict[str, int] = field(default_factory=dict)
    # Every dispatch of the window (JSON only): [start unix s, POST s, POST -> APPLIED s]
    dispatch_timeline: list[tuple[float, float, float | None]] = field(default_factory=list)
    # Statements seen running >= 100 ms (JSON only; sampled every 0.1 s):
    # [unix s, wait type, wait event, seconds running, query head]
    db_slow_statements: list[tuple[float, str, str, float, str]] = field(default_factory=list)
    error_samples: dict[str, str] = field(default_factory=dict)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def table(self) -> str:
        c = self.config
        lines = [
            f"load: {c['gateways']} gateways x {c['assets']} assets, cadence {c['cadence_s']} s, "
            f"{c['replicas']} headend replica(s)"
            f"{' + 1 REST-only replica' if c.get('control_replica') else ''}, "
            f"{c['client_procs']} client processes "
            f"({c['client']} client), "
            f"window {self.window_s:.1f} s",
            f"  connected                 {self.connected:>10} in {self.connect_s:.1f} s",
            f"  offered readings/s        {self.offered_readings_per_s:>10,.0f}",
            f"  stored readings/s         {self.readings_per_s:>10,.0f} "
            f"({self.rows_stored} rows in the window)",
            f"  telemetry lag p50 / p99   {_fmt(self.lag_p50_s, 's')} / {_fmt(self.lag_p99_s, 's')}"
            f" (max {_fmt(self.lag_max_s, 's')}, {self.lag_samples} samples, "
            f"poll {c['lag_poll_s']} s)",
            f"  dispatch POST->APPLIED    {_fmt(self.dispatch_p50_ms, 'ms')} / "
            f"{_fmt(self.dispatch_p99_ms, 'ms')} p50 / p99 "
            f"({self.dispatches_applied}/{self.dispatches} applied)",
            f"    on the headend's clock  {_fmt(self.server_applied_p50_ms, 'ms')} / "
            f"{_fmt(self.server_applied_p99_ms, 'ms')} p50 / p99 issued -> applied "
            "(dispatch_events; the rest is REST and polling)",
            f"    REST round trips        POST {_fmt(self.rest_post_p50_ms, 'ms')} / "
            f"{_fmt(self.rest_post_p99_ms, 'ms')}, GET {_fmt(self.rest_get_p50_ms, 'ms')} / "
            f"{_fmt(self.rest_get_p99_ms, 'ms')} p50 / p99 (harness parent CPU "
            f"{self.parent_cpu_pct:.0f}%)",
            f"    POST in the headend app <= {_fmt(self.post_in_app_p50_ms, 'ms')} / "
            f"<= {_fmt(self.post_in_app_p99_ms, 'ms')} p50 / p99 "
            "(vpp_http_request_duration_seconds)",
            f"  headend loop lag          <= {_fmt(self.loop_lag_p50_ms, 'ms')} / "
            f"<= {_fmt(self.loop_lag_p99_ms, 'ms')} p50 / p99 (vpp_event_loop_lag_seconds)",
            f"  young GC collections      {self.gc_young_count:>10}, pause <= "
            f"{_fmt(self.gc_young_p50_ms, 'ms')} / <= {_fmt(self.gc_young_p99_ms, 'ms')} "
            "p50 / p99 (vpp_gc_pause_seconds)",
            f"  database pool checkout    <= {_fmt(self.db_checkout_p50_ms, 'ms')} / "
            f"<= {_fmt(self.db_checkout_p99_ms, 'ms')} p50 / p99 (vpp_db_pool_checkout_seconds)",
            "  headend CPU (% of 1 core) "
            + ", ".join(f"{x:.0f}%" for x in self.headend_cpu_pct)
            + "   RSS "
            + ", ".join(f"{x:.0f} MB" for x in self.headend_rss_mb),
            f"  PostgreSQL backends CPU   {self.db_backend_cpu_pct:>9.0f}%   "
            f"clients CPU {self.client_cpu_pct:.0f}% "
            f"({self.client_cpu_total_s:.1f} CPU-s in all)",
            f"  errors                    {self.errors or 'none'}",
            *(f"    {k}: {v}" for k, v in self.error_samples.items()),
            f"  load average              {' '.join(f'{x:.2f}' for x in self.loadavg)}",
        ]
        return "\n".join(lines)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if unit == "s" and value < 1 else f"{value:.2f} {unit}"


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# -- the simulated gateways (client processes) ----------------------------------------------


class Raw:
    """Pre-encoded bytes that grpclib's codec sends as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


def batch_frames(asset_ids: list[str], readings: int, batch: int) -> list[bytes]:
    """upb-encoded TelemetryBatch frames: ``readings`` in all, seq 1.. per asset, round robin
    over ``asset_ids`` (power 10 kW + the asset's index), ``batch`` readings per frame."""
    base = int(time.time()) - readings
    msg = pb.AgentMessage()
    frames: list[bytes] = []
    seq = sent = 0
    while sent < readings:
        msg.Clear()
        out = msg.telemetry_batch.readings
        while len(out) < batch and sent < readings:
            seq += 1
            for a, aid in enumerate(asset_ids):
                if len(out) >= batch or sent >= readings:
                    break
                r = out.add()
                r.asset_id = aid
                r.seq = seq
                r.ts.seconds = base + seq
                r.power_kw = 10.0 + a
                r.soc_pct = 50.0
                r.status = pb.ASSET_STATUS_OK
                sent += 1
        frames.append(msg.SerializeToString())
    return frames


def site_id(g: int) -> str:
    return f"lg{g}"


def asset_id(g: int, a: int) -> str:
    return f"lg{g}-a{a}"


def _register(g: int, assets: int) -> bytes:
    msg = pb.AgentMessage()
    msg.register.site_id = site_id(g)
    msg.register.protocol_version = PROTOCOL_VERSION
    msg.register.agent_version = "vpp-loadgen"
    for a in range(assets):
        d = msg.register.assets.add()
        d.asset_id = asset_id(g, a)
        d.kind = pb.ASSET_KIND_BESS
        d.capacity_kw = 100.0
    return bytes(msg.SerializeToString())


@dataclass
class _ClientStats:
    connected: int = 0
    failed: int = 0  # never got a session (refused or connect error)
    batches: int = 0
    acks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Call(Protocol):
    """One gateway's bidi Connect call, whichever client carries it."""

    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> Any: ...  # a pb.HeadendMessage, or None at the end

    async def end(self) -> None: ...


class _GrpclibCall:
    """The call on grpclib's client (h2 in pure Python): the reference to compare with."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream[Raw, Any]) -> None:
        self._stream = stream

    async def send(self, data: bytes) -> None:
        await self._stream.send_message(Raw(data))

    async def recv(self) -> Any:
        return await self._stream.recv_message()

    async def end(self) -> None:
        await self._stream.end()


@contextlib.asynccontextmanager
async def grpclib_call(host: str, port: int) -> AsyncIterator[_Call]:
    """A Connect call on its own grpclib Channel; at a normal exit grpclib waits for the
    trailers and raises GRPCError on a non-OK status."""
    channel = Channel(host, port)
    try:
        async with channel.request(
            CONNECT, Cardinality.STREAM_STREAM, Raw, pb.HeadendMessage
        ) as stream:
            yield _GrpclibCall(stream)
    finally:
        channel.close()


class _RawCall:
    """The call on the raw HTTP/2 client (tools/loadgen_h2.py)."""

    __slots__ = ("_proto",)

    def __init__(self, proto: loadgen_h2.GrpcCallProtocol) -> None:
        self._proto = proto

    async def send(self, data: bytes) -> None:
        await self._proto.send_message(data)

    async def recv(self) -> Any:
        data = await self._proto.recv_message()
        return None if data is None else pb.HeadendMessage.FromString(data)

    async def end(self) -> None:
        await self._proto.end()


@contextlib.asynccontextmanager
async def raw_call(host: str, port: int) -> AsyncIterator[_Call]:
    """A Connect call on its own raw HTTP/2 connection. Like grpclib, a normal exit after
    `end` waits for the trailers and raises GRPCError on a non-OK status."""
    proto = await loadgen_h2.open_call(host, port, CONNECT)
    try:
        yield _RawCall(proto)
        if proto.local_ended:
            await proto.finished()
    finally:
        proto.close()


CLIENTS: dict[str, Callable[[str, int], contextlib.AbstractAsyncContextManager[_Call]]] = {
    "raw": raw_call,
    "grpclib": grpclib_call,
}


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Stop:
    """A client process's stop signal, and a gateway's sleep until its next deadline or
    the stop, whichever comes first.

    Why not ``asyncio.timeout`` around ``Event.wait()``: with a thousand gateways in a
    process, each wake removed its waiter from the Event's deque (O(gateways), ~25 µs) and
    went through task cancellation and a TimeoutError; this is one future and one timer
    handle per wake. Measured at 1,000 gateways in one process: the gateway loop cost about
    165 µs of client CPU per wake with the Event, about 100 µs with this; the raw HTTP/2
    send adds about 20 µs, grpclib's about 150 µs."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: set[asyncio.Future[None]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        for fut in self._waiters:
            _resolve(fut)
        self._waiters.clear()

    async def sleep_until(self, when: float) -> None:
        """Until ``time.monotonic() >= when`` (the event loop's clock) or the stop."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        handle = loop.call_at(when, _resolve, fut)
        self._waiters.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiters.discard(fut)


async def _gateway(
    port: int, g: int, cfg: LoadConfig, start_at: float, stop: _Stop, st: _ClientStats
) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    template = pb.AgentMessage()
    readings = [template.telemetry_batch.readings.add() for _ in range(cfg.assets)]
    for a, r in enumerate(readings):
        r.asset_id = asset_id(g, a)
        r.power_kw = 10.0 + a
        r.soc_pct = 50.0
        r.status = pb.ASSET_STATUS_OK
    ack = pb.AgentMessage()
    ack.setpoint_ack.state = pb.ACK_STATE_APPLIED
    connected = refused = False
    try:
        async with CLIENTS[cfg.client](cfg.host, port) as stream:
            await stream.send(_register(g, cfg.assets))
            first = await stream.recv()
            if first is None or first.WhichOneof("body") != "register_result":
                st.error("register_refused")
                st.failed += 1
                refused = True
                return
            seq = max([0, *first.register_result.telemetry_watermarks.values()])
            hb_interval = first.register_result.heartbeat_interval_s or 15.0
            connected = True
            st.connected += 1

            async def reader() -> None:
                while (msg := await stream.recv()) is not None:
                    kind = msg.WhichOneof("body")
                    if kind == "setpoint":
                        sp = msg.setpoint
                        ack.setpoint_ack.setpoint_id = sp.setpoint_id
                        ack.setpoint_ack.asset_id = sp.asset_id
                        ack.setpoint_ack.applied_kw = sp.power_kw
                        ack.setpoint_ack.ts.GetCurrentTime()
                        await stream.send(ack.SerializeToString())
                        st.acks += 1
                    elif kind == "session_closed":
                        st.error(f"closed_{msg.session_closed.reason}")
                        return

            read_task = asyncio.create_task(reader())
            next_tick = time.monotonic() + random.uniform(0, cfg.cadence_s)
            # Heartbeats like a real gateway (one per interval the headend asked for), so
            # the headend's liveness bookkeeping is part of what is measured.
            next_hb = time.monotonic() + random.uniform(0, hb_interval)
            hb = pb.AgentMessage()
            try:
                while not stop.is_set() and not read_task.done():
                    await stop.sleep_until(min(next_tick, next_hb))
                    if stop.is_set() or read_task.done():
                        break
                    if time.monotonic() >= next_hb:
                        hb.heartbeat.seq += 1
                        hb.heartbeat.ts.GetCurrentTime()
                        await stream.send(hb.SerializeToString())
                        next_hb += hb_interval
                        if time.monotonic() < next_tick:
                            continue
                    seq += 1
                    now_ns = time.time_ns()
                    for r in readings:
                        r.seq = seq
                        r.ts.FromNanoseconds(now_ns)
                    await stream.send(template.SerializeToString())
                    st.batches += 1
                    next_tick += cfg.cadence_s
                await stream.end()
            finally:
                read_task.cancel()
                with contextlib.suppress(BaseException):
                    await read_task
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if refused:
            # Already counted. grpclib raises at the exit of a call whose request stream
            # was not ended ('Outgoing stream was not ended'): not a second failure.
            return
        kind = type(exc).__name__ if connected else f"connect_{type(exc).__name__}"
        st.error(kind)
        if not connected:
            st.failed += 1
        st.samples.setdefault(kind, str(exc)[:200])


def _client_main(
    ports: list[int],
    gateways: list[int],
    cfg: LoadConfig,
    t0: float,
    stop_evt: Any,
    connected: Any,
    failed: Any,
    out: Any,
) -> None:
    _raise_nofile()

    async def main() -> None:
        st = _ClientStats()
        stop = _Stop()
        interval = 1.0 / cfg.connect_rate
        tasks = [
            asyncio.create_task(
                _gateway(ports[g % len(ports)], g, cfg, t0 + g * interval, stop, st)
            )
            for g in gateways
        ]
        reported = failed_reported = 0
        while not stop_evt.is_set():
            await asyncio.sleep(0.2)
            if st.connected != reported:
                with connected.get_lock():
                    connected.value += st.connected - reported
                reported = st.connected
            if st.failed != failed_reported:
                with failed.get_lock():
                    failed.value += st.failed - failed_reported
                failed_reported = st.failed
        stop.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            t.cancel()
        out.put(
            {
                "connected": st.connected,
                "batches": st.batches,
                "acks": st.acks,
                "errors": st.errors,
                "samples": st.samples,
                "cpu_s": _self_cpu_s(),
            }
        )

    # The harness stops clients through stop_evt; ignore the terminal's ^C here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        runner.run(main())


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- database and headend processes ---------------------------------------------------------


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on the server, dropped at the end."""
    parts = urlsplit(server_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    name = f"vpp_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_registry(url: str, gateways: int, assets: int) -> None:
    """Sites lg0..lgN with A bess assets each (COPY; the site import is per site)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY sites (site_id) FROM STDIN") as copy:
            for g in range(gateways):
                copy.write_row((site_id(g),))
        with cur.copy(
            "COPY assets (asset_id, site_id, kind, capacity_kw, min_kw, max_kw) FROM STDIN"
        ) as copy:
            for g in range(gateways):
                for a in range(assets):
                    copy.write_row((asset_id(g, a), site_id(g), "bess", 100.0, -100.0, 100.0))


@dataclass
class HeadendProc:
    """A `vpp-headend serve` child process."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0
    grpc_port: int = 0


def start_headends(url: str, n: int, logdir: Path, extra_env: dict[str, str]) -> list[HeadendProc]:
    """``n`` headend processes (replicas) on ``url``; returns once all listen."""
    exe = Path(sys.executable).parent / "vpp-headend"
    out: list[HeadendProc] = []
    for i in range(n):
        log_path = logdir / f"headend-{i}.log"
        env = {
            **os.environ,
            "VPP_REPLICA": f"loadgen-{i}",
            **extra_env,
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(exe), "serve", "--database-url", url, "--http-port", "0", "--grpc-port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        out.append(HeadendProc(proc, log_path))
    deadline = time.monotonic() + 60
    for h in out:
        while not h.grpc_port:
            m = _LISTENING.search(h.log_path.read_text(errors="replace"))
            if m:
                h.http_port, h.grpc_port = int(m.group(1)), int(m.group(2))
            elif h.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"headend did not start: {h.log_path.read_text()[-2000:]}")
            else:
                time.sleep(0.05)
    return out


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the harness dies (Linux), so no headend outlives a
    killed run."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_headends(headends: list[HeadendProc]) -> None:
    for h in headends:
        if h.proc.poll() is None:
            h.proc.send_signal(signal.SIGTERM)
    for h in headends:
        try:
            h.proc.wait(30)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.proc.wait()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _scrape(
    http: httpx.AsyncClient, headends: list[HeadendProc]
) -> tuple[float, dict[str, dict[float, float]]]:
    """Rows stored and the cumulative buckets of each histogram in ``_BUCKETS``, summed
    over the headends (one /metrics scrape each)."""
    rows = 0.0
    buckets: dict[str, dict[float, float]] = {name: {} for name in _BUCKETS}
    for h in headends:
        text = (await http.get(f"http://127.0.0.1:{h.http_port}/metrics")).text
        if m := _ROWS_STORED.search(text):
            rows += float(m.group(1))
        for m in _BUCKET_LINE.finditer(text):
            metric, value = m.group(1), float(m.group(3))
            labels = dict(_LABEL.findall(m.group(2)))
            for name, (wanted, required) in _BUCKETS.items():
                if metric == wanted and required.items() <= labels.items():
                    le = float(labels["le"])
                    buckets[name][le] = buckets[name].get(le, 0.0) + value
    return rows, buckets


async def _stored_rows(http: httpx.AsyncClient, headends: list[HeadendProc]) -> float:
    """Rows stored by all the headends (``vpp_telemetry_rows_stored_total``)."""
    return (await _scrape(http, headends))[0]


def _p50_p99_ms(seconds: list[float]) -> tuple[float | None, float | None]:
    """Median and 99th percentile in ms (None, None without samples)."""
    if not seconds:
        return None, None
    ms = [x * 1000 for x in seconds]
    return statistics.median(ms), _pct(ms, 0.99)


def _bucket_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """Upper bound (ms) of the first bucket whose cumulative count reaches quantile ``q``."""
    total = cumulative.get(math.inf, 0.0)
    if total <= 0:
        return None
    for le in sorted(cumulative):
        if cumulative[le] >= q * total:
            return le * 1000
    return None


def _bucket_p50_p99_ms(cumulative: dict[float, float]) -> tuple[float | None, float | None]:
    """`_bucket_quantile` at the median and the 99th percentile."""
    return _bucket_quantile(cumulative, 0.5), _bucket_quantile(cumulative, 0.99)


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _backend_pids(url: str) -> list[int]:
    name = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        return [int(r[0]) for r in await cur.fetchall()]


# -- measurements in the parent -------------------------------------------------------------


async def _until(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _lag_monitor(url: str, probes: list[str], since: float, stop: asyncio.Event, poll: float,
                       out: list[float]) -> None:  # fmt: skip
    seen: set[tuple[str, int]] = set()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT asset_id, seq, extract(epoch FROM ts) FROM telemetry "
                "WHERE asset_id = ANY(%s) AND ts > to_timestamp(%s)",
                (probes, since),
            )
            rows = await cur.fetchall()
            now = time.time()
            for aid, seq, ts in rows:
                key = (aid, int(seq))
                if key not in seen:
                    seen.add(key)
                    out.append(now - float(ts))
            await _until(stop, poll)


async def _db_watch(
    url: str, stop: asyncio.Event, out: list[tuple[float, str, str, float, str]]
) -> None:
    """Statements of the load database running 100 ms or more, sampled every 0.1 s:
    (unix time, wait type, wait event, seconds running, query head) — what a slow
    request waited on inside PostgreSQL (a lock, I/O, the WAL)."""
    name = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT extract(epoch FROM now()), coalesce(wait_event_type, 'CPU'),"
                " coalesce(wait_event, ''), extract(epoch FROM now() - query_start),"
                " left(regexp_replace(query, '\\s+', ' ', 'g'), 80)"
                " FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                " AND pid <> pg_backend_pid() AND now() - query_start > interval '100 ms'",
                (name,),
            )
            out.extend((float(a), b, c, float(d), e) for a, b, c, d, e in await cur.fetchall())
            await _until(stop, 0.1)


@dataclass
class _Rest:
    """What the dispatcher saw: POST -> APPLIED, and each POST and GET round trip (s)."""

    applied: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    get: list[float] = field(default_factory=list)
    # One row per dispatch: wall-clock start (unix s), POST round trip and POST -> APPLIED
    # (s, None if never applied); lines a slow one up with the headends' logs.
    timeline: list[tuple[float, float, float | None]] = field(default_factory=list)


async def _dispatcher(
    headends: list[HeadendProc], cfg: LoadConfig, stop: asyncio.Event, rest: _Rest,
    errors: dict[str, int],
) -> int:  # fmt: skip
    if cfg.dispatch_rate <= 0:
        await stop.wait()
        return 0
    rng = random.Random(8)
    inflight: set[asyncio.Task[None]] = set()
    sent = 0

    async def one(http: httpx.AsyncClient, n: int) -> None:
        target = asset_id(rng.randrange(cfg.gateways), rng.randrange(cfg.assets))
        t, wall = time.perf_counter(), time.time()
        row: list[Any] = [wall, 0.0, None]
        try:
            resp = await http.post("/dispatch", json={"asset_id": target, "power_kw": n % 50})
            row[1] = time.perf_counter() - t
            rest.post.append(row[1])
            if resp.status_code != 202:
                errors[f"post_{resp.status_code}"] = errors.get(f"post_{resp.status_code}", 0) + 1
                return
            did = resp.json()["dispatch_id"]
            deadline = t + 10
            while time.perf_counter() < deadline:
                t_get = time.perf_counter()
                state = (await http.get(f"/dispatch/{did}")).json()["state"]
                now = time.perf_counter()
                rest.get.append(now - t_get)
                if state == "applied":
                    rest.applied.append(now - t)
                    row[2] = now - t
                    return
                if state in ("failed", "rejected", "expired", "superseded"):
                    errors[f"dispatch_{state}"] = errors.get(f"dispatch_{state}", 0) + 1
                    return
                await asyncio.sleep(0.01)
            errors["dispatch_timeout"] = errors.get("dispatch_timeout", 0) + 1
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            rest.timeline.append((row[0], row[1], row[2]))

    clients = [
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.http_port}", timeout=10) for h in headends
    ]
    try:
        interval = 1.0 / cfg.dispatch_rate
        next_at = time.monotonic()
        while not stop.is_set():
            task = asyncio.create_task(one(clients[sent % len(clients)], sent))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            sent += 1
            next_at += interval
            await _until(stop, max(0.0, next_at - time.monotonic()))
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
    finally:
        for c in clients:
            await c.aclose()
    return sent


async def _measure(
    url: str,
    headends: list[HeadendProc],
    cfg: LoadConfig,
    report: Report,
    connected: Any,
    failed: Any,
    clients: list[Any],
) -> None:
    t_connect = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        while (
            connected.value + failed.value < cfg.gateways
            and time.monotonic() - t_connect < cfg.connect_timeout_s
        ):
            if not all(p.is_alive() for p in clients):
                raise RuntimeError("a client process died (see its traceback above)")
            if any(h.proc.poll() is not None for h in headends):
                raise RuntimeError("a headend process died")
            await asyncio.sleep(0.2)
        report.connected = int(connected.value)
        report.connect_s = time.monotonic() - t_connect
        # One cadence to settle into the steady state (every gateway sent once).
        await asyncio.sleep(cfg.cadence_s)
        pids = [h.proc.pid for h in headends]
        client_pids = [p.pid for p in clients if p.pid is not None]
        backends = await _backend_pids(url)
        cpu0 = [_cpu_s(p) for p in pids]
        client0 = sum(_cpu_s(p) for p in client_pids)
        db0 = {p: _cpu_s(p) for p in backends}
        rows0, buckets0 = await _scrape(http, headends)
        parent0 = _self_cpu_s()
        t0 = time.monotonic()
        stop = asyncio.Event()
        lags: list[float] = []
        rest_seen = _Rest()
        probes = [asset_id(g, 0) for g in range(min(cfg.probe_assets, cfg.gateways))]
        monitor = asyncio.create_task(
            _lag_monitor(url, probes, time.time(), stop, cfg.lag_poll_s, lags)
        )
        db_slow: list[tuple[float, str, str, float, str]] = []
        watch = asyncio.create_task(_db_watch(url, stop, db_slow))
        rest = headends[cfg.replicas :] if cfg.control_replica else headends
        dispatcher = asyncio.create_task(_dispatcher(rest, cfg, stop, rest_seen, report.errors))
        await asyncio.sleep(cfg.duration_s)
        rows1, buckets1 = await _scrape(http, headends)
        t1 = time.monotonic()
        parent1 = _self_cpu_s()
        cpu1 = [_cpu_s(p) for p in pids]
        client1 = sum(_cpu_s(p) for p in client_pids)
        db1 = {p: _cpu_s(p) for p in backends}
        report.headend_rss_mb = [_rss_mb(p) for p in pids]
        stop.set()
        report.dispatches = await dispatcher
        await monitor
        await watch
        server_ms = await _server_applied_ms(url)
    report.window_s = t1 - t0
    report.rows_stored = int(rows1 - rows0)
    report.readings_per_s = (rows1 - rows0) / report.window_s
    report.headend_cpu_pct = [
        100 * (b - a) / report.window_s for a, b in zip(cpu0, cpu1, strict=True)
    ]
    # A backend that ended in the window reads 0 at the end (or its pid was reused): skip.
    db_cpu = sum(db1[p] - db0[p] for p in db0 if db1[p] >= db0[p] > 0)
    report.client_cpu_pct = 100 * (client1 - client0) / report.window_s
    report.db_backend_cpu_pct = 100 * db_cpu / report.window_s
    if lags:
        report.lag_p50_s = statistics.median(lags)
        report.lag_p99_s = _pct(lags, 0.99)
        report.lag_max_s = max(lags)
        report.lag_samples = len(lags)
    report.parent_cpu_pct = 100 * (parent1 - parent0) / report.window_s
    report.dispatches_applied = len(rest_seen.applied)
    report.dispatch_timeline = sorted(rest_seen.timeline)
    report.db_slow_statements = db_slow
    report.dispatch_p50_ms, report.dispatch_p99_ms = _p50_p99_ms(rest_seen.applied)
    report.rest_post_p50_ms, report.rest_post_p99_ms = _p50_p99_ms(rest_seen.post)
    report.rest_get_p50_ms, report.rest_get_p99_ms = _p50_p99_ms(rest_seen.get)
    window = {  # a series first seen in the window (no POST before it) counts from 0
        name: {le: n - buckets0[name].get(le, 0.0) for le, n in after.items()}
        for name, after in buckets1.items()
    }
    report.loop_lag_p50_ms, report.loop_lag_p99_ms = _bucket_p50_p99_ms(window["loop_lag"])
    report.post_in_app_p50_ms, report.post_in_app_p99_ms = _bucket_p50_p99_ms(window["post_in_app"])
    report.gc_young_p50_ms, report.gc_young_p99_ms = _bucket_p50_p99_ms(window["gc_young"])
    report.gc_young_count = int(window["gc_young"].get(math.inf, 0.0))
    report.db_checkout_p50_ms, report.db_checkout_p99_ms = _bucket_p50_p99_ms(window["db_checkout"])
    if server_ms:
        report.server_applied_p50_ms = statistics.median(server_ms)
        report.server_applied_p99_ms = _pct(server_ms, 0.99)


async def _server_applied_ms(url: str) -> list[float]:
    """issued_at -> the dispatch-level `applied` event of every applied dispatch, in ms."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT extract(epoch FROM min(e.at) - d.issued_at) * 1000 FROM dispatches d"
            " JOIN dispatch_events e ON e.dispatch_id = d.dispatch_id"
            " WHERE e.state = 'applied' AND e.scope = 'dispatch' GROUP BY d.dispatch_id"
        )
        return [float(r[0]) for r in await cur.fetchall()]


def run(
    cfg: LoadConfig,
    server_url: str,
    *,
    headend_env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> Report:
    """One full run: database, headends, clients, measurement, teardown."""
    from vpp_headend.db.migrate import upgrade

    _raise_nofile()
    report = Report(config=asdict(cfg))
    report.offered_readings_per_s = cfg.gateways * cfg.assets / cfg.cadence_s
    with fresh_database(server_url) as url, tempfile.TemporaryDirectory() as tmp:
        upgrade(url)
        load_registry(url, cfg.gateways, cfg.assets)
        logs = log_dir or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        headends = start_headends(
            url, cfg.replicas + int(cfg.control_replica), logs, headend_env or {}
        )
        ctx = mp.get_context("spawn")
        stop_evt = ctx.Event()
        connected = ctx.Value("i", 0)
        failed = ctx.Value("i", 0)
        results = ctx.Queue()
        ports = [h.grpc_port for h in headends[: cfg.replicas]]
        t0 = time.monotonic() + 1.0  # CLOCK_MONOTONIC is shared by the processes
        procs = [
            ctx.Process(
                target=_client_main,
                args=(
                    ports,
                    list(range(i, cfg.gateways, cfg.client_procs)),
                    cfg,
                    t0,
                    stop_evt,
                    connected,
                    failed,
                    results,
                ),
                daemon=True,
            )
            for i in range(min(cfg.client_procs, cfg.gateways))
        ]
        for p in procs:
            p.start()
        try:
            with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
                runner.run(_measure(url, headends, cfg, report, connected, failed, procs))
        finally:
            stop_evt.set()
            for p in procs:
                try:
                    res = results.get(timeout=30 if p.is_alive() else 1)
                except Exception:
                    report.errors["client_lost"] = report.errors.get("client_lost", 0) + 1
                    continue
                report.client_cpu_total_s += res["cpu_s"]
                for k, v in res["errors"].items():
                    report.errors[k] = report.errors.get(k, 0) + v
                for k, v in res["samples"].items():
                    report.error_samples.setdefault(k, v)
            for p in procs:
                p.join(10)
            stop_headends(headends)
    report.loadavg = os.getloadavg()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = LoadConfig()
    parser.add_argument("--gateways", "-G", type=int, default=d.gateways)
    parser.add_argument("--assets", "-A", type=int, default=d.assets)
    parser.add_argument("--cadence", type=float, default=d.cadence_s)
    parser.add_argument("--duration", type=float, default=d.duration_s)
    parser.add_argument("--dispatch-rate", type=float, default=d.dispatch_rate)
    parser.add_argument("--replicas", type=int, default=d.replicas)
    parser.add_argument(
        "--control-replica",
        action="store_true",
        help="start one more headend that holds no gateways and serves all REST traffic",
    )
    parser.add_argument("--client-procs", type=int, default=d.client_procs)
    parser.add_argument("--connect-rate", type=float, default=d.connect_rate)
    parser.add_argument("--lag-poll", type=float, default=d.lag_poll_s)
    parser.add_argument("--connect-timeout", type=float, default=d.connect_timeout_s)
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default=d.client,
        help="the simulated gateways' gRPC client: 'raw' (default) is a minimal HTTP/2 "
        "client (tools/loadgen_h2.py) cheap enough that the headend is what is measured; "
        "'grpclib' is the reference client, whose pure-Python h2 cost about as much CPU as "
        "the headend",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VPP_BENCH_DATABASE_URL") or os.environ.get("VPP_TEST_DATABASE_URL"),
    )
    parser.add_argument("--log-dir", type=Path, help="keep the headends' logs here")
    parser.add_argument("--json", help="write the report as JSON to this path ('-' = stdout)")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or VPP_BENCH_DATABASE_URL is required (a server URL)")
    cfg = LoadConfig(
        gateways=args.gateways,
        assets=args.assets,
        cadence_s=args.cadence,
        duration_s=args.duration,
        dispatch_rate=args.dispatch_rate,
        replicas=args.replicas,
        client_procs=args.client_procs,
        connect_rate=args.connect_rate,
        lag_poll_s=args.lag_poll,
        connect_timeout_s=args.connect_timeout,
        client=args.client,
        control_replica=args.control_replica,
    )
    report = run(cfg, args.database_url, log_dir=args.log_dir)
    print(report.table(), flush=True)
    if args.json == "-":
        print(json.dumps(asdict(report), indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
