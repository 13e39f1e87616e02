"""GET /events (DESIGN.md §5, "Live events"): Server-Sent Events of telemetry, dispatch
transitions and gateway connects, read from the database, so a browser on one replica
sees what happens on another; filtered by site, bounded per client, and freed when the
client goes. Streams go through a real uvicorn (`headend_sse`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from headend_sse import Event, open_events, serve_http
from headend_waits import eventually

import vpp_protocol as vp
from vpp_headend import create_app, serve

FAST_EVENTS = {"events_interval_s": 0.1}


def _is(kind: str, **fields: Any) -> Callable[[Event], bool]:
    return lambda e: e.event == kind and all(e.data.get(k) == v for k, v in fields.items())


def _telemetry_of(asset_id: str, power_kw: float) -> Callable[[Event], bool]:
    def match(e: Event) -> bool:
        return e.event == "telemetry" and any(
            a["asset_id"] == asset_id and a["power_kw"] == power_kw for a in e.data["assets"]
        )

    return match


@contextlib.asynccontextmanager
async def _http(running: Any) -> AsyncIterator[str]:
    async with serve_http(create_app(running.headend.settings, running.headend)) as url:
        yield url


async def test_a_browser_on_one_replica_sees_what_happens_on_the_other(
    start_headend: Any,
    agents: Any,
    site_yaml: Callable[..., str],
) -> None:
    a = await start_headend(replica="replica-a", **FAST_EVENTS)
    b = await start_headend(replica="replica-b", **FAST_EVENTS)
    await a.import_site(site_yaml("ev-x", ["ev-x-1", "ev-x-2"]))
    async with _http(b) as url, open_events(url, [("site_id", "ev-x")]) as sse:
        hello = await sse.until(_is("hello"), what="hello")
        assert hello.data == {
            "replica": "replica-b",
            "interval_s": 0.1,
            "topics": ["dispatch", "gateway", "telemetry"],
            "sites": ["ev-x"],
        }

        # The gateway's stream is on A; B's client sees it connect.
        gw = await agents(a.grpc_port, "ev-x")
        await gw.register(["ev-x-1", "ev-x-2"])
        up = await sse.until(_is("gateway", site_id="ev-x", connected=True), what="connect")
        assert up.data["replica"] == "replica-a"
        assert up.data["assets_served"] == ["ev-x-1", "ev-x-2"]
        assert up.data["agent_version"] == "test-agent 0"

        # A reading taken on A reaches B's client, with the site's total.
        gw.send_batch([gw.telemetry("ev-x-1", 7.5), gw.telemetry("ev-x-2", 2.5)])
        reading = await sse.until(_telemetry_of("ev-x-1", 7.5), what="the reading")
        assert reading.data["site_id"] == "ev-x"
        [first] = [x for x in reading.data["assets"] if x["asset_id"] == "ev-x-1"]
        assert first["seq"] == 1
        assert first["status"] == "ok"
        if len(reading.data["assets"]) == 2:  # both readings landed in one flush
            assert reading.data["total_kw"] == 10.0

        # A dispatch POSTed to B and applied on A: its transitions, in order.
        body = await b.dispatch(asset_id="ev-x-1", power_kw=5.0)
        sp = await gw.setpoint()
        gw.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="ev-x-1", applied_kw=5.0)
        await b.wait_state(body["dispatch_id"], "applied")
        stored = (await b.dispatch_state(body["dispatch_id"]))["events"]
        mine = _is("dispatch", dispatch_id=body["dispatch_id"])
        got = [await sse.until(mine, what=f"transition {i}") for i in range(len(stored))]
        assert [(e.data["state"], e.data["scope"], e.data["scope_id"]) for e in got] == [
            (e["state"], e["scope"], e["scope_id"]) for e in stored
        ]
        assert got[-1].data["state"] == "applied"
        ids = [e.data["event_id"] for e in got]
        assert ids == sorted(ids)
        assert {(e.data["target_kind"], e.data["target_id"]) for e in got} == {("asset", "ev-x-1")}

        # The gateway goes: B's client sees it disconnected, then back (a new session).
        await gw.close()
        down = await sse.until(_is("gateway", site_id="ev-x", connected=False), what="down")
        assert down.data["disconnected_at"] is not None
        assert down.data["reason"]
        again = await agents(a.grpc_port, "ev-x")
        await again.register(["ev-x-1", "ev-x-2"])
        back = await sse.until(_is("gateway", site_id="ev-x", connected=True), what="back")
        assert back.data["connected_since"] > up.data["connected_since"]


async def test_a_site_subscription_gets_nothing_of_other_sites(
    start_headend: Any,
    agents: Any,
    site_yaml: Callable[..., str],
) -> None:
    running = await start_headend(**FAST_EVENTS)
    await running.import_site(site_yaml("ev-s1", ["ev-s1-a"], groups=["ev-g"]))
    await running.import_site(site_yaml("ev-s2", ["ev-s2-a"]))
    async with (
        _http(running) as url,
        open_events(url, [("site_id", "ev-s1")]) as one,
        open_events(url) as every,
    ):
        await one.until(_is("hello"), what="hello")
        await every.until(_is("hello"), what="hello")
        # Activity on ev-s2 only; the unfiltered client sees all of it.
        other = await agents(running.grpc_port, "ev-s2")
        await other.register(["ev-s2-a"])
        other.send_batch([other.telemetry("ev-s2-a", 3.0)])
        body = await running.dispatch(site_id="ev-s2", power_kw=1.0)
        sp = await other.setpoint()
        other.ack(sp.setpoint_id, vp.AckState.APPLIED, allocations={"ev-s2-a": 1.0})

        def batch_has(site_id: str) -> Callable[[Event], bool]:
            return lambda e: (
                e.event == "telemetry_batch"
                and any(s["site_id"] == site_id and s["total_kw"] == 3.0 for s in e.data["sites"])
            )

        await every.until_all(
            [
                _is("gateway", site_id="ev-s2", connected=True),
                batch_has("ev-s2"),
                _is("dispatch", dispatch_id=body["dispatch_id"], state="applied", scope="dispatch"),
            ],
            what="ev-s2's connect, reading and dispatch",
        )

        # Then on ev-s1: the filtered client's first events are these.
        mine = await agents(running.grpc_port, "ev-s1")
        await mine.register(["ev-s1-a"])
        mine.send_batch([mine.telemetry("ev-s1-a", 4.0)])
        group = await running.dispatch(group_id="ev-g", power_kw=2.0)
        sp = await mine.setpoint()
        mine.ack(sp.setpoint_id, vp.AckState.APPLIED, allocations={"ev-s1-a": 2.0})
        await one.until_all(
            [
                _telemetry_of("ev-s1-a", 4.0),
                _is(
                    "dispatch", dispatch_id=group["dispatch_id"], state="applied", scope="dispatch"
                ),
                _is("gateway", site_id="ev-s1", connected=True),
            ],
            what="ev-s1's connect, reading and group dispatch",
        )
        for e in one.seen:
            assert "ev-s2" not in str(e.data), e
            assert e.data.get("dispatch_id") != body["dispatch_id"], e


async def test_the_replica_holding_the_gateway_sends_a_reading_before_it_is_flushed(
    start_headend: Any,
    agents: Any,
    site_yaml: Callable[..., str],
) -> None:
    """A stored reading is in the memory of the replica that holds the gateway at once,
    and in ``telemetry_latest`` only at the next flush (every 30 s here: not during the
    test). A browser on that replica gets it from memory; one on another replica (same
    database) has nothing of it until the flush — here A's, when A stops."""
    slow_flush = {"latest_flush_interval_s": 30.0, **FAST_EVENTS}
    a = await start_headend(replica="replica-a", **slow_flush)
    b = await start_headend(replica="replica-b", **slow_flush)
    await a.import_site(site_yaml("ev-h", ["ev-h-1", "ev-h-2"]))
    watch = [("site_id", "ev-h"), ("topics", "telemetry")]
    async with (
        _http(a) as url_a,
        _http(b) as url_b,
        open_events(url_a, watch) as on_a,
        open_events(url_b, watch) as on_b,
    ):
        await on_a.until(_is("hello"), what="hello on A")
        await on_b.until(_is("hello"), what="hello on B")
        gw = await agents(a.grpc_port, "ev-h")
        await gw.register(["ev-h-1", "ev-h-2"])
        gw.send_batch([gw.telemetry("ev-h-1", 6.5)])

        got = await on_a.until(_telemetry_of("ev-h-1", 6.5), what="the reading on A")
        assert got.data["site_id"] == "ev-h"
        assert [x["seq"] for x in got.data["assets"]] == [1]
        assert got.data["total_kw"] == 6.5
        # B has the table, which holds no reading of the site yet (as its REST says).
        site_on_b = (await b.http.get("/sites/ev-h/telemetry")).json()
        assert site_on_b["total"]["assets_reporting"] == 0

        await a.stop()  # flushes the latest readings
        flushed = await on_b.until(_telemetry_of("ev-h-1", 6.5), what="the reading on B")
        assert flushed.data["total_kw"] == 6.5
        assert not [e for e in on_b.seen if e.event == "telemetry" and e is not flushed]


async def test_a_stream_is_not_timed_as_a_request(running: Any) -> None:
    # A stream's duration is how long a browser stayed: one would wreck every latency
    # quantile of the request histogram.
    async with _http(running) as url:
        async with open_events(url, [("topics", "gateway")]) as sse:
            await sse.until(_is("hello"), what="hello")
        assert (await running.http.get("/sites")).status_code == 200
    # The server has stopped: the stream's request is over, timed or not.
    timed = [
        line
        for line in (await running.http.get("/metrics")).text.splitlines()
        if line.startswith("vpp_http_request_duration_seconds_count{")
    ]
    assert any('route="/sites"' in line for line in timed), timed
    assert not any('route="/events"' in line for line in timed), timed


@contextlib.asynccontextmanager
async def _busy_site(
    running: Any, agents: Any, site_yaml: Callable[..., str]
) -> AsyncIterator[None]:
    """A gateway of site ``ev-b`` (50 assets) reporting every 50 ms while in the block:
    each ``telemetry`` event of the site is ~10 KB, so a client that stops reading fills
    the server's socket buffers in a few seconds."""
    assets = [f"ev-b-{i:02d}" for i in range(50)]
    await running.import_site(site_yaml("ev-b", assets))
    gw = await agents(running.grpc_port, "ev-b")
    await gw.register(assets)
    sending = True

    async def keep_sending() -> None:
        power = 0.0
        while sending:
            power += 1.0
            gw.send_batch([gw.telemetry(a, power) for a in assets])
            await asyncio.sleep(0.05)  # the gateway's reporting period, not a wait

    sender = asyncio.create_task(keep_sending())
    try:
        yield
    finally:
        sending = False
        await sender


_STUCK = {"events_interval_s": 0.05, "events_client_queue": 8}
_BUSY = [("site_id", "ev-b"), ("topics", "telemetry")]


async def test_a_client_that_stops_reading_is_bounded_and_ingest_goes_on(
    start_headend: Any, agents: Any, site_yaml: Callable[..., str]
) -> None:
    running = await start_headend(**_STUCK)
    feed = running.headend.events

    async def latest_seq() -> int:
        resp = await running.http.get("/telemetry/ev-b-00")
        return int(resp.json()["seq"]) if resp.status_code == 200 else 0

    async with (
        _busy_site(running, agents, site_yaml),
        _http(running) as url,
        open_events(url, _BUSY, receive_buffer=65536) as sse,
    ):
        # The client reads nothing (its hello waits in the socket): its queue fills,
        # then drops; never more.
        def dropping() -> bool:
            [client] = feed.clients
            assert client.queued <= client.bound == 8
            return bool(client.dropped > 0)

        await eventually(dropping, 30, lambda: f"no drops: {feed.clients}")
        before = await latest_seq()

        async def advanced() -> bool:
            [client] = feed.clients
            assert client.queued <= client.bound
            return await latest_seq() > before

        await eventually(advanced, 10, "ingest stopped while a client was stuck")

        # Reading again, it is told how many messages it missed.
        overflow = await sse.until(_is("overflow"), 60, "overflow")
        assert sse.seen[0].event == "hello"
        assert overflow.data["dropped"] > 0
        assert feed.clients[0].dropped >= overflow.data["dropped"]
    text = (await running.http.get("/metrics")).text
    assert "vpp_events_dropped_total" in text
    assert 'vpp_events_sent_total{event="overflow"}' in text


async def test_a_client_that_stays_stuck_is_dropped_and_its_stream_ends(
    start_headend: Any, agents: Any, site_yaml: Callable[..., str]
) -> None:
    running = await start_headend(events_stall_s=0.3, **_STUCK)
    feed = running.headend.events
    async with (
        _busy_site(running, agents, site_yaml),
        _http(running) as url,
        open_events(url, _BUSY, receive_buffer=65536) as sse,
    ):
        await eventually(lambda: feed.clients and feed.clients[0].dropped > 0, 30, "no drops")
        await eventually(lambda: not feed.clients, 10, lambda: f"still fed: {feed.clients}")
        # What was already on its way arrives, then the stream ends.
        assert await sse.ended(30)
        assert sse.seen[0].event == "hello"
        assert {e.event for e in sse.seen} <= {"hello", "telemetry", "overflow"}


async def test_a_client_that_goes_frees_its_subscription_and_the_ticker_idles(
    running: Any,
) -> None:
    feed = running.headend.events
    assert not feed.running
    async with _http(running) as url:
        async with open_events(url, [("topics", "gateway,dispatch")]) as sse:
            await sse.until(_is("hello"), what="hello")
            [client] = feed.clients
            assert client.topics == ("dispatch", "gateway")
            assert client.sites is None
            assert client.live
            assert feed.running
        await eventually(lambda: not feed.clients and not feed.running, 5, "still subscribed")
        assert "vpp_events_clients 0.0" in (await running.http.get("/metrics")).text

        # Shutdown ends the streams still open.
        async with open_events(url) as sse:
            await sse.until(_is("hello"), what="hello")
            await running.stop()
            assert await sse.ended()
        assert not feed.clients


async def test_stream_headers_retry_and_keepalive(start_headend: Any) -> None:
    running = await start_headend(events_keepalive_s=0.2, **FAST_EVENTS)
    async with _http(running) as url, open_events(url, [("topics", "gateway")]) as sse:
        headers = sse.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-store"
        assert headers["x-accel-buffering"] == "no"
        await sse.until(_is("hello"), what="hello")
        assert sse.lines[0] == "retry: 3000"

        await eventually(lambda: ": keepalive" in sse.lines, 5, "no keepalive comment")


async def test_a_bad_topic_or_site_id_is_422_naming_the_field(running: Any) -> None:
    for params, field in [
        ({"topics": "telemetry,weather"}, "topics"),
        ({"topics": ""}, "topics"),
        ({"site_id": "no spaces"}, "site_id"),
        ([("site_id", "ok-1"), ("site_id", "x" * 65)], "site_id"),
        ([("site_id", f"s{i}") for i in range(101)], "site_id"),
    ]:
        resp = await running.http.get("/events", params=params)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["field"] == field
    assert not running.headend.events.clients


async def test_serve_stops_while_a_stream_is_open(settings: Any) -> None:
    # uvicorn waits for every open response before it stops: the feed ends them first.
    stop = asyncio.Event()
    ports: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve.run(
            settings.with_(**FAST_EVENTS),
            on_ready=lambda http_port, _: ports.set_result(http_port),
            stop=stop,
        )
    )
    try:
        async with asyncio.timeout(20):
            http_port = await ports
        async with open_events(f"http://127.0.0.1:{http_port}") as sse:
            await sse.until(_is("hello"), what="hello")
            stop.set()
            assert await sse.ended(10)
        async with asyncio.timeout(20):
            assert await server is True
    finally:
        stop.set()
        if not server.done():
            server.cancel()
        await asyncio.gather(server, return_exceptions=True)
