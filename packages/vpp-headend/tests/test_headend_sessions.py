"""Sessions: takeover, heartbeats and silence, graceful shutdown, protocol errors."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import psycopg
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

import vpp_protocol as vp


async def test_newer_session_supersedes_older_and_routing_follows(
    running, agents, site_yaml, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="vpp_headend")
    await running.import_site(site_yaml("site-a", ["a-1"]))
    first = await agents(running.grpc_port, "site-a")
    r1 = await first.register(["a-1"])
    second = await agents(running.grpc_port, "site-a")
    r2 = await second.register(["a-1"])
    assert r2.epoch > r1.epoch
    assert r2.session_id != r1.session_id
    assert await first.closed_reason() == vp.CloseReason.SUPERSEDED
    await first.wait_ended()
    assert isinstance(first.error, GRPCError)
    assert first.error.status == Status.ABORTED

    body = await running.dispatch(asset_id="a-1", power_kw=2.0)
    assert (await second.setpoint()).setpoint_id == body["dispatch_id"]
    gateways = (await running.http.get("/gateways")).json()["items"]
    assert gateways[0]["connected"] is True
    assert gateways[0]["epoch"] == r2.epoch
    assert "event=disconnect site_id=site-a" in caplog.text
    assert "reason=superseded" in caplog.text


async def test_headend_sends_heartbeats_and_closes_silent_streams(
    running, agents, site_yaml, caplog, eventually
) -> None:
    caplog.set_level(logging.INFO, logger="vpp_headend")
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    agent.answer_heartbeats = False
    result = await agent.register(["a-1"])
    assert result.heartbeat_interval_s == 0.5
    beat = await agent.recv("heartbeat", 2)
    assert beat.heartbeat is not None
    assert beat.heartbeat.seq == 1
    started = asyncio.get_running_loop().time()
    # The agent says nothing more: closed within 3 intervals (+ scheduling slack).
    assert await agent.closed_reason(3) == vp.CloseReason.HEARTBEAT_TIMEOUT
    # 3 intervals, plus slack for a loaded 2-core CI machine.
    assert asyncio.get_running_loop().time() - started <= 3 * 0.5 + 1.0
    await agent.wait_ended()

    async def recorded() -> bool:
        gateways = (await running.http.get("/gateways")).json()["items"]
        return gateways[0]["connected"] is False and (
            gateways[0]["disconnect_reason"] == "heartbeat_timeout"
        )

    await eventually(recorded, 3, "the disconnect was not recorded")
    assert "reason=heartbeat_timeout" in caplog.text


async def test_agent_heartbeats_keep_the_session_open(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    agent.answer_heartbeats = False  # only the heartbeats sent below keep it open
    await agent.register(["a-1"])
    # The headend's own heartbeat n comes n intervals in: by the 4th, a silent stream
    # would have been closed (3 intervals), and `recv` fails on a SessionClosed.
    for n in range(1, 5):
        agent.send(heartbeat=vp.Heartbeat(ts=None, seq=n))
        beat = await agent.recv("heartbeat", 3)
        assert beat.heartbeat is not None
        assert beat.heartbeat.seq == n
    body = await running.dispatch(asset_id="a-1", power_kw=1.0)  # the stream still serves
    assert (await agent.setpoint()).setpoint_id == body["dispatch_id"]
    assert not agent.ended.is_set()
    assert running.headend.sessions.for_site("site-a") is not None


async def test_graceful_shutdown_closes_every_stream_with_a_reason(
    start_headend, agents, site_yaml, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="vpp_headend")
    h = await start_headend()
    await h.import_site(site_yaml("site-a", ["a-1"]))
    await h.import_site(site_yaml("site-b", ["b-1"]))
    a = await agents(h.grpc_port, "site-a")
    await a.register(["a-1"])
    b = await agents(h.grpc_port, "site-b")
    await b.register(["b-1"])
    a.send_batch([a.telemetry("a-1", seq=n) for n in range(1, 51)])
    await asyncio.sleep(0.05)  # readings in flight when the stop begins (none asserted)
    await h.stop()
    assert await a.closed_reason() == vp.CloseReason.SERVER_SHUTDOWN
    assert await b.closed_reason() == vp.CloseReason.SERVER_SHUTDOWN
    await a.wait_ended()
    await b.wait_ended()
    assert isinstance(a.error, GRPCError)
    assert a.error.status == Status.UNAVAILABLE
    assert "reason=server_shutdown" in caplog.text
    assert "event=stopped" in caplog.text


@pytest.mark.parametrize(
    ("first", "detail"),
    [
        ({"telemetry": vp.Telemetry(asset_id="a-1", seq=1, power_kw=1.0)}, "first message"),
        ({"heartbeat": vp.Heartbeat(seq=1)}, "first message"),
        ({}, "first message"),
    ],
)
async def test_anything_before_register_is_a_protocol_error(
    running, agents, site_yaml, first, detail
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    agent.send(**first)
    msg = await agent.recv("session_closed")
    assert msg.session_closed.reason == vp.CloseReason.PROTOCOL_ERROR
    assert detail in msg.session_closed.detail
    await agent.wait_ended()
    assert isinstance(agent.error, GRPCError)
    assert agent.error.status == Status.INVALID_ARGUMENT


async def test_second_register_is_a_protocol_error_and_spares_other_sessions(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    bystander = await agents(running.grpc_port, "site-b")
    await bystander.register(["b-1"])
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    agent.send(register=vp.Register(site_id="site-a", asset_id="a-1"))
    assert await agent.closed_reason() == vp.CloseReason.PROTOCOL_ERROR
    await agent.wait_ended()
    assert agent.error.status == Status.INVALID_ARGUMENT
    body = await running.dispatch(asset_id="b-1", power_kw=1.0)
    assert (await bystander.setpoint()).setpoint_id == body["dispatch_id"]


class _Garbage:
    """A "message" whose encoding is not a valid AgentMessage."""

    def SerializeToString(self) -> bytes:
        return b"\x0a\xff\xff\xff\xff\x0f"


async def test_malformed_frame_gets_a_clear_status(running, site_yaml, agents) -> None:
    await running.import_site(site_yaml("site-b", ["b-1"]))
    bystander = await agents(running.grpc_port, "site-b")
    await bystander.register(["b-1"])
    channel = Channel("127.0.0.1", running.grpc_port)
    got: list[vp.HeadendMessage] = []

    async def exchange() -> None:
        async with channel.request(
            "/vpp.agent.v1.AgentService/Connect",
            Cardinality.STREAM_STREAM,
            _Garbage,
            vp.HeadendMessage,
        ) as stream:
            await stream.send_message(_Garbage(), end=True)
            async with asyncio.timeout(5):
                got.extend([msg async for msg in stream])

    try:
        with pytest.raises(GRPCError) as err:  # the status arrives with the trailers
            await exchange()
    finally:
        channel.close()
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "malformed" in (err.value.message or "")
    assert got[0].session_closed.reason == vp.CloseReason.PROTOCOL_ERROR
    body = await running.dispatch(asset_id="b-1", power_kw=1.0)
    assert (await bystander.setpoint()).setpoint_id == body["dispatch_id"]


async def test_a_killed_gateway_is_marked_disconnected(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    agent.drop()

    async def gone() -> bool:
        return running.headend.sessions.for_site("site-a") is None

    await eventually(gone, 3, "the session of a vanished gateway stayed open")
    body = await running.dispatch(asset_id="a-1", power_kw=1.0)
    assert body["state"] == "pending"


async def test_a_client_leaving_before_register_is_no_error(running, caplog) -> None:
    channel = Channel("127.0.0.1", running.grpc_port)
    try:
        async with channel.request(
            "/vpp.agent.v1.AgentService/Connect",
            Cardinality.STREAM_STREAM,
            vp.AgentMessage,
            vp.HeadendMessage,
        ) as stream:
            await stream.send_request()
            await stream.end()
            async with asyncio.timeout(3):
                assert [msg async for msg in stream] == []
    finally:
        channel.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_heartbeats_persist_last_seen_of_every_gateway(
    running, agents, site_yaml, db_url, eventually
) -> None:
    """last_seen in gateway_sessions (what GET /gateways of another replica shows) follows
    the heartbeats of every connected gateway; the writes are batched, not lost."""
    import psycopg

    sites = ["site-a", "site-b", "site-c"]
    for s in sites:
        await running.import_site(site_yaml(s, [f"{s}-1"]))
    clients = []
    for s in sites:
        agent = await agents(running.grpc_port, s)
        await agent.register([f"{s}-1"])
        clients.append(agent)

    def last_seen() -> dict[str, datetime]:
        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT site_id, last_seen FROM gateway_sessions").fetchall()
        return dict(rows)

    first = last_seen()
    assert set(first) == set(sites)
    for n in range(1, 5):  # one heartbeat per interval, paced by the headend's own
        for agent in clients:
            await agent.recv("heartbeat", 3)
            agent.send(heartbeat=vp.Heartbeat(ts=None, seq=n))

    async def advanced() -> bool:
        now = last_seen()
        return all(now[s] > first[s] for s in sites)

    await eventually(advanced, 5, "last_seen was not persisted for every gateway")


async def test_a_disconnect_storm_is_recorded_even_with_a_small_pool(
    start_headend, agents, site_yaml, caplog, eventually
) -> None:
    # Thousands of gateways dropping at once (a network blip) used to mean one transaction
    # each: the pool ran dry, records timed out and rows stayed "connected" until restart.
    h = await start_headend(db_pool_size=1, db_pool_timeout_s=0.02)
    n = 60
    for i in range(n):
        await h.import_site(site_yaml(f"storm-{i}", [f"storm-{i}-a"]))
    made = []
    for i in range(n):
        agent = await agents(h.grpc_port, f"storm-{i}")
        await agent.register([f"storm-{i}-a"])
        made.append(agent)
    gateways = (await h.http.get("/gateways", params={"limit": 1000})).json()["items"]
    assert sum(g["connected"] for g in gateways) == n
    for agent in made:
        agent.drop()  # all vanish at once
    url = h.headend.settings.database_url

    async def rows() -> list[tuple[bool, str | None]]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT connected, disconnect_reason FROM gateway_sessions"
                " WHERE site_id LIKE 'storm-%'"
            )
            return [(bool(c), r) for c, r in await cur.fetchall()]

    async def all_recorded() -> bool:
        return not len(h.headend.gateways.sessions) and not any(c for c, _ in await rows())

    await eventually(all_recorded, 10, "sessions still marked connected in the database")
    # What other replicas read (DESIGN.md §7): every row says why it ended.
    assert await rows() == [(False, "connection_lost")] * n
    assert "disconnect_record_failed" not in caplog.text
