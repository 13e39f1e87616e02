"""Two headend replicas on one PostgreSQL (DESIGN.md §7): a dispatch POSTed to either
reaches the gateway held by the other (LISTEN/NOTIFY), and a gateway that moves from
one replica to the other is taken over cleanly (epoch fence, SUPERSEDED)."""

from __future__ import annotations

import vpp_protocol as vp


async def test_dispatch_crosses_replicas_and_a_moving_gateway_is_fenced(
    start_headend, agents, site_yaml, eventually
) -> None:
    a = await start_headend(replica="replica-a")
    b = await start_headend(replica="replica-b")
    await a.import_site(site_yaml("site-r", ["r-1", "r-2"]))

    # The gateway connects to A; the dispatch is POSTed to B.
    on_a = await agents(a.grpc_port, "site-r")
    first = await on_a.register(["r-1", "r-2"])
    body = await b.dispatch(asset_id="r-1", power_kw=5.0)
    sp = await on_a.setpoint()
    assert sp.setpoint_id == body["dispatch_id"]
    on_a.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="r-1", applied_kw=5.0)
    # The ack lands on A and is visible through either replica.
    await b.wait_state(body["dispatch_id"], "applied")
    await a.wait_state(body["dispatch_id"], "applied")

    # A site-wide dispatch POSTed to A while the gateway is there: delivered by A itself.
    local = await a.dispatch(site_id="site-r", power_kw=1.0)
    assert (await on_a.setpoint()).setpoint_id == local["dispatch_id"]
    on_a.ack(local["dispatch_id"], vp.AckState.APPLIED, allocations={"r-1": 0.5, "r-2": 0.5})
    await b.wait_state(local["dispatch_id"], "applied")

    # The gateway moves to B (A's stream is half-open: A is not told by the gateway).
    on_b = await agents(b.grpc_port, "site-r")
    second = await on_b.register(["r-1", "r-2"])
    assert second.epoch > first.epoch
    # A learns from the NOTIFY that its session is superseded and closes it.
    assert await on_a.closed_reason() == vp.CloseReason.SUPERSEDED
    await on_a.wait_ended()

    async def a_let_go() -> bool:
        return a.headend.sessions.for_site("site-r") is None

    await eventually(a_let_go, 3, "replica A still routes to the superseded session")

    # A dispatch POSTed to A now reaches the gateway on B; nothing arrives on the old one.
    moved = await a.dispatch(asset_id="r-2", power_kw=-3.0)
    sp2 = await on_b.setpoint()
    assert sp2.setpoint_id == moved["dispatch_id"]
    on_b.ack(sp2.setpoint_id, vp.AckState.APPLIED, asset_id="r-2", applied_kw=-3.0)
    await a.wait_state(moved["dispatch_id"], "applied")

    # Both replicas agree on who holds the site.
    for replica in (a, b):
        gateways = (await replica.http.get("/gateways")).json()["items"]
        [gw] = [g for g in gateways if g["site_id"] == "site-r"]
        assert gw["connected"] is True
        assert gw["epoch"] == second.epoch


async def test_pending_dispatch_is_delivered_by_the_replica_the_gateway_joins(
    start_headend, agents, site_yaml
) -> None:
    a = await start_headend(replica="replica-a")
    b = await start_headend(replica="replica-b")
    await a.import_site(site_yaml("site-p", ["p-1"]))
    # Offline: POSTed to A, held pending.
    body = await a.dispatch(asset_id="p-1", power_kw=2.0)
    assert body["state"] == "pending"
    # The gateway connects to B: B delivers it on connect.
    gw = await agents(b.grpc_port, "site-p")
    await gw.register(["p-1"])
    sp = await gw.setpoint()
    assert sp.setpoint_id == body["dispatch_id"]
    gw.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="p-1", applied_kw=2.0)
    await a.wait_state(body["dispatch_id"], "applied")
    # Delivered once: A did not send a copy anywhere and B sends no second one. Barrier:
    # a dispatch POSTed to A now (NOTIFY, then B) is the next message the gateway gets.
    await a.nothing_queued_before(gw, "p-1")


async def test_missed_takeover_notification_is_caught_by_the_epoch_check(
    start_headend, agents, site_yaml, eventually
) -> None:
    """If A missed the NOTIFY (its LISTEN connection was down), its next heartbeat
    persistence finds another session in gateway_sessions and closes its stream."""
    a = await start_headend(replica="replica-a")
    b = await start_headend(replica="replica-b")
    await a.import_site(site_yaml("site-m", ["m-1"]))
    on_a = await agents(a.grpc_port, "site-m")
    await on_a.register(["m-1"])
    # Simulate a lost notification: A stops listening before the takeover.
    listener = a.headend.listener
    await listener.stop()
    on_b = await agents(b.grpc_port, "site-m")
    await on_b.register(["m-1"])
    # A still believes it holds the site until it next persists the gateway's last_seen
    # (at most once per heartbeat interval, 0.5 s here, on the monotonic clock).
    assert a.headend.sessions.for_site("site-m") is not None
    seq = 0

    def heartbeat_then_check() -> bool:
        nonlocal seq
        seq += 1
        on_a.send(heartbeat=vp.Heartbeat(ts=None, seq=seq))
        return a.headend.sessions.for_site("site-m") is None

    await eventually(heartbeat_then_check, 5, "A never noticed the takeover", every=0.1)
    assert await on_a.closed_reason(3) == vp.CloseReason.SUPERSEDED
    assert a.headend.sessions.for_site("site-m") is None
