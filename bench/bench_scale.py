"""Scale figures with real headend processes (prints, asserts nothing).

1. The load harness (tools/loadgen) at fleet size: G gateways x A assets, each with its
   own gRPC connection, telemetry every ``--cadence`` s, dispatches over REST at a rate:
   readings/s stored, telemetry lag p50/p99, dispatch POST -> APPLIED p50/p99 under that
   load, headend CPU and RSS.
2. Ingest of two headend replicas vs one on the same PostgreSQL: 10 gateways flood
   pre-encoded TelemetryBatch frames (as fast as the replicas take them), spread over
   the replicas; the clock stops when every reading is a row.

    python bench/bench_scale.py [--gateways 3000] [--assets 10] [--duration 30]

Database server: ``VPP_BENCH_DATABASE_URL`` / ``VPP_TEST_DATABASE_URL`` (fresh databases
are created and dropped). Without one, this bench says so and skips.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from grpclib.client import Channel
from grpclib.const import Cardinality

from vpp_headend.db.migrate import upgrade
from vpp_protocol.upb import pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
# tools/ is not a package; spawned client processes import loadgen by name from sys.path.
import loadgen


async def _flood_one(port: int, g: int, assets: int, frames: list[bytes], go: Any) -> None:
    channel = Channel("127.0.0.1", port)
    try:
        async with channel.request(
            loadgen.CONNECT, Cardinality.STREAM_STREAM, loadgen.Raw, pb.HeadendMessage
        ) as stream:
            await stream.send_message(loadgen.Raw(loadgen.register_frame(g, assets)))
            await stream.recv_message()
            while not go.is_set():  # noqa: ASYNC110 - a multiprocessing event
                await asyncio.sleep(0.005)
            for i, frame in enumerate(frames):
                await stream.send_message(loadgen.Raw(frame))
                if i % 8 == 0:
                    await asyncio.sleep(0)
            await stream.end()
            async for _ in stream:
                pass
    except Exception:
        pass  # the headends close the streams at the end
    finally:
        channel.close()


def _flood_client(
    ports: list[int], gateways: int, assets: int, readings: int, ready: Any, go: Any
) -> None:
    frames = {
        g: loadgen.batch_frames([loadgen.asset_id(g, a) for a in range(assets)], readings, 100)
        for g in range(gateways)
    }
    ready.set()

    async def main() -> None:
        await asyncio.gather(
            *(_flood_one(ports[g % len(ports)], g, assets, frames[g], go) for g in range(gateways))
        )

    asyncio.run(main())


def flood(
    server_url: str, replicas: int, gateways: int, assets: int, readings: int
) -> dict[str, Any]:
    """Readings/s into PostgreSQL through ``replicas`` headend processes."""
    total = gateways * readings
    with loadgen.fresh_database(server_url) as url, tempfile.TemporaryDirectory() as tmp:
        upgrade(url)
        loadgen.load_registry(url, gateways, assets)
        headends = loadgen.start_headends(url, replicas, Path(tmp), {})
        try:
            ctx = mp.get_context("spawn")
            ready, go = ctx.Event(), ctx.Event()
            client = ctx.Process(
                target=_flood_client,
                args=([h.grpc_port for h in headends], gateways, assets, readings, ready, go),
            )
            client.start()
            ready.wait(120)
            time.sleep(1.0)  # every stream registered

            async def measure() -> tuple[float, float, list[float]]:
                pids = [h.proc.pid for h in headends]
                async with httpx.AsyncClient(timeout=10) as http:
                    base = await loadgen.stored_rows(http, headends)
                    cpu0 = [loadgen.cpu_s(p) for p in pids]
                    t0 = time.perf_counter()
                    go.set()
                    stored = 0.0
                    while stored < total and time.perf_counter() - t0 < 120:
                        await asyncio.sleep(0.02)
                        stored = await loadgen.stored_rows(http, headends) - base
                    elapsed = time.perf_counter() - t0
                    cpu = [loadgen.cpu_s(p) - c for p, c in zip(pids, cpu0, strict=True)]
                return stored, elapsed, cpu

            stored, elapsed, cpu = asyncio.run(measure())
            client.join(30)
        finally:
            loadgen.stop_headends(headends)
    return {
        "replicas": replicas,
        "stored": stored,
        "elapsed": elapsed,
        "rate": stored / elapsed,
        "headend_cpu_pct": [100 * c / elapsed for c in cpu],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 3,000 keeps `nox -s bench` within minutes on 2 cores (admission runs at about
    # 50-70 registers/s here); `nox -s loadgen -- -G 10000` is the full-size run.
    parser.add_argument("--gateways", type=int, default=3_000)
    parser.add_argument("--assets", type=int, default=10)
    parser.add_argument("--cadence", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--dispatch-rate", type=float, default=5.0)
    parser.add_argument("--flood-readings", type=int, default=30_000, help="per gateway")
    parser.add_argument("--json", help="write both figures as JSON here")
    args, _ = parser.parse_known_args()
    server = os.environ.get("VPP_BENCH_DATABASE_URL") or os.environ.get("VPP_TEST_DATABASE_URL")
    if not server:
        print("bench_scale: set VPP_BENCH_DATABASE_URL (a PostgreSQL server URL); skipped")
        return
    loadavg = os.getloadavg()
    print(f"scale bench on {os.cpu_count()} cores, load average {loadavg[0]:.2f} at start")
    out: dict[str, Any] = {}
    for replicas in (1, 2):
        fig = flood(server, replicas, 10, 10, args.flood_readings)
        out[f"flood_{replicas}"] = fig
        print(
            f"  ingest flood, {replicas} replica(s), 10 gateways: {fig['rate']:>10,.0f} readings/s "
            f"({fig['stored']:.0f} rows in {fig['elapsed']:.2f} s; headend CPU "
            + ", ".join(f"{x:.0f}%" for x in fig["headend_cpu_pct"])
            + ")",
            flush=True,
        )
    r1, r2 = out["flood_1"]["rate"], out["flood_2"]["rate"]
    print(f"  two replicas / one: {r2 / r1:.2f}", flush=True)
    cfg = loadgen.LoadConfig(
        gateways=args.gateways,
        assets=args.assets,
        cadence_s=args.cadence,
        duration_s=args.duration,
        dispatch_rate=args.dispatch_rate,
        client_procs=2,
    )
    report = loadgen.run(cfg, server)
    out["load"] = report.__dict__
    print(report.table(), flush=True)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
