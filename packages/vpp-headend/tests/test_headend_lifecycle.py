"""Dispatch lifecycle: pending while offline, delivered once on reconnect, expiry,
supersede, idempotent acks and idempotency keys, at-least-once re-delivery."""

from __future__ import annotations

import asyncio

import vpp_protocol as vp


async def test_offline_target_is_pending_then_delivered_once_on_reconnect(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    body = await running.dispatch(asset_id="a-1", power_kw=12.5, ttl_s=30)
    assert body["state"] == "pending"
    assert body["target"] == {"kind": "asset", "id": "a-1"}

    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    sp = await agent.setpoint()
    assert sp.setpoint_id == body["dispatch_id"]
    assert sp.power_kw == 12.5
    await running.wait_state(body["dispatch_id"], "sent")
    agent.ack(sp.setpoint_id, vp.AckState.RECEIVED, asset_id="a-1")
    await running.wait_state(body["dispatch_id"], "received")
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="a-1", applied_kw=12.5)
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "received", "applied"]
    assert all(t["at"] for t in done["transitions"])
    await agent.close()

    again = await agents(running.grpc_port, "site-a")
    await again.register(["a-1"])
    await again.no_message("setpoint", 0.3)  # delivered once: not again after an ack


async def test_ttl_expiry_expires_and_never_delivers(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    body = await running.dispatch(asset_id="a-1", power_kw=5.0, ttl_s=0.3)
    assert body["state"] == "pending"
    done = await running.wait_state(body["dispatch_id"], "expired", 3)
    assert done["deliveries"][0]["reason"] == "expired before delivery"
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    await agent.no_message("setpoint", 0.3)
    metrics = (await running.http.get("/metrics")).text
    assert 'vpp_dispatches_final_total{state="expired"} 1.0' in metrics


async def test_newer_setpoint_supersedes_older_pending_one(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    older = await running.dispatch(asset_id="a-1", power_kw=10.0)
    other = await running.dispatch(asset_id="a-2", power_kw=7.0)
    newer = await running.dispatch(asset_id="a-1", power_kw=20.0)
    old_state = await running.dispatch_state(older["dispatch_id"])
    assert old_state["state"] == "superseded"
    assert newer["dispatch_id"] in old_state["deliveries"][0]["reason"]

    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1", "a-2"])
    got = [await agent.setpoint(), await agent.setpoint()]
    # Only the newest per asset, in issue order.
    assert [(s.setpoint_id, s.power_kw) for s in got] == [
        (other["dispatch_id"], 7.0),
        (newer["dispatch_id"], 20.0),
    ]
    await agent.no_message("setpoint", 0.3)


async def test_resent_ack_is_harmless_and_state_never_moves_back(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=3.0)
    sp = await agent.setpoint()
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="a-1", applied_kw=3.0)
    await running.wait_state(body["dispatch_id"], "applied")
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="a-1", applied_kw=3.0)
    agent.ack(sp.setpoint_id, vp.AckState.RECEIVED, asset_id="a-1")
    agent.ack(sp.setpoint_id, vp.AckState.FAILED, asset_id="a-1", reason="late")
    agent.ack("6e0c4d3e-0000-4000-8000-000000000000", vp.AckState.APPLIED, asset_id="a-1")
    agent.ack("not-a-uuid", vp.AckState.APPLIED, asset_id="a-1")

    async def all_seen() -> bool:
        metrics = (await running.http.get("/metrics")).text
        return (
            'vpp_setpoint_acks_ignored_total{why="unknown_setpoint"} 1.0' in metrics
            and 'vpp_setpoint_acks_ignored_total{why="invalid"} 1.0' in metrics
        )

    await eventually(all_seen, 5, "the extra acks were not all processed")
    # The stream survives all of it: a new setpoint still flows.
    second = await running.dispatch(asset_id="a-1", power_kw=4.0)
    assert (await agent.setpoint()).setpoint_id == second["dispatch_id"]
    state = await running.dispatch_state(body["dispatch_id"])
    assert state["state"] == "applied"
    assert [t["state"] for t in state["transitions"]] == ["pending", "sent", "applied"]
    assert state["allocations"][0]["applied_kw"] == 3.0


async def test_idempotency_key_returns_the_original_dispatch(running, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    key = {"Idempotency-Key": "op-42"}
    first = await running.http.post(
        "/dispatch", json={"asset_id": "a-1", "power_kw": 9}, headers=key
    )
    again = await running.http.post(
        "/dispatch", json={"asset_id": "a-1", "power_kw": 9}, headers=key
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["dispatch_id"] == again.json()["dispatch_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await running.http.post(
        "/dispatch", json={"asset_id": "a-1", "power_kw": 10}, headers=key
    )
    assert other.status_code == 409
    assert other.json()["field"] == "Idempotency-Key"
    listed = (await running.http.get("/dispatches")).json()["items"]
    assert len(listed) == 1


async def test_unacked_setpoint_is_resent_after_reconnect(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    body = await running.dispatch(site_id="site-a", power_kw=8.0)
    sp = await agent.setpoint()
    assert vp.setpoint_target(sp) == vp.SetpointTarget("site", "site-a")
    agent.drop()  # gone before acking anything
    again = await agents(running.grpc_port, "site-a")
    await again.register(["a-1"])
    resent = await again.setpoint()
    assert resent.setpoint_id == body["dispatch_id"]
    again.ack(resent.setpoint_id, vp.AckState.APPLIED, allocations={"a-1": 8.0})
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert any("re-sent" in (e["detail"] or "") for e in done["events"])


async def test_dispatch_queries(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    # Apart in time: the list is ordered by creation time, newest first.
    d1 = await running.dispatch(asset_id="a-1", power_kw=1.0)
    await asyncio.sleep(0.01)
    d2 = await running.dispatch(asset_id="b-1", power_kw=2.0)
    await asyncio.sleep(0.01)
    d3 = await running.dispatch(site_id="site-b", power_kw=3.0)
    ids = [d["dispatch_id"] for d in (await running.http.get("/dispatches")).json()["items"]]
    assert ids == [d3["dispatch_id"], d2["dispatch_id"], d1["dispatch_id"]]
    by_site = (await running.http.get("/dispatches", params={"site_id": "site-b"})).json()["items"]
    assert [d["dispatch_id"] for d in by_site] == [d3["dispatch_id"], d2["dispatch_id"]]
    by_asset = (await running.http.get("/dispatches", params={"asset_id": "a-1"})).json()["items"]
    assert [d["dispatch_id"] for d in by_asset] == [d1["dispatch_id"]]
    limited = (await running.http.get("/dispatches", params={"limit": 1})).json()["items"]
    assert len(limited) == 1
    pending = (await running.http.get("/dispatches", params={"state": "pending"})).json()["items"]
    assert len(pending) == 3
    bad = await running.http.get("/dispatches", params={"state": "bogus"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "state"
