"""A setpoint's time in force on the headend (DESIGN.md §3b): POST /dispatch takes
``duration_s`` / ``ends_at`` and sends them with every delivery; a RELEASED ack ends a
dispatch ``completed``, ``cancelled`` or ``released`` by its cause; POST
/dispatch/{id}/cancel cancels what is pending and releases what was sent or applied, on
this replica, through NOTIFY, or on the gateway's next connect. A real headend on a real
database; the in-test agent speaks the raw protocol over loopback gRPC."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import betterproto2
import psycopg
import pytest
from alembic import command
from headend_clocked import Clocked, clocked_headend

import vpp_protocol as vp
from vpp_headend import Settings
from vpp_headend.db.migrate import alembic_config, upgrade
from vpp_protocol.sitefile import parse_site_file

WEEK_S = 7 * 86400


# -- helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class In:
    """An instant this many seconds from when the test runs (not from collection)."""

    seconds: float


def iso(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def applied_ack(
    agent: Any,
    setpoint_id: str,
    *,
    asset_id: str = "",
    allocations: dict[str, float] | None = None,
    applied_kw: float | None = None,
    ends_at: datetime | None = None,
) -> None:
    agent.send(
        setpoint_ack=vp.SetpointAck(
            setpoint_id=setpoint_id,
            asset_id=asset_id,
            state=vp.AckState.APPLIED,
            ts=datetime.now(UTC),
            applied_kw=applied_kw,
            allocations=[
                vp.Allocation(asset_id=a, power_kw=p, applied_kw=p)
                for a, p in (allocations or {}).items()
            ],
            ends_at=ends_at,
        )
    )


def released_ack(
    agent: Any,
    setpoint_id: str,
    cause: vp.ReleaseCause,
    assets: tuple[str, ...] = (),
    *,
    reason: str = "",
    ts: datetime | None = None,
) -> None:
    """The gateway's RELEASED: each allocation is an asset it released (none: nothing
    was in force under that setpoint any more)."""
    agent.send(
        setpoint_ack=vp.SetpointAck(
            setpoint_id=setpoint_id,
            state=vp.AckState.RELEASED,
            reason=reason,
            ts=ts or datetime.now(UTC),
            allocations=[vp.Allocation(asset_id=a, power_kw=0.0) for a in assets],
            release_cause=cause,
        )
    )


async def messages(agent: Any, n: int, within: float = 5.0) -> list[tuple[str, Any]]:
    """The next ``n`` messages other than heartbeats, as (kind, body)."""
    out: list[tuple[str, Any]] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            kind, body = betterproto2.which_one_of(await agent.incoming.get(), "body")
            if kind != "heartbeat":
                out.append((kind, body))
    return out


async def cancel(http: Any, dispatch_id: str, body: object = None, **kw: Any) -> Any:
    """POST /dispatch/{id}/cancel with a JSON body (``{}`` when not given)."""
    return await http.post(f"/dispatch/{dispatch_id}/cancel", json={} if body is None else body)


async def connect(
    running: Any, agents: Any, site_yaml: Any, site_id: str, assets: list[str]
) -> Any:
    await running.import_site(site_yaml(site_id, assets))
    agent = await agents(running.grpc_port, site_id)
    await agent.register(assets)
    return agent


async def offline(running: Any, eventually: Any, site_id: str) -> None:
    """Wait until the headend has let go of the site's session."""

    async def gone() -> bool:
        return running.headend.sessions.for_site(site_id) is None

    await eventually(gone, 5, f"{site_id} is still routed")


async def first_setpoint_is(running: Any, agent: Any, asset_id: str) -> None:
    """Barrier: a dispatch made now is the next message the agent gets (so nothing was
    queued before it)."""
    await running.nothing_queued_before(agent, asset_id)


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status
    return dict(body)


# -- POST /dispatch: duration_s / ends_at ---------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"duration_s": 5, "ends_at": In(60)}, "ends_at"),
        ({"duration_s": math.nan}, "duration_s"),
        ({"duration_s": math.inf}, "duration_s"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": -3}, "duration_s"),
        ({"duration_s": WEEK_S + 1}, "duration_s"),
        ({"duration_s": "3"}, "duration_s"),
        ({"duration_s": True}, "duration_s"),
        ({"ends_at": In(-1)}, "ends_at"),
        ({"ends_at": In(WEEK_S + 60)}, "ends_at"),
        ({"ends_at": "2030-01-01T00:00:00"}, "ends_at"),  # no timezone
        ({"ends_at": "soon"}, "ends_at"),
    ],
)
async def test_a_bad_time_in_force_is_a_422_naming_the_field_and_stores_nothing(
    running, site_yaml, extra: dict[str, Any], field: str
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    extra = {k: iso(v.seconds) if isinstance(v, In) else v for k, v in extra.items()}
    raw = json.dumps({"asset_id": "a-1", "power_kw": 5.0, **extra}, allow_nan=True)
    resp = await running.http.post(
        "/dispatch", content=raw, headers={"content-type": "application/json"}
    )
    body = problem(resp, 422)
    assert body["field"] == field, body
    assert (await running.http.get("/dispatches")).json()["items"] == []


async def test_the_time_in_force_is_stored_shown_and_part_of_the_idempotency_key(
    running, site_yaml
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    plain = await running.dispatch(asset_id="a-1", power_kw=5.0)
    assert (plain["duration_s"], plain["ends_at"], plain["cancel_requested_at"]) == (None,) * 3

    timed = await running.dispatch(asset_id="a-1", power_kw=5.0, duration_s=90.5)
    assert timed["duration_s"] == 90.5
    got = await running.dispatch_state(timed["dispatch_id"])
    assert (got["duration_s"], got["ends_at"]) == (90.5, None)
    listed = (await running.http.get("/dispatches")).json()["items"]
    assert [d["duration_s"] for d in listed] == [90.5, None]

    # ends_at: the delivery deadline never runs past the end of control.
    end = iso(60)
    until = await running.dispatch(asset_id="a-1", power_kw=5.0, ends_at=end, ttl_s=600)
    assert at(until["ends_at"]) == at(end)
    assert at(until["expires_at"]) == at(end)

    key = {"Idempotency-Key": "tif-1"}
    first = await running.dispatch(headers=key, asset_id="a-1", power_kw=2.0, duration_s=10)
    again = await running.dispatch(headers=key, asset_id="a-1", power_kw=2.0, duration_s=10)
    assert again["dispatch_id"] == first["dispatch_id"]
    other = await running.dispatch(409, headers=key, asset_id="a-1", power_kw=2.0, duration_s=11)
    assert other["field"] == "Idempotency-Key"
    untimed = await running.dispatch(409, headers=key, asset_id="a-1", power_kw=2.0)
    assert untimed["field"] == "Idempotency-Key"


async def test_the_setpoint_carries_its_time_in_force_also_when_delivered_again(
    running, agents, site_yaml
) -> None:
    agent = await connect(running, agents, site_yaml, "site-a", ["a-1", "a-2"])
    body = await running.dispatch(asset_id="a-1", power_kw=5.0, duration_s=30)
    sp = await agent.setpoint()
    assert (sp.setpoint_id, sp.duration_s, sp.ends_at) == (body["dispatch_id"], 30.0, None)
    await agent.close()  # no ack: it is delivered again on the next connect

    end = iso(120)
    pending = await running.dispatch(asset_id="a-2", power_kw=3.0, ends_at=end)
    assert pending["state"] == "pending"
    again = await agents(running.grpc_port, "site-a")
    await again.register(["a-1", "a-2"])
    got = {sp.setpoint_id: sp for _, sp in await messages(again, 2)}
    assert got[body["dispatch_id"]].duration_s == 30.0
    assert got[body["dispatch_id"]].ends_at is None
    assert got[pending["dispatch_id"]].ends_at == at(end)
    assert got[pending["dispatch_id"]].duration_s is None


# -- RELEASED acks --------------------------------------------------------------------------


async def test_a_duration_that_ends_completes_the_dispatch_with_its_events(
    running, agents, site_yaml, eventually
) -> None:
    agent = await connect(running, agents, site_yaml, "site-a", ["a-1", "a-2"])
    body = await running.dispatch(site_id="site-a", power_kw=20.0, duration_s=3)
    did = body["dispatch_id"]
    sp = await agent.setpoint()
    assert sp.duration_s == 3.0
    ends = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    applied_ack(agent, did, allocations={"a-1": 10.0, "a-2": 10.0}, ends_at=ends)
    applied = await running.wait_state(did, "applied")
    assert at(applied["deliveries"][0]["in_force_until"]) == ends

    released_ack(agent, did, vp.ReleaseCause.DURATION_ENDED, ("a-1", "a-2"))
    done = await running.wait_state(did, "completed")
    assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "applied", "completed"]
    [dlv] = done["deliveries"]
    assert (dlv["state"], dlv["release_cause"]) == ("completed", "duration_ended")
    assert dlv["released_at"] is not None
    assert "duration ended" in dlv["reason"]
    assert (dlv["allocated_kw"], done["allocated_kw"]) == (20.0, 20.0)  # kept
    assert {a["asset_id"]: a["state"] for a in done["allocations"]} == {
        "a-1": "completed",
        "a-2": "completed",
    }
    ended = {(e["scope"], e["scope_id"]) for e in done["events"] if e["state"] == "completed"}
    assert ended == {("dispatch", None), ("site", "site-a"), ("asset", "a-1"), ("asset", "a-2")}
    listed = (await running.http.get("/dispatches", params={"state": "completed"})).json()["items"]
    assert [d["dispatch_id"] for d in listed] == [did]

    async def counted() -> bool:
        text = (await running.http.get("/metrics")).text
        return all(
            f'vpp_dispatches_final_total{{state="{s}"}} 1.0' in text
            for s in ("applied", "completed")
        )

    await eventually(counted, 5, "applied and completed were not counted")

    # A repeat changes nothing; a cancel now is refused, naming the state.
    released_ack(agent, did, vp.ReleaseCause.DURATION_ENDED, ("a-1", "a-2"))

    async def repeat_seen() -> bool:
        text = (await running.http.get("/metrics")).text
        return 'vpp_setpoint_acks_ignored_total{why="repeat"} 1.0' in text

    await eventually(repeat_seen, 5, "the repeated RELEASED was not counted as a repeat")
    assert (await running.dispatch_state(did))["events"] == done["events"]
    refused = problem(await cancel(running.http, did), 409)
    assert "completed" in refused["detail"]
    assert refused["field"] == "state"


async def test_a_fail_safe_release_reported_after_reconnect_says_so(
    running, agents, site_yaml, eventually
) -> None:
    agent = await connect(running, agents, site_yaml, "site-a", ["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=8.0)
    did = body["dispatch_id"]
    await agent.setpoint()
    applied_ack(agent, did, asset_id="a-1", applied_kw=8.0)
    await running.wait_state(did, "applied")
    reading = agent.telemetry("a-1", 8.0)
    reading.setpoint_kw, reading.setpoint_id = 8.0, did
    agent.send_batch([reading])

    async def stored(seq: int) -> bool:
        latest = (await running.http.get("/telemetry/a-1")).json()
        return bool(latest.get("seq") == seq)

    await eventually(lambda: stored(reading.seq), 5, "the reading never landed")
    assert (await running.http.get("/telemetry/a-1")).json()["setpoint_kw"] == 8.0
    agent.drop()  # the link is cut; the gateway's fail-safe releases on site
    await offline(running, eventually, "site-a")

    back = await agents(running.grpc_port, "site-a")
    await back.register(["a-1"])
    when = datetime.now(UTC)  # while the link was down, after the last live reading
    # The spool replays a reading with nothing in force, then the RELEASED.
    spooled = back.telemetry("a-1", 0.0, seq=agent.seq["a-1"] + 1, ts=when)
    back.send_batch([spooled])
    released_ack(back, did, vp.ReleaseCause.FAILSAFE, ("a-1",), ts=when, reason="no session 900 s")
    done = await running.wait_state(did, "released")
    [dlv] = done["deliveries"]
    assert dlv["release_cause"] == "failsafe"
    assert at(dlv["released_at"]) == when  # the gateway's time of release
    assert "fail-safe" in dlv["reason"]
    assert "no session 900 s" in dlv["reason"]
    assert [a["state"] for a in done["allocations"]] == ["released"]
    assert any(
        e["state"] == "released" and "fail-safe" in (e["detail"] or "") for e in done["events"]
    )
    # Telemetry's unset setpoint_kw is stored and served as null.
    await eventually(lambda: stored(spooled.seq), 5, "the spooled reading never landed")
    latest = (await running.http.get("/telemetry/a-1")).json()
    assert (latest["setpoint_kw"], latest["setpoint_id"]) == (None, None)
    history = (await running.http.get("/telemetry/a-1/history")).json()["readings"]
    assert [(r["setpoint_kw"], r["setpoint_id"]) for r in history] == [(None, None), (8.0, did)]


async def test_a_release_for_a_delivery_not_yet_acked_applied_ends_it(
    running, agents, site_yaml
) -> None:
    """The gateway restarted after the end, its APPLIED ack lost: forward is forward."""
    agent = await connect(running, agents, site_yaml, "site-a", ["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=4.0, duration_s=1)
    await agent.setpoint()
    released_ack(agent, body["dispatch_id"], vp.ReleaseCause.DURATION_ENDED, ("a-1",))
    done = await running.wait_state(body["dispatch_id"], "completed")
    assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "completed"]
    assert done["allocations"][0]["state"] == "completed"


# -- cancel ---------------------------------------------------------------------------------


async def test_a_pending_dispatch_cancelled_is_never_delivered(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    body = await running.dispatch(asset_id="a-1", power_kw=30.0, ttl_s=120, duration_s=60)
    did = body["dispatch_id"]
    assert body["state"] == "pending"
    resp = await cancel(running.http, did)
    assert resp.status_code == 202, resp.text
    got = resp.json()
    assert got["state"] == "cancelled"
    assert got["cancel_requested_at"] is not None
    [dlv] = got["deliveries"]
    assert dlv["state"] == "cancelled"
    assert "before delivery" in dlv["reason"]
    assert dlv["release_requested_at"] is None  # nothing to release
    assert got["allocations"][0]["state"] == "cancelled"
    assert [t["state"] for t in got["transitions"]] == ["pending", "cancelled"]
    assert ("cancelled", "site", "site-a") in [
        (e["state"], e["scope"], e["scope_id"]) for e in got["events"]
    ]

    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    await first_setpoint_is(running, agent, "a-1")
    again = await cancel(running.http, did)
    assert (again.status_code, again.json()["state"]) == (202, "cancelled")
    assert again.json()["cancel_requested_at"] == got["cancel_requested_at"]


async def test_cancel_of_an_applied_dispatch_releases_it_and_answers_the_same_twice(
    running, agents, site_yaml, eventually
) -> None:
    agent = await connect(running, agents, site_yaml, "site-a", ["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=7.0)
    did = body["dispatch_id"]
    await agent.setpoint()
    applied_ack(agent, did, asset_id="a-1", applied_kw=7.0)
    await running.wait_state(did, "applied")

    # Not declared JSON: a cross-origin form or text/plain request cannot cancel.
    url = f"/dispatch/{did}/cancel"
    plain = await running.http.post(url, content=b"x", headers={"content-type": "text/plain"})
    assert "application/json" in problem(plain, 415)["detail"]
    problem(await running.http.post(url), 415)  # no body, no content type
    bad = problem(await cancel(running.http, did, {"reason": "a\nb"}), 422)
    assert bad["field"] == "reason"
    assert problem(await cancel(running.http, did, {"why": "x"}), 422)["field"] == "why"
    assert (await running.dispatch_state(did))["state"] == "applied"

    resp = await cancel(running.http, did, {"reason": "peak is over"})
    assert resp.status_code == 202, resp.text
    first = resp.json()
    assert first["state"] == "cancelling"
    assert first["cancel_reason"] == "peak is over"
    [dlv] = first["deliveries"]
    assert dlv["state"] == "cancelling"
    assert dlv["release_requested_at"] is not None
    assert dlv["release_sent_at"] is not None
    [(kind, rel)] = await messages(agent, 1)
    assert kind == "release"
    assert (rel.setpoint_id, rel.reason) == (did, "cancelled by operator: peak is over")
    assert rel.issued_at == at(first["cancel_requested_at"])

    # Twice: the same answer, no second Release.
    again = await running.http.post(url, content=b"", headers={"content-type": "application/json"})
    assert again.status_code == 202, again.text
    assert again.json()["state"] == "cancelling"
    assert again.json()["cancel_requested_at"] == first["cancel_requested_at"]

    released_ack(agent, did, vp.ReleaseCause.CANCELLED, ("a-1",))
    done = await running.wait_state(did, "cancelled")
    [dlv] = done["deliveries"]
    assert (dlv["state"], dlv["release_cause"]) == ("cancelled", "cancelled")
    assert done["allocations"][0]["state"] == "cancelled"
    assert [t["state"] for t in done["transitions"]] == [
        "pending",
        "sent",
        "applied",
        "cancelling",
        "cancelled",
    ]
    third = await cancel(running.http, did)
    assert (third.status_code, third.json()["state"]) == (202, "cancelled")
    await first_setpoint_is(running, agent, "a-1")  # no Release was queued meanwhile

    async def counted() -> bool:
        text = (await running.http.get("/metrics")).text
        return 'vpp_dispatches_final_total{state="cancelled"} 1.0' in text

    await eventually(counted, 5, "cancelled was not counted")


async def test_cancel_unknown_or_ended_dispatches(clocked, site_yaml) -> None:
    assert problem(await cancel(clocked.http, str(uuid.uuid4())), 404)["field"] == "dispatch_id"
    problem(await cancel(clocked.http, "not-a-uuid"), 404)
    await clocked.import_site(site_yaml("site-a", ["a-1"]))
    did = await clocked.dispatch_id(asset_id="a-1", power_kw=1.0, ttl_s=1)  # site offline
    clocked.clock.advance(2)  # past expires_at on the headend's clock
    assert await clocked.headend.dispatch.sweep() == 1
    assert (await clocked.get(did))["state"] == "expired"
    refused = problem(await cancel(clocked.http, did), 409)
    assert "expired" in refused["detail"]


async def test_cancel_of_a_group_releases_every_member(
    running, agents, site_yaml, eventually
) -> None:
    for site in ("g1", "g2"):
        await running.import_site(site_yaml(site, [f"{site}-a"], groups=["north"]))
    body = await running.dispatch(group_id="north", power_kw=40.0, duration_s=600)
    did = body["dispatch_id"]
    g1 = await agents(running.grpc_port, "g1")
    await g1.register(["g1-a"])
    sp = await g1.setpoint()
    assert sp.duration_s == 600.0
    applied_ack(g1, did, allocations={"g1-a": sp.power_kw})

    async def g1_applied() -> bool:
        d = await running.dispatch_state(did)
        return {x["site_id"]: x["state"] for x in d["deliveries"]}["g1"] == "applied"

    await eventually(g1_applied, 5, "g1 never applied")
    resp = await cancel(running.http, did)
    assert resp.status_code == 202, resp.text
    assert resp.json()["state"] == "cancelling"
    by_site = {x["site_id"]: x["state"] for x in resp.json()["deliveries"]}
    assert by_site == {"g1": "cancelling", "g2": "cancelled"}  # g2 was still pending
    [(kind, rel)] = await messages(g1, 1)
    assert (kind, rel.setpoint_id) == ("release", did)
    released_ack(g1, did, vp.ReleaseCause.CANCELLED, ("g1-a",))
    done = await running.wait_state(did, "cancelled")
    assert {x["site_id"]: x["state"] for x in done["deliveries"]} == {
        "g1": "cancelled",
        "g2": "cancelled",
    }
    # The pending member, connecting now, never gets it.
    g2 = await agents(running.grpc_port, "g2")
    await g2.register(["g2-a"])
    await first_setpoint_is(running, g2, "g2-a")


async def test_a_gateway_that_comes_back_gets_its_setpoints_then_its_releases(
    running, agents, site_yaml, eventually
) -> None:
    """A cancel while the gateway is away: the Release goes out on its next connect, after
    its pending setpoints; a `sent` one of a cancelled dispatch is never sent again as a
    setpoint, its Release is."""
    agent = await connect(running, agents, site_yaml, "site-a", ["a-1", "a-2"])
    d1 = (await running.dispatch(asset_id="a-1", power_kw=5.0))["dispatch_id"]
    await agent.setpoint()
    applied_ack(agent, d1, asset_id="a-1", applied_kw=5.0)
    await running.wait_state(d1, "applied")
    d2 = (await running.dispatch(asset_id="a-2", power_kw=6.0))["dispatch_id"]
    await agent.setpoint()  # never acked: stays `sent`
    await agent.close()
    await offline(running, eventually, "site-a")

    for did in (d1, d2):
        resp = await cancel(running.http, did)
        assert resp.status_code == 202, resp.text
        assert resp.json()["state"] == "cancelling"
        assert resp.json()["deliveries"][0]["release_sent_at"] is None  # nobody to send to
    d3 = (await running.dispatch(asset_id="a-2", power_kw=3.0))["dispatch_id"]

    back = await agents(running.grpc_port, "site-a")
    await back.register(["a-1", "a-2"])
    got = [(kind, msg.setpoint_id) for kind, msg in await messages(back, 3)]
    assert got[0] == ("setpoint", d3)  # a newer setpoint takes over before any release
    assert sorted(got[1:]) == sorted([("release", d1), ("release", d2)])
    released_ack(back, d1, vp.ReleaseCause.CANCELLED, ("a-1",))
    released_ack(back, d2, vp.ReleaseCause.CANCELLED, reason="not in force")
    for did in (d1, d2):
        await running.wait_state(did, "cancelled")
    assert "not in force" in (await running.dispatch_state(d2))["deliveries"][0]["reason"]


async def test_a_cancel_reaches_the_gateway_held_by_another_replica(
    start_headend, agents, site_yaml
) -> None:
    a = await start_headend(replica="replica-a")
    b = await start_headend(replica="replica-b")
    await a.import_site(site_yaml("site-r", ["r-1"]))
    on_a = await agents(a.grpc_port, "site-r")
    await on_a.register(["r-1"])
    body = await b.dispatch(asset_id="r-1", power_kw=5.0)
    did = body["dispatch_id"]
    await on_a.setpoint()
    applied_ack(on_a, did, asset_id="r-1", applied_kw=5.0)
    await b.wait_state(did, "applied")

    resp = await cancel(b.http, did)
    assert (resp.status_code, resp.json()["state"]) == (202, "cancelling")
    [(kind, rel)] = await messages(on_a, 1)  # through NOTIFY to replica A
    assert (kind, rel.setpoint_id) == ("release", did)
    released_ack(on_a, did, vp.ReleaseCause.CANCELLED, ("r-1",))
    await b.wait_state(did, "cancelled")


async def test_a_gateway_of_protocol_1_cannot_release_and_the_cancel_says_so(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    agent.send(
        register=vp.Register(
            site_id="site-a",
            assets=[vp.AssetDescriptor(asset_id="a-1", kind=vp.AssetKind.BESS, capacity_kw=100)],
            agent_version="round-1 agent",
            protocol_version=1,
        )
    )
    await agent.recv("register_result")
    body = await running.dispatch(asset_id="a-1", power_kw=5.0, duration_s=60)
    did = body["dispatch_id"]
    await agent.setpoint()
    sent = [e for e in body["events"] if e["state"] == "sent" and e["scope"] == "site"]
    assert "protocol 1" in sent[0]["detail"]
    applied_ack(agent, did, asset_id="a-1", applied_kw=5.0)
    await running.wait_state(did, "applied")

    resp = await cancel(running.http, did)
    assert resp.status_code == 202, resp.text
    got = resp.json()
    assert got["state"] == "cancelled"
    assert (
        "stays in force on site until a newer one supersedes it" in got["deliveries"][0]["reason"]
    )
    await first_setpoint_is(running, agent, "a-1")  # no Release was sent


# -- sweeper and measurement on the headend's clock -----------------------------------------


@pytest.fixture
async def clocked(settings: Settings) -> AsyncIterator[Clocked]:
    """A headend on a clock the test moves; its sweeper is run by the test (one-hour
    interval), delivered power over an 8 s window, 2 s settle."""
    async with clocked_headend(
        settings.with_(sweep_interval_s=3600.0, delivery_window_s=8.0, delivery_settle_s=2.0)
    ) as c:
        yield c


async def test_the_sweeper_leaves_cancelling_and_applied_deliveries_alone(
    clocked, agents, site_yaml, eventually
) -> None:
    await clocked.headend.registry.import_site(
        parse_site_file(site_yaml("site-a", ["a-1", "a-2", "a-3"]))
    )
    agent = await agents(clocked.grpc_port, "site-a")
    await agent.register(["a-1", "a-2", "a-3"])
    held = await clocked.dispatch_id(asset_id="a-1", power_kw=1.0, ttl_s=1, duration_s=600)
    await agent.setpoint()
    applied_ack(agent, held, asset_id="a-1", applied_kw=1.0)
    releasing = await clocked.dispatch_id(asset_id="a-2", power_kw=2.0, ttl_s=1)
    unacked = await clocked.dispatch_id(asset_id="a-3", power_kw=3.0, ttl_s=1)
    await messages(agent, 2)

    async def applied() -> bool:
        return (await clocked.get(held))["state"] == "applied"

    await eventually(applied, 5, "never applied")
    resp = await cancel(clocked.http, releasing)
    assert resp.json()["state"] == "cancelling"
    await messages(agent, 1)  # its Release; the agent never answers it

    clocked.clock.advance(120)  # far past expires_at + ack_grace_s
    assert await clocked.headend.dispatch.sweep() == 1
    assert (await clocked.get(unacked))["state"] == "expired"  # the sweep did run
    assert (await clocked.get(held))["state"] == "applied"  # in force: duration, not expiry
    assert (await clocked.get(releasing))["state"] == "cancelling"


async def test_delivered_power_of_a_dispatch_released_within_the_window_stops_at_its_release(
    clocked, agents, site_yaml, eventually
) -> None:
    await clocked.headend.registry.import_site(parse_site_file(site_yaml("site-a", ["a-1"])))
    agent = await agents(clocked.grpc_port, "site-a")
    await agent.register(["a-1"])
    did = await clocked.dispatch_id(asset_id="a-1", power_kw=10.0, duration_s=3)
    await agent.setpoint()
    applied_ack(agent, did, asset_id="a-1", applied_kw=10.0)

    async def applied() -> bool:
        return (await clocked.get(did))["state"] == "applied"

    await eventually(applied, 5, "never applied")
    t0 = at((await clocked.get(did))["applied_at"])
    assert t0 is not None
    # In force for 3 s at 10 kW, then back to 0 for the rest of the 8 s window.
    readings = [
        agent.telemetry("a-1", kw, ts=t0 + timedelta(seconds=s))
        for s, kw in ((1, 10.0), (2, 10.0), (5, 0.0), (7, 0.0))
    ]
    agent.send_batch(readings)

    async def stored() -> bool:
        history = (await clocked.http.get("/telemetry/a-1/history")).json()
        return len(history["readings"]) == len(readings)

    await eventually(stored, 5, "the readings were not stored")
    clocked.clock.advance(4)  # the gateway's release (3 s after apply) is in the past now
    released_ack(agent, did, vp.ReleaseCause.DURATION_ENDED, ("a-1",), ts=t0 + timedelta(seconds=3))

    async def completed() -> bool:
        return (await clocked.get(did))["state"] == "completed"

    await eventually(completed, 5, "never completed")
    clocked.clock.advance(7)  # past the window and the settle time

    assert await clocked.headend.dispatch.measure() == 1
    done = await clocked.get(did)
    assert done["delivered_kw"] == 10.0  # the readings while in force, not 5.0
    assert done["state"] == "completed"


# -- migration 0007 -------------------------------------------------------------------------


_NEW_COLUMNS = {
    "dispatches": {"duration_s", "ends_at", "cancel_requested_at", "cancel_reason"},
    "dispatch_deliveries": {
        "release_requested_at",
        "release_sent_at",
        "released_at",
        "release_cause",
        "in_force_until",
    },
}


def _columns(conn: psycopg.Connection, table: str) -> dict[str, tuple[str, str]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_name = %s",
        (table,),
    )
    return {str(r[0]): (str(r[1]), str(r[2])) for r in rows}


def test_migration_0007_adds_nullable_columns_keeps_old_rows_and_reverts(empty_db: str) -> None:
    upgrade(empty_db, "0006_dispatch_delivery")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dispatches (dispatch_id, target_kind, target_id, power_kw, state,"
            " issued_at, expires_at, updated_at)"
            " VALUES ('00000000-0000-4000-8000-000000000007', 'asset', 'a-1', 5, 'applied',"
            " now(), now(), now())"
        )
        conn.execute(
            "INSERT INTO dispatch_deliveries (dispatch_id, site_id, power_kw, state, updated_at)"
            " VALUES ('00000000-0000-4000-8000-000000000007', 'site-a', 5, 'applied', now())"
        )
    upgrade(empty_db, "0007_dispatch_time_in_force")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for table, cols in _NEW_COLUMNS.items():
            found = _columns(conn, table)
            assert cols <= set(found), table
            assert all(found[c][1] == "YES" for c in cols), found  # nullable
        assert _columns(conn, "dispatches")["duration_s"][0] == "double precision"
        assert _columns(conn, "dispatches")["ends_at"][0] == "timestamp with time zone"
        old = conn.execute(
            "SELECT state, duration_s, ends_at, cancel_requested_at FROM dispatches"
        ).fetchall()
        assert old == [("applied", None, None, None)]  # no end, never cancelled
        dlv = conn.execute("SELECT state, released_at, release_cause FROM dispatch_deliveries")
        assert dlv.fetchall() == [("applied", None, None)]
    command.downgrade(alembic_config(empty_db), "0006_dispatch_delivery")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for table, cols in _NEW_COLUMNS.items():
            assert not cols & set(_columns(conn, table)), table
        assert conn.execute("SELECT count(*) FROM dispatch_deliveries").fetchone() == (1,)
    upgrade(empty_db)  # and up again to head
