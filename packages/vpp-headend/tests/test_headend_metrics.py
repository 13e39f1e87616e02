"""/metrics at fleet size: per-asset lag rendered without stalling the loop, the loop's own
lag measured, and the event loop a process runs on."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from headend_waits import eventually
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vpp_headend.eventloop import loop_factory, running_loop_name, uvloop_available
from vpp_headend.loopwatch import LoopWatch
from vpp_headend.metrics import Metrics

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _families(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text.decode())
    }


async def test_per_asset_lag_is_valid_exposition_with_escaped_ids() -> None:
    latest = [
        ("pv-1", NOW - timedelta(seconds=2.5)),
        ('odd"id\\with\nbreaks', NOW - timedelta(seconds=10)),
        ("from-the-future", NOW + timedelta(seconds=3)),  # clock skew: lag is 0, not negative
    ]
    m = Metrics()
    m.add_lag_source(lambda: latest, clock=lambda: NOW)
    m.gateways_connected.set(3)
    fams = _families(await m.render())
    assert fams["vpp_gateways_connected"] == [({}, 3.0)]
    lag = {labels["asset_id"]: value for labels, value in fams["vpp_telemetry_lag_seconds"]}
    assert lag == {"pv-1": 2.5, 'odd"id\\with\nbreaks': 10.0, "from-the-future": 0.0}


async def test_scrape_of_a_large_fleet_lets_other_work_run() -> None:
    # 60,000 assets (6,000 gateways x 10): the render gives the loop its turn between
    # chunks, so streams and requests keep moving while Prometheus scrapes.
    latest = [
        (f"site-{i // 10:05d}-a{i % 10}", NOW - timedelta(seconds=i % 9)) for i in range(60_000)
    ]
    m = Metrics()
    m.add_lag_source(lambda: latest, clock=lambda: NOW)
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
    samples = _families(text)["vpp_telemetry_lag_seconds"]
    assert len(samples) == 60_000
    assert samples[11] == ({"asset_id": "site-00001-a1"}, 2.0)


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
