"""/metrics: per-site (and, on request, per-asset) last-reading times rendered at fleet size
without stalling the loop, the telemetry lag histogram, the loop's own lag, the event loop
a process runs on, build and process metrics, one charset; and gRPC health by name."""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from headend_waits import eventually
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import vpp_headend
import vpp_protocol as vp
from vpp_headend import Settings
from vpp_headend.eventloop import loop_factory, running_loop_name, uvloop_available
from vpp_headend.loopwatch import LoopWatch
from vpp_headend.metrics import Metrics

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SITE_TS = "vpp_site_last_reading_timestamp_seconds"
ASSET_TS = "vpp_asset_last_reading_timestamp_seconds"


def _families(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text.decode())
    }


class _Times:
    """A `ReadingTimes` over fixed rows (what `Ingest.reading_times` holds)."""

    def __init__(self, assets: list[tuple[str, str, datetime]]) -> None:
        self.assets = assets

    async def by_site(self) -> list[tuple[str, datetime]]:
        newest: dict[str, datetime] = {}
        for site_id, _, ts in self.assets:
            newest[site_id] = max(ts, newest.get(site_id, ts))
        return list(newest.items())

    async def by_asset(self) -> list[tuple[tuple[str, str], datetime]]:
        return [((site_id, asset_id), ts) for site_id, asset_id, ts in self.assets]


async def test_last_reading_times_per_site_and_per_asset_only_when_asked() -> None:
    times = _Times(
        [
            ("site-a", "pv-1", NOW - timedelta(seconds=2.5)),
            ("site-a", "pv-2", NOW - timedelta(seconds=10)),
            ('odd"site', 'odd"id\\with\nbreaks', NOW + timedelta(seconds=3)),
        ]
    )
    default = Metrics()
    default.add_reading_times(times)
    default.gateways_connected.set(3)
    fams = _families(await default.render())
    assert fams["vpp_gateways_connected"] == [({}, 3.0)]
    site = {labels["site_id"]: value for labels, value in fams[SITE_TS]}
    assert site == {
        "site-a": (NOW - timedelta(seconds=2.5)).timestamp(),
        'odd"site': (NOW + timedelta(seconds=3)).timestamp(),
    }
    assert ASSET_TS not in fams  # 100,000 assets would be 100,000 series: opt-in

    per_asset = Metrics()
    per_asset.add_reading_times(times, per_asset=True)
    fams = _families(await per_asset.render())
    assets = {(s["site_id"], s["asset_id"]): value for s, value in fams[ASSET_TS]}
    assert assets == {(site_id, asset_id): ts.timestamp() for site_id, asset_id, ts in times.assets}


def test_lag_histogram_observes_each_reading_once() -> None:
    m = Metrics()
    m.telemetry_lag.observe_since(
        NOW, [NOW - timedelta(seconds=s) for s in (0.1, 0.5, 3, 45, 7200)] + [NOW + timedelta(1)]
    )
    m.telemetry_lag.observe_since(NOW, [NOW - timedelta(seconds=1)])
    r = m.registry
    assert r.get_sample_value("vpp_telemetry_lag_seconds_count") == 7
    assert r.get_sample_value("vpp_telemetry_lag_seconds_sum") == pytest.approx(7249.6)
    cumulative = {
        le: r.get_sample_value("vpp_telemetry_lag_seconds_bucket", {"le": le})
        for le in ("0.25", "0.5", "1.0", "5.0", "60.0", "3600.0", "+Inf")
    }
    # a reading from a clock running ahead counts as 0 s; 0.5 s falls in le="0.5"
    assert cumulative == {
        "0.25": 2,
        "0.5": 3,
        "1.0": 4,
        "5.0": 5,
        "60.0": 6,
        "3600.0": 6,
        "+Inf": 7,
    }


async def test_scrape_of_a_large_fleet_lets_other_work_run() -> None:
    # 60,000 assets (6,000 gateways x 10), per asset: the render gives the loop its turn
    # between chunks, so streams and requests keep moving while Prometheus scrapes.
    times = _Times(
        [
            (f"site-{i // 10:05d}", f"site-{i // 10:05d}-a{i % 10}", NOW - timedelta(seconds=i % 9))
            for i in range(60_000)
        ]
    )
    m = Metrics()
    m.add_reading_times(times, per_asset=True)
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)  # a turn of the loop is what is counted

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)  # one turn: the task has started (ticks counted from here)
    ticks = 0
    text = await m.render()
    task.cancel()
    assert ticks >= 10  # ran between the chunks, not only after the whole render
    fams = _families(text)
    assert len(fams[SITE_TS]) == 6_000
    samples = fams[ASSET_TS]
    assert len(samples) == 60_000
    expected = (NOW - timedelta(seconds=2)).timestamp()
    assert samples[11] == ({"site_id": "site-00001", "asset_id": "site-00001-a1"}, expected)


async def test_loop_lag_shows_a_blocked_loop() -> None:
    registry = CollectorRegistry()
    watch = LoopWatch(registry, interval_s=0.02)

    def samples() -> float:
        return registry.get_sample_value("vpp_event_loop_lag_seconds_count") or 0.0

    watch.start()
    try:
        await eventually(lambda: samples() >= 5, 5, "the loop's lag was not sampled")
        before = samples()
        # The blocked loop is the behaviour measured: no injected clock can stand in.
        time.sleep(0.3)  # noqa: ASYNC251 - holds the loop: the timer due meanwhile runs late
        await eventually(lambda: samples() > before, 5, "no sample after the block")
    finally:
        watch.stop()
    text = generate_latest(registry).decode()
    buckets = {
        s.labels["le"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "vpp_event_loop_lag_seconds"
        for s in f.samples
        if s.name.endswith("_bucket")
    }
    assert buckets["+Inf"] >= 5
    assert buckets["0.25"] < buckets["+Inf"]  # one sample waited longer than 0.25 s
    assert buckets["0.01"] >= buckets["+Inf"] - 2  # the others were on time
    assert f'vpp_event_loop_info{{loop="{running_loop_name()}"}} 1.0' in text


def test_loop_factory_choices() -> None:
    assert loop_factory("asyncio") is None
    with pytest.raises(ValueError, match="event_loop: must be one of auto, uvloop, asyncio"):
        loop_factory("trio")
    if not uvloop_available():  # pragma: no cover - uvloop is a dependency off Windows
        pytest.skip("uvloop is not installed here")
    factory = loop_factory("auto")
    assert factory is not None

    async def name() -> str:
        return running_loop_name()

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(name()) == "uvloop"
    with asyncio.Runner(loop_factory=loop_factory("asyncio")) as runner:
        assert runner.run(name()) == "asyncio"


# -- through a real headend ---------------------------------------------------------------


async def _scrape(running: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = await running.http.get("/metrics")
    assert resp.status_code == 200, resp.text
    return _families(resp.content)


async def test_metrics_answer_with_one_charset_build_and_process_metrics(running) -> None:
    resp = await running.http.get("/metrics")
    assert resp.headers.get_list("content-type") == ["text/plain; version=0.0.4; charset=utf-8"]
    fams = _families(resp.content)
    [(build, one)] = fams["vpp_headend_build_info"]
    assert one == 1.0
    assert build["version"] == vpp_headend.__version__
    assert build["python"] == platform.python_version()
    assert build["protocol_version"] == str(vp.PROTOCOL_VERSION)
    assert fams["python_info"][0][1] == 1.0
    if sys.platform == "linux":  # the process collector reads /proc
        [(_, rss)] = fams["process_resident_memory_bytes"]
        assert rss > 10_000_000
        assert "process_cpu_seconds" in fams
    assert fams["vpp_database_up"] == [({}, 1.0)]
    assert fams["vpp_ingest_queue_capacity_rows"] == [({}, 50_000.0)]
    assert "vpp_telemetry_rows_per_second" not in resp.text  # rates are PromQL's: rate()


async def test_site_freshness_and_lag_from_stored_readings(
    start_headend, agents, site_yaml, eventually
) -> None:
    running = await start_headend()
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1", "a-2"])
    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    agent.send_batch(
        [
            agent.telemetry("a-1", ts=newest - timedelta(seconds=30)),
            agent.telemetry("a-2", ts=newest),
            agent.telemetry("a-1", ts=newest - timedelta(seconds=20)),
        ]
    )
    fams: dict[str, list[tuple[dict[str, str], float]]] = {}

    async def stored() -> bool:
        nonlocal fams
        fams = await _scrape(running)
        return ({}, 3.0) in fams["vpp_telemetry_rows_stored"]  # _total (and _created)

    await eventually(stored, 5, lambda: f"3 readings never stored: {fams}")
    assert fams[SITE_TS] == [({"site_id": "site-a"}, newest.timestamp())]  # site-b: no reading
    assert ASSET_TS not in fams
    lag = {s["le"]: v for s, v in fams["vpp_telemetry_lag_seconds"] if "le" in s}
    assert lag["0.5"] == 0.0  # every reading was at least a second old when stored
    assert lag["30.0"] == 2.0  # 1 s and 21 s old; the third 31 s old
    assert lag["+Inf"] == 3.0
    await agent.close()
    await running.stop()

    # Per asset on request (the setting): labelled with the site too. A site that has not
    # reported since the restart still shows its last reading, read from the database.
    again = await start_headend(metrics_per_asset=True)
    fams = await _scrape(again)
    assert fams[SITE_TS] == [({"site_id": "site-a"}, newest.timestamp())]
    assert ASSET_TS in fams
    agent = await agents(again.grpc_port, "site-b")
    await agent.register(["b-1"])
    agent.send(telemetry=agent.telemetry("b-1", ts=newest))

    async def per_asset() -> bool:
        nonlocal fams
        fams = await _scrape(again)
        return bool(fams[ASSET_TS])

    await eventually(per_asset, 5, lambda: f"no per-asset series: {fams}")
    assert fams[ASSET_TS] == [({"site_id": "site-b", "asset_id": "b-1"}, newest.timestamp())]
    assert {s["site_id"]: v for s, v in fams[SITE_TS]} == {
        "site-a": newest.timestamp(),
        "site-b": newest.timestamp(),
    }


def test_per_asset_metrics_setting_from_the_environment() -> None:
    assert Settings().metrics_per_asset is False
    assert Settings.from_env({"VPP_METRICS_PER_ASSET": "true"}).metrics_per_asset is True
    assert Settings.from_env({"VPP_METRICS_PER_ASSET": "0"}).metrics_per_asset is False


async def test_grpc_health_answers_for_the_server_and_the_agent_service(running) -> None:
    channel = Channel("127.0.0.1", running.grpc_port)
    try:
        health = HealthStub(channel)
        for service in ("", "vpp.agent.v1.AgentService"):
            reply = await health.Check(HealthCheckRequest(service=service))
            assert reply.status == HealthCheckResponse.SERVING, service
        with pytest.raises(GRPCError) as unknown:
            await health.Check(HealthCheckRequest(service="vpp.agent.v1.NoSuchService"))
        assert unknown.value.status == Status.NOT_FOUND
    finally:
        channel.close()
