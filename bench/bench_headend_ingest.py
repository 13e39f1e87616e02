"""Headend ingest and dispatch figures (prints, asserts nothing).

1. Telemetry readings/s, side by side in one run:
   (a) the floor: the same TelemetryBatch frames through ONE grpclib stream to a server
       that only decodes them (upb) and reads every field of every reading, client in a
       separate process;
   (b) the headend end to end: N synthetic gateways in a separate process send the frames
       over gRPC; the clock stops when every reading is a row in PostgreSQL (also with
       one gateway, i.e. one stream, like the floor);
   (c) the ratio b/a. In-process decode rates (no gRPC) are printed for reference.
2. Dispatch POST -> APPLIED latency (idle headend): REST POST over HTTP, an agent that
   acks APPLIED as soon as the setpoint arrives, GET polled until ``applied``.

    python bench/bench_headend_ingest.py [--gateways 10] [--assets 10] [--readings 20000]

Database: ``VPP_BENCH_DATABASE_URL`` (a server URL; a fresh database is created on it and
dropped after) or an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from grpclib.client import Channel
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

import vpp_protocol as vp
from vpp_headend import Settings
from vpp_headend.convert import Row, reading_row
from vpp_headend.db.migrate import upgrade
from vpp_headend.db.telemetry_repo import COPY_TELEMETRY, copy_rows
from vpp_headend.eventloop import loop_factory
from vpp_headend.headend import Headend
from vpp_headend.serve import run
from vpp_protocol.sitefile import parse_site_file
from vpp_protocol.upb import pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
# tools/ is not a package; spawned client processes import loadgen by name from sys.path.
from loadgen import CONNECT, Raw, batch_frames, fresh_database

T = TypeVar("T")


def _batches(site: int, assets: int, readings: int, batch: int) -> list[bytes]:
    """upb-encoded TelemetryBatch frames: ``readings`` per gateway, seq 1.. per asset."""
    return batch_frames([f"g{site}-a{a}" for a in range(assets)], readings, batch)


def _register(site: int, assets: int) -> bytes:
    msg = pb.AgentMessage()
    msg.register.site_id = f"g{site}"
    msg.register.protocol_version = vp.PROTOCOL_VERSION
    for a in range(assets):
        d = msg.register.assets.add()
        d.asset_id = f"g{site}-a{a}"
        d.kind = pb.ASSET_KIND_BESS
        d.capacity_kw = 100.0
    return bytes(msg.SerializeToString())


# -- the client process ---------------------------------------------------------------------


async def _gateway(port: int, site: int, frames: list[bytes], assets: int) -> None:
    channel = Channel("127.0.0.1", port)
    try:
        async with channel.request(
            CONNECT, Cardinality.STREAM_STREAM, Raw, pb.HeadendMessage
        ) as stream:
            await stream.send_message(Raw(_register(site, assets)))
            first = await stream.recv_message()
            assert first is not None
            assert first.WhichOneof("body") == "register_result"
            for i, frame in enumerate(frames):
                await stream.send_message(Raw(frame))
                if i % 8 == 0:
                    await asyncio.sleep(0)  # let the other gateways' sends interleave
            await stream.end()
            async for _ in stream:
                pass
    except Exception:
        pass  # the headend closes the streams at the end of the run
    finally:
        channel.close()


def _client_main(
    port: int, gateways: int, assets: int, readings: int, batch: int, ready: Any, go: Any
) -> None:
    frames = {g: _batches(g, assets, readings, batch) for g in range(gateways)}
    ready.set()
    go.wait()

    async def main() -> None:
        await asyncio.gather(*(_gateway(port, g, frames[g], assets) for g in range(gateways)))

    _run(main())


def _run(coro: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run ``coro`` on the event loop a headend uses (``--loop``; uvloop where installed):
    the floor, the headend and the clients all on the same one."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(coro)


# -- measurements ---------------------------------------------------------------------------


def decode_rates(frames: list[bytes], readings: int) -> tuple[float, float, float]:
    """Readings/s decoding the frames: betterproto2; upb; upb plus reading every field of
    every reading (what ingest does before COPY). Best of 3."""
    best = [float("inf")] * 3
    for _ in range(3):
        t = time.perf_counter()
        for f in frames:
            vp.AgentMessage.parse(f)
        best[0] = min(best[0], time.perf_counter() - t)
        t = time.perf_counter()
        for f in frames:
            pb.AgentMessage.FromString(f)
        best[1] = min(best[1], time.perf_counter() - t)
        t = time.perf_counter()
        for f in frames:
            sink = [
                (r.asset_id, r.seq, r.ts.seconds, r.ts.nanos, r.power_kw, r.soc_pct, r.status,
                 r.setpoint_kw, r.setpoint_id)
                for r in pb.AgentMessage.FromString(f).telemetry_batch.readings
            ]  # fmt: skip
            del sink
        best[2] = min(best[2], time.perf_counter() - t)
    bp, upb, upb_fields = (readings / b for b in best)
    return bp, upb, upb_fields


class _FloorService:
    """A grpclib servicer that only decodes frames and reads every reading's fields."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.done = asyncio.Event()

    def __mapping__(self) -> dict[str, Handler]:
        return {CONNECT: Handler(self.connect, Cardinality.STREAM_STREAM, pb.AgentMessage, Raw)}

    async def connect(self, stream: Stream[Any, Raw]) -> None:
        reply = pb.HeadendMessage()
        reply.register_result.session_id = str(uuid.uuid4())
        first = await stream.recv_message()
        assert first is not None
        await stream.send_message(Raw(reply.SerializeToString()))
        async for frame in stream:
            sink = [
                (r.asset_id, r.seq, r.ts.seconds, r.ts.nanos, r.power_kw, r.soc_pct, r.status,
                 r.setpoint_kw, r.setpoint_id)
                for r in frame.telemetry_batch.readings
            ]  # fmt: skip
            self.count += len(sink)
            if self.count >= self.total:
                self.done.set()


async def floor(readings: int, assets: int, batch: int, timeout: float) -> dict[str, float]:
    """Readings/s through one grpclib stream into a decode-only server (the floor)."""
    service = _FloorService(readings)
    server = Server([service])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await server.start(sock=sock)
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    client = ctx.Process(target=_client_main, args=(port, 1, assets, readings, batch, ready, go))
    client.start()
    try:
        await asyncio.to_thread(ready.wait)
        t0, cpu0 = time.perf_counter(), time.process_time()
        go.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await service.done.wait()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await asyncio.to_thread(client.join, 30)
    finally:
        server.close()
        await server.wait_closed()
    return {
        "count": service.count,
        "elapsed": elapsed,
        "rate": service.count / elapsed,
        "cpu_us": 1e6 * cpu / max(service.count, 1),
    }


def _site_yaml(site: int, assets: int) -> str:
    lines = [f"site_id: g{site}", "assets:"]
    for a in range(assets):
        lines += [f"  - asset_id: g{site}-a{a}", "    kind: bess", "    capacity_kw: 100"]
    return "\n".join(lines) + "\n"


async def _register_site(url: str, assets: int) -> None:
    """Register site g0 (the dispatch target) without the ingest runs."""
    async with Headend.open(Settings(database_url=url, http_port=0, grpc_port=0)) as headend:
        await headend.registry.import_site(parse_site_file(_site_yaml(0, assets)))


async def ingest(url: str, args: argparse.Namespace) -> dict[str, float]:
    total = args.gateways * args.readings
    await _truncate(url)
    settings = Settings(database_url=url, http_port=0, grpc_port=0, heartbeat_interval_s=30)
    async with Headend.open(settings) as headend:
        for g in range(args.gateways):
            await headend.registry.import_site(parse_site_file(_site_yaml(g, args.assets)))
        ctx = mp.get_context("spawn")
        ready, go = ctx.Event(), ctx.Event()
        client = ctx.Process(
            target=_client_main,
            args=(
                headend.grpc_port,
                args.gateways,
                args.assets,
                args.readings,
                args.batch,
                ready,
                go,
            ),
        )
        client.start()
        await asyncio.to_thread(ready.wait)
        registry = headend.metrics.registry

        def stored_rows() -> float:
            return registry.get_sample_value("vpp_telemetry_rows_stored_total") or 0.0

        t0, cpu0 = time.perf_counter(), time.process_time()
        go.set()
        deadline = t0 + args.timeout
        while stored_rows() < total and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls a counter
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        stored = stored_rows()
        await asyncio.to_thread(client.join, 30)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        in_db = int(row[0]) if row else 0
    return {
        "stored": stored,
        "in_db": in_db,
        "elapsed": elapsed,
        "rate": stored / elapsed,
        "cpu_us": 1e6 * cpu / max(stored, 1),
    }


async def copy_ceiling(url: str, args: argparse.Namespace) -> dict[str, float]:
    """The database's side alone: the same readings, already rows, written by the
    headend's own COPY (`db.telemetry_repo.copy_rows`, batches of ``ingest_batch_rows``, a commit
    each) on one connection — no gRPC, no decode. What end to end could reach at best
    with PostgreSQL on these cores."""
    now = datetime.now(UTC)
    rows: list[Row] = []
    for g in range(args.gateways):
        for f in _batches(g, args.assets, args.readings, args.batch):
            for r in pb.AgentMessage.FromString(f).telemetry_batch.readings:
                row = reading_row(r, r.asset_id, now)
                assert not isinstance(row, str), row
                rows.append(row)
    await _truncate(url)
    step = Settings().ingest_batch_rows
    async with await psycopg.AsyncConnection.connect(url) as conn:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for start in range(0, len(rows), step):
            async with conn.cursor() as cur:
                await copy_rows(cur, COPY_TELEMETRY, rows[start : start + step])
            await conn.commit()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await _truncate(url)
    return {
        "rate": len(rows) / elapsed,
        "elapsed": elapsed,
        "count": len(rows),
        "cpu_us": 1e6 * cpu / len(rows),
    }


async def _truncate(url: str) -> None:
    """Empty the telemetry tables between runs (each run starts from seq 1)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("TRUNCATE telemetry, telemetry_latest")


async def _acking_agent(port: int, stop: asyncio.Event) -> None:
    channel = Channel("127.0.0.1", port)
    try:
        async with channel.request(
            CONNECT, Cardinality.STREAM_STREAM, vp.AgentMessage, vp.HeadendMessage
        ) as stream:
            await stream.send_message(
                vp.AgentMessage(
                    register=vp.Register(
                        site_id="g0",
                        asset_id="",
                        agent_version="bench",
                        protocol_version=1,
                        assets=[vp.AssetDescriptor(asset_id="g0-a0", kind=vp.AssetKind.BESS)],
                    )
                )
            )
            while not stop.is_set():
                msg = await stream.recv_message()
                if msg is None:
                    return
                if msg.setpoint is not None:
                    await stream.send_message(
                        vp.AgentMessage(
                            setpoint_ack=vp.SetpointAck(
                                setpoint_id=msg.setpoint.setpoint_id,
                                asset_id="g0-a0",
                                state=vp.AckState.APPLIED,
                                reason="",
                                ts=datetime.now(UTC),
                                applied_kw=msg.setpoint.power_kw,
                                allocations=[],
                                clamped=False,
                            )
                        )
                    )
    except Exception:
        pass
    finally:
        channel.close()


async def dispatch_latency(url: str, n: int) -> list[float]:
    settings = Settings(database_url=url, http_port=0, grpc_port=0, heartbeat_interval_s=30)
    ports: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    server = asyncio.create_task(
        run(settings, on_ready=lambda h, g: ports.set_result((h, g)), stop=stop)
    )
    http_port, grpc_port = await asyncio.wait_for(ports, 30)
    agent = asyncio.create_task(_acking_agent(grpc_port, stop))
    out: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            while (await http.get("/gateways")).json()["items"][0]["connected"] is not True:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            for i in range(n):
                t = time.perf_counter()
                resp = await http.post("/dispatch", json={"asset_id": "g0-a0", "power_kw": i % 50})
                dispatch_id = resp.json()["dispatch_id"]
                while (await http.get(f"/dispatch/{dispatch_id}")).json()["state"] != "applied":
                    pass
                out.append(time.perf_counter() - t)
    finally:
        stop.set()
        await asyncio.gather(server, agent, return_exceptions=True)
    return out


@contextmanager
def database() -> Iterator[str]:
    server = os.environ.get("VPP_BENCH_DATABASE_URL")
    if server:
        with fresh_database(server) as url:
            yield url
        return
    from vpp_headend.db.embedded import start_embedded

    with tempfile.TemporaryDirectory() as tmp:
        embedded = start_embedded(Path(tmp) / "pg")
        try:
            yield embedded.url
        finally:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--assets", type=int, default=10, help="per gateway")
    parser.add_argument("--readings", type=int, default=30_000, help="per gateway")
    parser.add_argument("--batch", type=int, default=100, help="readings per TelemetryBatch")
    parser.add_argument("--dispatches", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=45.0)
    parser.add_argument(
        "--dispatch-only", action="store_true", help="only the dispatch latency (part 2)"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop of the floor server and the headend (auto: uvloop where installed)",
    )
    args = parser.parse_args()
    if args.dispatch_only:
        load_before = os.getloadavg()
        with database() as url:
            upgrade(url)
            _run(_register_site(url, args.assets), args.loop)
            _print_latency(_run(dispatch_latency(url, args.dispatches), args.loop))
        print(
            f"  load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (2 cores)"
        )
        return

    total = args.gateways * args.readings
    frames = _batches(0, args.assets, args.readings, args.batch)
    bp_rate, upb_rate, upb_fields_rate = decode_rates(frames, args.readings)
    load_before = os.getloadavg()
    floor_fig = _run(floor(total, args.assets, args.batch, args.timeout), args.loop)
    one = argparse.Namespace(**{**vars(args), "gateways": 1, "readings": total})
    with database() as url:
        upgrade(url)
        ceiling = _run(copy_ceiling(url, args), args.loop)
        figures = _run(ingest(url, args), args.loop)
        single = _run(ingest(url, one), args.loop)
        latencies = _run(dispatch_latency(url, args.dispatches), args.loop)

    print(
        f"headend ingest: {total} readings in TelemetryBatch of {args.batch} "
        f"({args.assets} assets per gateway), clients in a separate process, "
        f"{'uvloop' if loop_factory(args.loop) else 'asyncio'} event loop; "
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (2 cores)"
    )
    print(
        f"  (a) floor, decode only, one grpclib stream: {floor_fig['rate']:>10,.0f} readings/s "
        f"({floor_fig['count']:.0f} in {floor_fig['elapsed']:.2f} s; "
        f"server {floor_fig['cpu_us']:.2f} CPU-us/reading)"
    )
    print(
        f"  (b) end to end, {args.gateways:>2} gateways -> PostgreSQL:  "
        f"{figures['rate']:>10,.0f} readings/s "
        f"({figures['stored']:.0f} stored in {figures['elapsed']:.2f} s; "
        f"{figures['in_db']} rows in telemetry; headend {figures['cpu_us']:.2f} CPU-us/reading)"
    )
    print(
        f"  (b) end to end,  1 gateway  -> PostgreSQL:  {single['rate']:>10,.0f} readings/s "
        f"({single['stored']:.0f} stored in {single['elapsed']:.2f} s; "
        f"headend {single['cpu_us']:.2f} CPU-us/reading)"
    )
    print(
        f"  (c) ratio b/a: {args.gateways} gateways {figures['rate'] / floor_fig['rate']:.2f}, "
        f"1 gateway {single['rate'] / floor_fig['rate']:.2f}  (target >= 0.8); "
        f"CPU per reading, floor / headend: {floor_fig['cpu_us'] / figures['cpu_us']:.2f}"
    )
    print(
        f"  (d) PostgreSQL alone: the same rows by the headend's COPY, one connection: "
        f"{ceiling['rate']:>10,.0f} rows/s ({ceiling['count']:.0f} in "
        f"{ceiling['elapsed']:.2f} s; client {ceiling['cpu_us']:.2f} CPU-us/row)"
    )
    print(
        f"  (e) ratio b/d: {args.gateways} gateways {figures['rate'] / ceiling['rate']:.2f}, "
        f"1 gateway {single['rate'] / ceiling['rate']:.2f}  (end to end against the "
        "database alone on these cores)"
    )
    print(f"  bare decode, betterproto2:                  {bp_rate:>10,.0f} readings/s")
    print(f"  bare decode, upb:                           {upb_rate:>10,.0f} readings/s")
    print(f"  bare decode + field access, upb:            {upb_fields_rate:>10,.0f} readings/s")
    print(f"  end to end / betterproto2 decode:           {figures['rate'] / bp_rate:>10.2f}")
    print(
        f"  end to end / upb decode + field access:     {figures['rate'] / upb_fields_rate:>10.3f}"
    )
    _print_latency(latencies)


def _print_latency(latencies: list[float]) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(
        f"dispatch POST -> APPLIED (idle, {len(ms)} dispatches, REST polled): "
        f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms"
    )


if __name__ == "__main__":
    main()
