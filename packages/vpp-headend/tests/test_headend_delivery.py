"""Dispatch delivers what was asked and shows what was delivered (DESIGN.md §3a): acks
with shortfall make a dispatch ``partially_applied``; ``delivered_kw`` is measured from
the readings after it applied; a group is split by the member sites' live envelopes,
offline members are skipped, older gateways fall back to registry limits. A real
headend on a real database; the in-test agent speaks the raw protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from alembic import command
from headend_clocked import Clocked, clocked_headend

import vpp_protocol as vp
from vpp_headend import Settings
from vpp_headend.db.migrate import alembic_config, upgrade


def send_ack(
    agent: Any,
    setpoint_id: str,
    state: vp.AckState = vp.AckState.APPLIED,
    *,
    asset_id: str = "",
    applied_kw: float | None = None,
    requested_kw: float | None = None,
    shortfall_kw: float | None = None,
    limit: vp.LimitReason = vp.LimitReason.UNSPECIFIED,
    detail: str = "",
    allocations: list[vp.Allocation] | None = None,
) -> None:
    """A round-2 SetpointAck: requested, shortfall, limit reason and per allocation the
    applied power."""
    agent.send(
        setpoint_ack=vp.SetpointAck(
            setpoint_id=setpoint_id,
            asset_id=asset_id,
            state=state,
            ts=datetime.now(UTC),
            applied_kw=applied_kw,
            requested_kw=requested_kw,
            shortfall_kw=shortfall_kw,
            limit_reason=limit,
            limit_detail=detail,
            allocations=allocations or [],
        )
    )


def alloc(
    asset_id: str,
    power_kw: float,
    applied_kw: float | None = None,
    limit: vp.LimitReason = vp.LimitReason.UNSPECIFIED,
    detail: str = "",
) -> vp.Allocation:
    applied = power_kw if applied_kw is None else applied_kw
    return vp.Allocation(
        asset_id=asset_id,
        power_kw=power_kw,
        applied_kw=applied,
        limit_reason=limit,
        limit_detail=detail,
    )


def reading(
    agent: Any,
    asset_id: str,
    power_kw: float,
    *,
    ts: datetime | None = None,
    lo: float | None = None,
    hi: float | None = None,
) -> vp.Telemetry:
    """A reading with a live envelope (``lo``/``hi`` None: an older gateway's reading)."""
    r: vp.Telemetry = agent.telemetry(asset_id, power_kw, ts=ts)
    r.available_min_kw, r.available_max_kw = lo, hi
    return r


async def connect_site(
    running: Any, agents: Any, site_yaml: Any, site_id: str, assets: list[str], **kw: Any
) -> Any:
    await running.import_site(site_yaml(site_id, assets, **kw))
    agent = await agents(running.grpc_port, site_id)
    await agent.register(assets)
    return agent


async def envelopes_seen(running: Any, eventually: Any, want: dict[str, float | None]) -> None:
    """Wait until each asset's newest reading (with that available_max_kw) is in."""

    async def seen() -> bool:
        for asset_id, hi in want.items():
            resp = await running.http.get(f"/telemetry/{asset_id}")
            if resp.status_code != 200 or resp.json()["available_max_kw"] != hi:
                return False
        return True

    await eventually(seen, 5, f"readings {want} never landed")


# -- allocated and shortfall ------------------------------------------------------------


async def test_an_ack_short_of_the_request_is_partially_applied_with_its_shortfall(
    running, agents, site_yaml, eventually
) -> None:
    agent = await connect_site(running, agents, site_yaml, "site-a", ["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=50.0)
    sp = await agent.setpoint()
    send_ack(
        agent,
        sp.setpoint_id,
        asset_id="a-1",
        applied_kw=30.0,
        requested_kw=50.0,
        shortfall_kw=20.0,
        limit=vp.LimitReason.STATE_OF_CHARGE,
        detail="soc 4 % at reserve 5 %",
    )
    done = await running.wait_state(body["dispatch_id"], "partially_applied")
    assert (done["requested_kw"], done["allocated_kw"], done["shortfall_kw"]) == (50.0, 30.0, 20.0)
    assert done["applied_at"] is not None
    [dlv] = done["deliveries"]
    assert (dlv["state"], dlv["allocated_kw"], dlv["shortfall_kw"]) == ("partially_applied", 30, 20)
    [asset] = done["allocations"]
    assert (asset["allocation_kw"], asset["applied_kw"]) == (50.0, 30.0)
    assert (asset["limit_reason"], asset["limit_detail"]) == (
        "state_of_charge",
        "soc 4 % at reserve 5 %",
    )
    assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "partially_applied"]
    listed = await running.http.get("/dispatches", params={"state": "partially_applied"})
    assert [d["dispatch_id"] for d in listed.json()["items"]] == [body["dispatch_id"]]
    [summary] = listed.json()["items"]  # the list shows what was delivered too
    assert (summary["requested_kw"], summary["allocated_kw"], summary["shortfall_kw"]) == (
        50.0,
        30.0,
        20.0,
    )

    async def counted() -> bool:  # counted once the ack's transaction committed
        metrics = (await running.http.get("/metrics")).text
        return 'vpp_dispatches_final_total{state="partially_applied"} 1.0' in metrics

    await eventually(counted, 5, "partially_applied was never counted")


async def test_a_met_site_ack_is_applied_with_shortfall_zero_and_per_asset_figures(
    running, agents, site_yaml
) -> None:
    agent = await connect_site(running, agents, site_yaml, "site-a", ["a-1", "a-2"])
    body = await running.dispatch(site_id="site-a", power_kw=3.3)
    sp = await agent.setpoint()
    # 1.1 + 2.2 is 3.3000000000000003 in floats: met, and the shortfall is a clean 0.
    send_ack(
        agent,
        sp.setpoint_id,
        requested_kw=3.3,
        shortfall_kw=0.0,
        allocations=[alloc("a-1", 1.1), alloc("a-2", 2.2)],
    )
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert (done["allocated_kw"], done["shortfall_kw"]) == (3.3, 0.0)
    assert {a["asset_id"]: (a["allocation_kw"], a["applied_kw"]) for a in done["allocations"]} == {
        "a-1": (1.1, 1.1),
        "a-2": (2.2, 2.2),
    }
    assert all(a["limit_reason"] is None for a in done["allocations"])

    # Within the tolerance (0.5 kW here) a small gap is reported but still `applied`.
    again = await running.dispatch(site_id="site-a", power_kw=60.0)
    sp = await agent.setpoint()
    send_ack(
        agent,
        sp.setpoint_id,
        allocations=[alloc("a-1", 30.0, 29.8, vp.LimitReason.DEVICE_REDUCED), alloc("a-2", 30.0)],
    )
    done = await running.wait_state(again["dispatch_id"], "applied")
    assert (done["allocated_kw"], done["shortfall_kw"]) == (59.8, 0.2)
    by_asset = {a["asset_id"]: a["limit_reason"] for a in done["allocations"]}
    assert by_asset == {"a-1": "device_reduced", "a-2": None}


async def test_a_device_that_did_not_confirm_counts_nothing(running, agents, site_yaml) -> None:
    """An allocation with a limit reason and no applied power (timed out) took 0 kW."""
    agent = await connect_site(running, agents, site_yaml, "site-a", ["a-1", "a-2"])
    body = await running.dispatch(site_id="site-a", power_kw=40.0)
    sp = await agent.setpoint()
    timed_out = vp.Allocation(
        asset_id="a-2", power_kw=20.0, limit_reason=vp.LimitReason.DEVICE_TIMEOUT
    )
    send_ack(agent, sp.setpoint_id, allocations=[alloc("a-1", 20.0), timed_out])
    done = await running.wait_state(body["dispatch_id"], "partially_applied")
    assert (done["allocated_kw"], done["shortfall_kw"]) == (20.0, 20.0)
    assert {a["asset_id"]: a["applied_kw"] for a in done["allocations"]} == {
        "a-1": 20.0,
        "a-2": None,
    }


# -- delivered power, measured -----------------------------------------------------------


@pytest.fixture
async def clocked(settings: Settings) -> AsyncIterator[Clocked]:
    """A headend on a clock the test moves; delivered power over an 8 s window, 2 s
    settle (the defaults), measured on that clock."""
    async with clocked_headend(settings.with_(delivery_window_s=8.0, delivery_settle_s=2.0)) as c:
        yield c


async def test_delivered_power_is_the_mean_of_the_readings_in_the_window_after_apply(
    clocked, agents, site_yaml, eventually
) -> None:
    await clocked.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    agent = await agents(clocked.grpc_port, "site-a")
    await agent.register(["a-1", "a-2"])
    body = await clocked.dispatch(site_id="site-a", power_kw=-50.0)
    dispatch_id = body["dispatch_id"]
    sp = await agent.setpoint()
    send_ack(agent, sp.setpoint_id, allocations=[alloc("a-1", -25.0), alloc("a-2", -25.0)])
    done = await clocked.wait(eventually, dispatch_id, lambda d: d["state"] == "applied")
    applied_at = datetime.fromisoformat(done["applied_at"])

    def at(seconds: float) -> datetime:
        return applied_at + timedelta(seconds=seconds)

    # a-1 ramps to its setpoint; a-2 sits short of it. Readings before the apply and
    # after the window (8 s) are not part of the measurement.
    readings = [reading(agent, "a-1", 0.0, ts=at(-1))]
    readings += [reading(agent, "a-1", kw, ts=at(s)) for s, kw in ((2, -20.0), (6, -26.0))]
    readings += [reading(agent, "a-1", 5.0, ts=at(9))]
    readings += [reading(agent, "a-2", -15.0, ts=at(s)) for s in (1, 5, 8)]
    agent.send_batch(readings)

    async def stored() -> bool:
        history = (await clocked.http.get("/telemetry/a-1/history")).json()
        other = (await clocked.http.get("/telemetry/a-2/history")).json()
        return len(history["readings"]) == 4 and len(other["readings"]) == 3

    await eventually(stored, 5, "the readings were not stored")
    assert (await clocked.http.get(f"/dispatch/{dispatch_id}")).json()["delivered_kw"] is None
    clocked.clock.advance(10.5)  # past the window and the settle time
    done = await clocked.wait(eventually, dispatch_id, lambda d: d["measured_at"] is not None)
    assert done["delivered_kw"] == -38.0  # -23 + -15
    assert {a["asset_id"]: a["delivered_kw"] for a in done["allocations"]} == {
        "a-1": -23.0,
        "a-2": -15.0,
    }
    assert done["state"] == "applied"  # measuring is bookkeeping, not a transition

    # -38 - (-50) = +12 kW: over-delivered (less import than asked); 12 / 50 = 0.24.
    # Observed once the measurement's transaction committed (after the row is readable).
    async def observed() -> bool:
        metrics = (await clocked.http.get("/metrics")).text
        return "vpp_dispatch_tracking_error_kw_count 1.0" in metrics

    await eventually(observed, 5, "the tracking error was never observed")
    metrics = (await clocked.http.get("/metrics")).text
    assert 'vpp_dispatch_tracking_error_kw_bucket{le="10.0"} 0.0' in metrics
    assert 'vpp_dispatch_tracking_error_kw_bucket{le="100.0"} 1.0' in metrics
    assert "vpp_dispatch_tracking_error_ratio_sum 0.24" in metrics


async def test_an_asset_with_no_reading_in_the_window_leaves_delivered_unknown(
    clocked, agents, site_yaml, eventually
) -> None:
    await clocked.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(clocked.grpc_port, "site-a")
    await agent.register(["a-1"])
    body = await clocked.dispatch(asset_id="a-1", power_kw=10.0)
    sp = await agent.setpoint()
    send_ack(agent, sp.setpoint_id, asset_id="a-1", applied_kw=10.0)
    await clocked.wait(eventually, body["dispatch_id"], lambda d: d["state"] == "applied")
    clocked.clock.advance(10.5)
    done = await clocked.wait(
        eventually, body["dispatch_id"], lambda d: d["measured_at"] is not None
    )
    assert done["delivered_kw"] is None
    assert done["allocations"][0]["delivered_kw"] is None


# -- group split by live envelope ---------------------------------------------------------


async def test_a_group_is_split_by_the_member_sites_live_envelopes(
    running, agents, site_yaml, eventually
) -> None:
    g1 = await connect_site(running, agents, site_yaml, "g1", ["g1-a"], groups=["north"])
    g2 = await connect_site(running, agents, site_yaml, "g2", ["g2-a", "g2-b"], groups=["north"])
    # Nameplate: g1 100 kW, g2 200 kW. Live: g1's battery can give 60, g2's 10 + 10.
    g1.send_batch([reading(g1, "g1-a", 0.0, lo=-100.0, hi=60.0)])
    g2.send_batch([reading(g2, a, 0.0, lo=-100.0, hi=10.0) for a in ("g2-a", "g2-b")])
    await envelopes_seen(running, eventually, {"g1-a": 60.0, "g2-a": 10.0, "g2-b": 10.0})

    body = await running.dispatch(group_id="north", power_kw=40.0)
    shares = {d["site_id"]: d["power_kw"] for d in body["deliveries"]}
    assert shares == {"g1": 30.0, "g2": 10.0}  # 60 : 20, not 100 : 200
    assert sum(shares.values()) == 40.0
    assert "live envelope: g1 g2" in body["split"]

    # Beyond what is available now the split says so, and so does the dispatch.
    short = await running.dispatch(group_id="north", power_kw=100.0)
    shares = {d["site_id"]: d["power_kw"] for d in short["deliveries"]}
    assert shares == {"g1": 60.0, "g2": 20.0}
    assert "shortfall 20.000" in short["split"]
    for agent in (g1, g2):
        await agent.setpoint()  # the first group dispatch
    sp1, sp2 = await g1.setpoint(), await g2.setpoint()
    send_ack(g1, sp1.setpoint_id, allocations=[alloc("g1-a", 60.0)])
    send_ack(g2, sp2.setpoint_id, allocations=[alloc("g2-a", 10.0), alloc("g2-b", 10.0)])
    done = await running.wait_state(short["dispatch_id"], "partially_applied")
    assert {d["site_id"]: d["state"] for d in done["deliveries"]} == {
        "g1": "applied",
        "g2": "applied",
    }  # each site met its share; the group as a whole is 20 kW short
    assert (done["allocated_kw"], done["shortfall_kw"]) == (80.0, 20.0)


async def test_a_member_site_offline_at_dispatch_time_is_skipped_and_its_share_redistributed(
    running, agents, site_yaml
) -> None:
    g1 = await connect_site(running, agents, site_yaml, "g1", ["g1-a"], groups=["north"])
    await running.import_site(site_yaml("g2", ["g2-a"], groups=["north"]))  # offline

    body = await running.dispatch(group_id="north", power_kw=80.0)
    by_site = {d["site_id"]: d for d in body["deliveries"]}
    assert (by_site["g1"]["power_kw"], by_site["g1"]["state"]) == (80.0, "sent")
    assert (by_site["g2"]["power_kw"], by_site["g2"]["state"]) == (0.0, "skipped")
    assert by_site["g2"]["reason"] == "offline at dispatch time"
    assert "offline at dispatch time, no share: g2" in body["split"]
    assert ("skipped", "site", "g2") in [
        (e["state"], e["scope"], e["scope_id"]) for e in body["events"]
    ]

    sp = await g1.setpoint()
    assert sp.power_kw == 80.0
    send_ack(g1, sp.setpoint_id, allocations=[alloc("g1-a", 80.0)])
    done = await running.wait_state(body["dispatch_id"], "applied")  # g2 does not count
    assert (done["allocated_kw"], done["shortfall_kw"]) == (80.0, 0.0)

    # g2 comes online: nothing of the group dispatch is delivered to it; the first
    # setpoint it gets is the next one for it.
    g2 = await agents(running.grpc_port, "g2")
    await g2.register(["g2-a"])
    later = await running.dispatch(asset_id="g2-a", power_kw=5.0)
    assert (await g2.setpoint()).setpoint_id == later["dispatch_id"]


async def test_with_no_member_online_every_share_waits_pending(running, site_yaml) -> None:
    for site in ("g1", "g2"):
        await running.import_site(site_yaml(site, [f"{site}-a"], groups=["north"]))
    body = await running.dispatch(group_id="north", power_kw=80.0)
    assert {d["site_id"]: (d["state"], d["power_kw"]) for d in body["deliveries"]} == {
        "g1": ("pending", 40.0),
        "g2": ("pending", 40.0),
    }


async def test_an_older_gateway_without_envelopes_is_split_by_registry_limits(
    running, agents, site_yaml, eventually
) -> None:
    old = await connect_site(
        running, agents, site_yaml, "old", ["old-a"], groups=["north"], capacity_kw=300
    )
    new = await connect_site(running, agents, site_yaml, "new", ["new-a"], groups=["north"])
    old.send_batch([reading(old, "old-a", 0.0)])  # fresh, but no envelope fields
    new.send_batch([reading(new, "new-a", 0.0, lo=-100.0, hi=100.0)])
    await envelopes_seen(running, eventually, {"old-a": None, "new-a": 100.0})

    body = await running.dispatch(group_id="north", power_kw=-80.0)
    assert {d["site_id"]: d["power_kw"] for d in body["deliveries"]} == {
        "new": -20.0,
        "old": -60.0,  # its registered ±300 kW against new's live 100 kW: 3 : 1
    }
    assert "live envelope: new" in body["split"]
    assert "registry limits: old" in body["split"]


# -- migration 0006 ----------------------------------------------------------------------


_NEW_COLUMNS = {
    "dispatches": {"allocated_kw", "shortfall_kw", "delivered_kw", "applied_at", "measured_at"},
    "dispatch_deliveries": {"allocated_kw", "shortfall_kw", "applied_at"},
    "dispatch_targets": {"limit_reason", "limit_detail", "delivered_kw"},
}


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
    )
    return {str(r[0]) for r in rows}


def test_migration_0006_adds_nullable_columns_keeps_old_dispatches_and_reverts(
    empty_db: str,
) -> None:
    upgrade(empty_db, "0005_telemetry_envelope")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dispatches (dispatch_id, target_kind, target_id, power_kw, state,"
            " issued_at, expires_at, updated_at)"
            " VALUES (gen_random_uuid(), 'asset', 'a-1', 5, 'applied', now(), now(), now())"
        )
    upgrade(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for table, cols in _NEW_COLUMNS.items():
            assert cols <= _columns(conn, table), table
        old = conn.execute(
            "SELECT state, allocated_kw, delivered_kw, applied_at FROM dispatches"
        ).fetchall()
        assert old == [("applied", None, None, None)]  # never measured: no applied_at
        valid = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'ix_dispatches_unmeasured'"
        ).fetchone()
        assert valid == (True,)
    command.downgrade(alembic_config(empty_db), "0005_telemetry_envelope")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for table, cols in _NEW_COLUMNS.items():
            assert not cols & _columns(conn, table), table
        assert conn.execute("SELECT count(*) FROM dispatches").fetchone() == (1,)
