"""Routing: each setpoint reaches exactly the stream that serves its target; claims are
checked against the registry; legacy single-asset agents work."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import vpp_protocol as vp


async def test_each_dispatch_reaches_only_the_stream_serving_its_asset(
    running, agents, site_yaml
) -> None:
    sites = {f"site-{s}": [f"{s}-{i}" for i in range(4)] for s in "abc"}
    for site_id, assets in sites.items():
        await running.import_site(site_yaml(site_id, assets))
    connected = {}
    for site_id, assets in sites.items():
        agent = await agents(running.grpc_port, site_id)
        result = await agent.register(assets)
        assert sorted(result.accepted_asset_ids) == assets
        assert not result.rejected
        connected[site_id] = agent

    expected: dict[str, dict[str, str]] = {site_id: {} for site_id in sites}
    for site_id, assets in sites.items():
        for n, asset_id in enumerate(assets):
            body = await running.dispatch(asset_id=asset_id, power_kw=float(n))
            assert body["state"] == "sent"
            expected[site_id][body["dispatch_id"]] = asset_id

    for site_id, agent in connected.items():
        got = {}
        for _ in range(4):
            sp = await agent.setpoint()
            target = vp.setpoint_target(sp)
            assert target.kind == "asset"
            got[sp.setpoint_id] = target.id
        assert got == expected[site_id]
        # Nothing more was sent to it: a dispatch made now is its next message.
        await running.nothing_queued_before(agent, sites[site_id][0])

    gateways = (await running.http.get("/gateways")).json()["items"]
    assert {g["site_id"]: g["connected"] for g in gateways} == dict.fromkeys(sites, True)
    assert sorted(gateways[0]["assets_served"]) == sites["site-a"]


async def test_legacy_agent_gets_default_asset_telemetry_and_setpoints(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("old-site", ["old-meter-1"], legacy=True))
    agent = await agents(running.grpc_port, "old-site")
    result = await agent.register(legacy_asset="old-meter-1")
    assert list(result.accepted_asset_ids) == ["old-meter-1"]
    assert result.default_asset_id == "old-meter-1"

    reading = agent.telemetry("", power_kw=4.5, seq=1)
    agent.send(telemetry=reading)

    async def stored() -> bool:
        resp = await running.http.get("/telemetry/old-meter-1")
        return resp.status_code == 200 and resp.json()["power_kw"] == 4.5

    await eventually(stored, 5, "legacy telemetry never landed under the default asset")

    body = await running.dispatch(asset_id="old-meter-1", power_kw=3.0)
    sp = await agent.setpoint()
    assert sp.setpoint_id == body["dispatch_id"]
    # A legacy agent gets a target-less setpoint: it means "your only asset".
    assert vp.setpoint_target(sp, "old-meter-1") == vp.SetpointTarget("default", "old-meter-1")
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, applied_kw=3.0)  # no asset_id either
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert done["allocations"][0]["asset_id"] == "old-meter-1"
    assert done["allocations"][0]["applied_kw"] == 3.0


async def test_foreign_and_unknown_assets_are_rejected_and_not_routable(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    agent = await agents(running.grpc_port, "site-b")
    result = await agent.register(["b-1", "a-1", "ghost-1", "b-1", "bad id!"])
    assert list(result.accepted_asset_ids) == ["b-1"]
    codes = {r.asset_id: r.code for r in result.rejected}
    assert codes == {
        "a-1": vp.RejectCode.FOREIGN_ASSET,
        "ghost-1": vp.RejectCode.UNKNOWN_ASSET,
        "b-1": vp.RejectCode.DUPLICATE,
        "bad id!": vp.RejectCode.INVALID,
    }
    assert all(r.reason for r in result.rejected)

    # Not routable: a-1's site is offline, so its dispatch waits; site-b never sees it.
    body = await running.dispatch(asset_id="a-1", power_kw=5.0)
    assert body["state"] == "pending"
    resp = await running.http.post("/dispatch", json={"asset_id": "ghost-1", "power_kw": 1})
    assert resp.status_code == 404
    assert resp.json()["field"] == "asset_id"
    await running.nothing_queued_before(agent, "b-1")  # site-b got neither of them

    # Telemetry for the foreign asset is dropped and counted, the stream stays up.
    agent.send_batch([agent.telemetry("a-1", seq=1), agent.telemetry("b-1", seq=1)])

    async def own_stored() -> bool:  # the frame was processed: its own reading landed
        return (await running.http.get("/telemetry/b-1")).status_code == 200

    await eventually(own_stored, 5, "b-1's reading of the same frame never landed")
    assert (await running.http.get("/telemetry/a-1")).status_code == 404
    metrics = (await running.http.get("/metrics")).text
    assert 'vpp_telemetry_dropped_total{reason="foreign_asset"} 1.0' in metrics
    assert 'vpp_assets_rejected_total{code="foreign_asset"} 1.0' in metrics


async def test_unknown_site_is_refused(running, agents) -> None:
    agent = await agents(running.grpc_port, "nobody")
    result = await agent.register(["x-1"])
    assert not result.accepted_asset_ids
    assert [r.code for r in result.rejected] == [vp.RejectCode.UNAUTHORIZED]
    assert await agent.closed_reason() == vp.CloseReason.UNAUTHORIZED
    await agent.wait_ended()
    assert isinstance(agent.error, GRPCError)
    assert agent.error.status == Status.PERMISSION_DENIED


async def test_auto_enroll_registers_unknown_site_and_assets(start_headend, agents) -> None:
    h = await start_headend(auto_enroll=True)
    agent = await agents(h.grpc_port, "new-site")
    result = await agent.register(["new-1", "new-2"])
    assert sorted(result.accepted_asset_ids) == ["new-1", "new-2"]
    site = (await h.http.get("/sites/new-site")).json()
    assert site["asset_ids"] == ["new-1", "new-2"]
    assert site["assets"][0]["kind"] == "bess"
    body = await h.dispatch(asset_id="new-2", power_kw=1.0)
    assert (await agent.setpoint()).setpoint_id == body["dispatch_id"]


@pytest.mark.parametrize("target", ["site", "group"])
async def test_site_and_group_targets_are_split_across_sites(
    running, agents, site_yaml, target, eventually
) -> None:
    await running.import_site(site_yaml("s1", ["s1-a", "s1-b"], groups=["north"], capacity_kw=100))
    await running.import_site(site_yaml("s2", ["s2-a"], groups=["north"], capacity_kw=100))
    a1 = await agents(running.grpc_port, "s1")
    await a1.register(["s1-a", "s1-b"])
    a2 = await agents(running.grpc_port, "s2")
    await a2.register(["s2-a"])

    if target == "site":
        body = await running.dispatch(site_id="s1", power_kw=60.0)
        sp = await a1.setpoint()
        assert vp.setpoint_target(sp) == vp.SetpointTarget("site", "s1")
        assert sp.power_kw == 60.0
        await running.nothing_queued_before(a2, "s2-a")  # s2 is not part of site s1
        a1.ack(sp.setpoint_id, vp.AckState.APPLIED, allocations={"s1-a": 30.0, "s1-b": 30.0})
        done = await running.wait_state(body["dispatch_id"], "applied")
        assert {a["asset_id"]: a["allocation_kw"] for a in done["allocations"]} == {
            "s1-a": 30.0,
            "s1-b": 30.0,
        }
        return

    body = await running.dispatch(group_id="north", power_kw=150.0)
    assert {d["site_id"]: d["power_kw"] for d in body["deliveries"]} == {"s1": 100.0, "s2": 50.0}
    assert body["split"]
    sp1, sp2 = await a1.setpoint(), await a2.setpoint()
    assert sp1.setpoint_id == sp2.setpoint_id == body["dispatch_id"]
    assert vp.setpoint_target(sp1) == vp.SetpointTarget("group", "north")
    assert (sp1.power_kw, sp2.power_kw) == (100.0, 50.0)
    a1.ack(sp1.setpoint_id, vp.AckState.APPLIED, allocations={"s1-a": 50.0, "s1-b": 50.0})

    async def s1_applied() -> bool:
        mid = await running.dispatch_state(body["dispatch_id"])
        states = {d["site_id"]: d["state"] for d in mid["deliveries"]}
        return states == {"s1": "applied", "s2": "sent"} and mid["state"] == "sent"

    await eventually(s1_applied, 5, "s1's ack did not land")
    a2.ack(sp2.setpoint_id, vp.AckState.APPLIED, allocations={"s2-a": 50.0})
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert {a["asset_id"]: (a["allocation_kw"], a["state"]) for a in done["allocations"]} == {
        "s1-a": (50.0, "applied"),
        "s1-b": (50.0, "applied"),
        "s2-a": (50.0, "applied"),
    }


async def test_a_group_dispatch_acked_by_every_site_at_once_ends_applied(
    running, agents, site_yaml
) -> None:
    """Acks from several sites race for the dispatch row; each must see the others'
    committed deliveries, or the dispatch stays `received` forever (seen with a
    single-statement lock-and-join: the joined rows came from the pre-wait snapshot)."""
    sites = [f"g{n}" for n in range(4)]
    agents_by_site = {}
    for s in sites:
        await running.import_site(site_yaml(s, [f"{s}-a"], groups=["north"], capacity_kw=100))
        agents_by_site[s] = await agents(running.grpc_port, s)
        await agents_by_site[s].register([f"{s}-a"])
    for round_ in range(3):
        body = await running.dispatch(group_id="north", power_kw=40.0 + round_)
        setpoints = {s: await a.setpoint() for s, a in agents_by_site.items()}
        for state in (vp.AckState.RECEIVED, vp.AckState.APPLIED):
            for s, a in agents_by_site.items():  # all queued before any is processed
                sp = setpoints[s]  # each site takes its whole share
                a.ack(sp.setpoint_id, state, allocations={f"{s}-a": sp.power_kw})
        done = await running.wait_state(body["dispatch_id"], "applied")
        assert {d["state"] for d in done["deliveries"]} == {"applied"}
