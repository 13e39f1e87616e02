"""Setpoints over a real stream: per-asset, site/group split, clamping, expiry, re-delivery."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

import vpp_protocol as pb
from vpp_gateway.testing import FakeHeadend


def _final(headend: FakeHeadend, sid: str) -> pb.SetpointAck:
    acks = headend.acks_for(sid)
    assert acks[0].state == pb.AckState.RECEIVED
    return acks[-1]


async def _acked(headend: FakeHeadend, sid: str, n: int = 2) -> pb.SetpointAck:
    await headend.wait_for(lambda: len(headend.acks_for(sid)) >= n)
    return _final(headend, sid)


async def test_per_asset_setpoint_changes_only_that_asset(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(port=headend.port)) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 5)
        before = {a.asset_id: a.setpoint_kw for a in agent.fleet}
        sid = await headend.push_setpoint(-20.0, asset_id="t-bess-1")
        ack = await _acked(headend, sid)
        n = len(headend.readings)
        await headend.wait_for(lambda: len(headend.readings) >= n + 10)
    assert ack.state == pb.AckState.APPLIED
    assert ack.asset_id == "t-bess-1"
    assert ack.applied_kw == -20.0
    assert not ack.clamped
    after = [t for t in headend.readings[n:] if t.asset_id == "t-bess-1"]
    assert after
    assert all(t.setpoint_kw == -20.0 and t.setpoint_id == sid for t in after)
    assert after[-1].power_kw == -20.0
    others = [t for t in headend.readings[n:] if t.asset_id != "t-bess-1"]
    assert others
    assert all(t.setpoint_kw == before[t.asset_id] for t in others)
    assert all(t.setpoint_id == "" for t in others)


async def test_out_of_limits_is_clamped_and_says_so(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(port=headend.port)) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(500.0, asset_id="t-bess-1")
        ack = await _acked(headend, sid)
        assert agent.fleet["t-bess-1"].setpoint_kw == 50.0
    assert ack.state == pb.AckState.APPLIED
    assert ack.clamped
    assert ack.applied_kw == 50.0
    assert "max_kw 50" in ack.reason


def _site_with_pv(daylight: bool) -> str:
    # Solar noon now (PV at its flat top) or 12 h away (dark), whatever the wall clock.
    now = datetime.now(UTC)
    noon = round((now.hour + now.minute / 60 + (0 if daylight else 12)) % 24, 3)
    sim = f"{{solar_noon_utc_h: {noon}, day_length_h: {24 if daylight else 2}}}"
    return f"""
site_id: site-t
groups: [vpp-north]
assets:
  - {{asset_id: t-pv-1, kind: pv, capacity_kw: 100, simulator: {sim}}}
  - {{asset_id: t-bess-1, kind: bess, capacity_kw: 50, energy_kwh: 100}}
  - {{asset_id: t-bess-2, kind: bess, capacity_kw: 150, energy_kwh: 300}}
  - {{asset_id: t-meter-1, kind: meter}}
  - {{asset_id: t-load-1, kind: load, capacity_kw: 20}}
"""


@pytest.mark.parametrize("daylight", [True, False], ids=["day", "night"])
async def test_site_setpoint_split_sums_to_request(
    headend: FakeHeadend, make_settings, running, daylight: bool
) -> None:
    async with running(make_settings(_site_with_pv(daylight), port=headend.port)) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 5)
        sid = await headend.push_setpoint(120.0, site_id="site-t")
        ack = await _acked(headend, sid)
        gid = await headend.push_setpoint(-80.0, group_id="vpp-north")
        gack = await _acked(headend, gid)
        applied = {a.asset_id: a.setpoint_kw for a in agent.fleet}
    for a, total in ((ack, 120.0), (gack, -80.0)):
        assert a.state == pb.AckState.APPLIED, a.reason
        assert a.asset_id == ""
        assert math.isclose(sum(x.power_kw for x in a.allocations), total, abs_tol=1e-6)
        assert math.isclose(sum(x.applied_kw or 0 for x in a.allocations), total, abs_tol=1e-6)
        assert (a.requested_kw, a.shortfall_kw) == (total, 0.0)
        assert "t-meter-1" not in {x.asset_id for x in a.allocations}
    pv = next(x for x in ack.allocations if x.asset_id == "t-pv-1")
    if daylight:
        assert pv.power_kw > 0
    else:
        assert pv.power_kw == 0.0
        assert pv.limit_reason == pb.LimitReason.AVAILABLE_POWER
        assert pv.limit_detail == "no sun: available 0 kW"
    assert {x.asset_id: x.power_kw for x in gack.allocations} == {
        k: v for k, v in applied.items() if k in {x.asset_id for x in gack.allocations}
    }


async def test_bad_targets_are_rejected(headend: FakeHeadend, make_settings, running) -> None:
    async with running(make_settings(port=headend.port)):
        await headend.wait_for(lambda: headend.current is not None)
        unknown = await headend.push_setpoint(5.0, asset_id="nope-1")
        meter = await headend.push_setpoint(5.0, asset_id="t-meter-1")
        foreign = await headend.push_setpoint(5.0, site_id="site-other")
        group = await headend.push_setpoint(5.0, group_id="vpp-south")
        nan = await headend.push_setpoint(float("nan"), asset_id="t-bess-1")
        acks = [await _acked(headend, s) for s in (unknown, meter, foreign, group, nan)]
    assert [a.state for a in acks] == [pb.AckState.REJECTED] * 5
    assert "unknown asset" in acks[0].reason
    assert acks[0].asset_id == "nope-1"
    assert "takes no setpoints" in acks[1].reason


async def test_expired_setpoint_is_not_applied(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(port=headend.port)) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        past = datetime.now(UTC) - timedelta(seconds=5)
        sid = await headend.push_setpoint(30.0, asset_id="t-bess-2", expires_at=past)
        ack = await _acked(headend, sid)
        assert agent.fleet["t-bess-2"].setpoint_kw is None
    assert ack.state == pb.AckState.EXPIRED
    assert "after expires_at" in ack.reason


async def test_redelivered_setpoint_acked_again_applied_once(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    settings = make_settings(port=headend.port)
    async with running(settings) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(10.0, asset_id="t-bess-1")
        first = await _acked(headend, sid)
        applied_at = agent.fleet["t-bess-1"].applied_at
        # the operator moves the asset on; then the old setpoint is delivered again
        other = await headend.push_setpoint(-5.0, asset_id="t-bess-1")
        await _acked(headend, other)
        await headend.push_setpoint(10.0, asset_id="t-bess-1", setpoint_id=sid)
        again = await _acked(headend, sid, 4)
        assert agent.fleet["t-bess-1"].setpoint_kw == -5.0, "re-delivery was applied again"
        assert agent.fleet["t-bess-1"].applied_at != applied_at
    assert again.state == first.state == pb.AckState.APPLIED
    assert again.applied_kw == first.applied_kw
    # across a restart: the journal is on disk
    async with running(settings) as agent:
        await headend.wait_for(lambda: headend.current is not None and len(headend.sessions) == 2)
        await headend.push_setpoint(10.0, asset_id="t-bess-1", setpoint_id=sid)
        await _acked(headend, sid, 6)
        # the newer setpoint is still in force (re-applied at start); the old one is not
        assert (agent.fleet["t-bess-1"].setpoint_kw, agent.fleet["t-bess-1"].setpoint_id) == (
            -5.0,
            other,
        )
    assert [a.state for a in headend.acks_for(sid)] == [
        pb.AckState.RECEIVED,
        pb.AckState.APPLIED,
    ] * 3
    assert "setpoint_duplicate" in caplog.text


async def test_device_failure_fails_its_setpoint_and_moves_its_site_share(
    headend: FakeHeadend, make_settings, running
) -> None:
    site = """
site_id: site-f
assets:
  - {asset_id: f-bess-1, kind: bess, capacity_kw: 10, simulator: {fail_apply: true}}
  - {asset_id: f-bess-2, kind: bess, capacity_kw: 10}
"""
    async with running(make_settings(site, port=headend.port)):
        await headend.wait_for(lambda: len(headend.readings) >= 2)
        one = await headend.push_setpoint(5.0, asset_id="f-bess-1")
        site_sp = await headend.push_setpoint(4.0, site_id="site-f")
        a1, a2 = await _acked(headend, one), await _acked(headend, site_sp)
    assert a1.state == pb.AckState.FAILED
    assert "refused" in a1.reason
    assert (a1.limit_reason, a1.requested_kw, a1.shortfall_kw) == (
        pb.LimitReason.DEVICE_FAULT,
        5.0,
        5.0,
    )
    # the site setpoint: the refused share goes to the other battery, the total is met
    assert a2.state == pb.AckState.APPLIED
    assert "f-bess-1" in a2.reason
    by_id = {x.asset_id: x for x in a2.allocations}
    assert by_id["f-bess-1"].applied_kw is None
    assert by_id["f-bess-1"].limit_reason == pb.LimitReason.DEVICE_FAULT
    assert (by_id["f-bess-2"].power_kw, by_id["f-bess-2"].applied_kw) == (4.0, 4.0)
    assert (a2.applied_kw, a2.shortfall_kw) == (4.0, 0.0)
