"""A setpoint's time in force over a real stream (DESIGN.md §3b): duration, supersede, cancel.

Time is a `ManualClock` the test moves; the `FakeHeadend` sends heartbeats only every 30 s so
that a jump of the clock does not look like a silent headend.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from gateway_tif import (
    Devices,
    after,
    checks,
    final,
    manual_clock,
    release_ack,
    released,
    states,
    until,
)

import vpp_protocol as pb
from vpp_gateway.model import ReleaseCause
from vpp_gateway.testing import FakeHeadend

APPLIED = pb.AckState.APPLIED
RELEASED = pb.AckState.RELEASED
RECEIVED = pb.AckState.RECEIVED


def _dark() -> str:
    """Simulator parameters that keep a PV in the dark now: solar noon 12 h away."""
    now = datetime.now(UTC)
    midnight = round((now.hour + now.minute / 60 + 12) % 24, 3)
    return f"{{solar_noon_utc_h: {midnight}, day_length_h: 2}}"


def _site() -> str:
    return f"""
site_id: site-d
assets:
  - {{asset_id: d-bess-1, kind: bess, capacity_kw: 50, energy_kwh: 100}}
  - {{asset_id: d-bess-2, kind: bess, capacity_kw: 50, energy_kwh: 100}}
  - {{asset_id: d-bess-3, kind: bess, capacity_kw: 100, energy_kwh: 200}}
  - {{asset_id: d-pv-1, kind: pv, capacity_kw: 40, simulator: {_dark()}}}
  - {{asset_id: d-meter-1, kind: meter}}
"""


FALLBACK_SITE = """
site_id: site-f
assets:
  - {asset_id: f-bess-1, kind: bess, capacity_kw: 50, energy_kwh: 100, fallback_kw: 7}
  - {asset_id: f-bess-2, kind: bess, capacity_kw: 50, energy_kwh: 100}
"""


#: The FakeHeadend's heartbeat (conftest `headend`): out of the way of the manual clock.
HEADEND_HEARTBEAT_S = 30.0


async def test_a_duration_ends_in_a_release_and_readings_show_it(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    clock = manual_clock()
    async with running(make_settings(_site(), port=headend.port), clock=clock) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 5)
        sid = await headend.push_setpoint(20.0, asset_id="d-bess-1", duration_s=30.0)
        applied = await final(headend, sid)
        n = len(headend.readings)
        await headend.wait_for(
            lambda: any(t.setpoint_id == sid for t in after(headend, "d-bess-1", n))
        )
        in_force = next(t for t in after(headend, "d-bess-1", n) if t.setpoint_id == sid)
        snap = next(a for a in agent.snapshot()["assets"] if a["asset_id"] == "d-bess-1")

        clock.advance(29.0)
        await checks(agent)
        assert released(headend, sid) == []
        assert agent.fleet["d-bess-1"].setpoint_kw == 20.0
        ticks = agent.mux.ticks
        clock.advance(1.0)
        ack = await release_ack(headend, sid)
        assert agent.mux.ticks - ticks <= 2, "not released within a tick of its end"
        m = len(headend.readings)
        await headend.wait_for(lambda: len(after(headend, "d-bess-1", m)) >= 3)
        last = after(headend, "d-bess-1", m)[-1]

        # delivered again after its end: acknowledged RELEASED again, never applied again
        await headend.push_setpoint(20.0, asset_id="d-bess-1", setpoint_id=sid, duration_s=30.0)
        await final(headend, sid, 5)
        assert agent.fleet["d-bess-1"].setpoint_kw is None

    end = applied.ts + timedelta(seconds=30)
    assert (applied.state, applied.ends_at) == (APPLIED, end)
    assert (in_force.setpoint_kw, in_force.setpoint_ends_at) == (20.0, end)
    assert (snap["setpoint_ends_at"], snap["control"]["ends_at"]) == (end.isoformat(),) * 2
    assert (ack.release_cause, ack.asset_id, ack.ts, ack.reason) == (
        pb.ReleaseCause.DURATION_ENDED,
        "d-bess-1",
        end,
        "duration ended",
    )
    assert [(a.asset_id, a.power_kw, a.applied_kw) for a in ack.allocations] == [
        ("d-bess-1", 20.0, None)
    ]
    assert (last.setpoint_kw, last.setpoint_id, last.setpoint_ends_at) == (None, "", None)
    assert last.power_kw == 0.0  # a battery back to its own behaviour idles
    assert states(headend, sid) == [RECEIVED, APPLIED, RELEASED, RECEIVED, RELEASED]
    assert f"event=setpoint_released setpoint_id={sid} cause=duration_ended assets=d-bess-1" in (
        caplog.text
    )


async def test_the_end_is_the_earlier_of_ends_at_and_the_duration(
    headend: FakeHeadend, make_settings, running
) -> None:
    clock = manual_clock()
    async with running(make_settings(_site(), port=headend.port), clock=clock) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        t0 = clock.now()
        by_end = await headend.push_setpoint(
            10.0, asset_id="d-bess-1", ends_at=t0 + timedelta(seconds=10), duration_s=60.0
        )
        by_duration = await headend.push_setpoint(
            10.0, asset_id="d-bess-2", ends_at=t0 + timedelta(seconds=90), duration_s=20.0
        )
        late = await headend.push_setpoint(
            10.0, asset_id="d-bess-3", ends_at=t0 - timedelta(seconds=1)
        )
        a, b, c = [await final(headend, s) for s in (by_end, by_duration, late)]
        clock.advance(10.0)
        first = await release_ack(headend, by_end)
        await checks(agent)
        assert released(headend, by_duration) == []
        clock.advance(10.0)
        second = await release_ack(headend, by_duration)
        held = agent.fleet["d-bess-3"].setpoint_kw
    assert (a.ends_at, b.ends_at) == (t0 + timedelta(seconds=10), t0 + timedelta(seconds=20))
    assert (first.ts, second.ts) == (a.ends_at, b.ends_at)
    # its time in force was over before it arrived: not applied at all
    assert c.state == pb.AckState.EXPIRED
    assert "after ends_at" in c.reason
    assert held is None


@pytest.mark.parametrize("duration", [0.0, -5.0, math.nan, math.inf, 1e12])
async def test_a_bad_duration_is_rejected(
    headend: FakeHeadend, make_settings, running, duration: float
) -> None:
    async with running(make_settings(_site(), port=headend.port)) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(10.0, asset_id="d-bess-1", duration_s=duration)
        ack = await final(headend, sid)
        assert agent.fleet["d-bess-1"].setpoint_kw is None
    assert ack.state == pb.AckState.REJECTED
    assert "duration_s" in ack.reason


async def test_a_newer_setpoint_takes_over_without_the_device_seeing_its_fallback(
    headend: FakeHeadend, make_settings, running
) -> None:
    clock = manual_clock()
    devices = Devices()
    settings = make_settings(FALLBACK_SITE, port=headend.port)
    async with running(settings, clock=clock, device_factory=devices) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        old = await headend.push_setpoint(20.0, asset_id="f-bess-1", duration_s=30.0)
        assert (await final(headend, old)).state == APPLIED
        new = await headend.push_setpoint(-10.0, asset_id="f-bess-1")
        assert (await final(headend, new)).state == APPLIED
        start = len(headend.readings)
        clock.advance(31.0)
        end = await release_ack(headend, old)
        await checks(agent)
        n = len(headend.readings)
        await headend.wait_for(lambda: len(after(headend, "f-bess-1", n)) >= 2)
        asset = agent.fleet["f-bess-1"]
        held = (asset.setpoint_kw, asset.setpoint_id, asset.setpoint_ends_at)
        # without an end: superseded on its only asset, it is no longer in force at all
        plain = await headend.push_setpoint(5.0, asset_id="f-bess-2")
        plain2 = await headend.push_setpoint(6.0, asset_id="f-bess-2")
        await final(headend, plain2)
        await headend.push_release(plain)
        gone = await release_ack(headend, plain)
        other = (agent.fleet["f-bess-2"].setpoint_kw, agent.fleet["f-bess-2"].setpoint_id)
        in_force = [f.setpoint_id for f in agent.control.setpoints()]
    assert (list(gone.allocations), gone.reason) == ([], "not in force: superseded on every asset")
    assert other == (6.0, plain2)
    assert in_force == [new, plain2]
    # no release between the two, and none at the old one's end: it controlled nothing
    assert devices["f-bess-1"].calls == [("apply", 20.0), ("apply", -10.0)]
    assert (end.release_cause, list(end.allocations)) == (pb.ReleaseCause.DURATION_ENDED, [])
    assert "superseded on every asset" in end.reason
    assert held == (-10.0, new, None)
    readings = after(headend, "f-bess-1", start)
    assert readings
    assert all(t.setpoint_id == new and t.power_kw == -10.0 for t in readings)


async def test_a_cancel_releases_what_the_setpoint_still_controls_and_is_idempotent(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(_site(), port=headend.port)) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 5)
        site = await headend.push_setpoint(60.0, site_id="site-d")
        site_ack = await final(headend, site)
        newer = await headend.push_setpoint(-5.0, asset_id="d-bess-1")
        await final(headend, newer)
        await headend.push_release(site, "cancelled by operator")
        cancel = await release_ack(headend, site)
        held = {a.asset_id: (a.setpoint_kw, a.setpoint_id) for a in agent.fleet}
        # twice: the same answer, nothing released
        await headend.push_release(site)
        again = await release_ack(headend, site, 2)
        # a setpoint never seen: released before it arrives, then never applied
        unknown = str(uuid.uuid4())
        await headend.push_release(unknown)
        first = await release_ack(headend, unknown)
        await headend.push_setpoint(9.0, asset_id="d-bess-2", setpoint_id=unknown)
        await headend.wait_for(lambda: len(headend.acks_for(unknown)) >= 3)
        late_kw = agent.fleet["d-bess-2"].setpoint_kw
        # the newer one was never touched: cancelling it releases d-bess-1 alone
        await headend.push_release(newer)
        last = await release_ack(headend, newer)

    shares = {a.asset_id: a.power_kw for a in site_ack.allocations}
    assert site_ack.state == APPLIED
    assert shares["d-pv-1"] == 0.0  # in the dark: a 0 kW share, under control all the same
    assert (cancel.release_cause, cancel.reason, cancel.asset_id) == (
        pb.ReleaseCause.CANCELLED,
        "cancelled by operator",
        "",
    )
    assert {a.asset_id: a.power_kw for a in cancel.allocations} == {
        k: v for k, v in shares.items() if k != "d-bess-1"
    }
    assert all(a.applied_kw is None for a in cancel.allocations)  # no fallback_kw: own way
    assert held["d-bess-1"] == (-5.0, newer)
    assert all(held[a] == (None, "") for a in ("d-bess-2", "d-bess-3", "d-pv-1"))
    assert (again.release_cause, list(again.allocations)) == (pb.ReleaseCause.CANCELLED, [])
    assert again.reason == "not in force: already released (cancelled)"
    assert list(first.allocations) == []
    assert "never applied here" in first.reason
    assert states(headend, unknown) == [RELEASED, RECEIVED, RELEASED]
    assert late_kw is None
    assert [a.asset_id for a in last.allocations] == ["d-bess-1"]
    assert last.asset_id == "d-bess-1"


async def test_a_release_goes_to_the_fallback_kw_of_the_site_file(
    headend: FakeHeadend, make_settings, running
) -> None:
    clock = manual_clock()
    devices = Devices()
    settings = make_settings(FALLBACK_SITE, port=headend.port)
    async with running(settings, clock=clock, device_factory=devices):
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(30.0, site_id="site-f", duration_s=5.0)
        assert (await final(headend, sid)).state == APPLIED
        clock.advance(5.0)
        ack = await release_ack(headend, sid)
        n = len(headend.readings)
        await headend.wait_for(lambda: len(after(headend, "f-bess-1", n)) >= 2)
        last = after(headend, "f-bess-1", n)[-1]
    by_id = {a.asset_id: a for a in ack.allocations}
    assert (by_id["f-bess-1"].applied_kw, by_id["f-bess-2"].applied_kw) == (7.0, None)
    # the fallback goes through apply; the asset without one is released (its own way)
    assert devices["f-bess-1"].calls == [("apply", 15.0), ("apply", 7.0)]
    assert devices["f-bess-2"].calls == [("apply", 15.0), ("release", None)]
    assert (last.power_kw, last.setpoint_kw, last.setpoint_id) == (7.0, None, "")


async def test_a_release_the_device_refuses_is_reported_and_retried(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    clock = manual_clock()
    devices = Devices()
    settings = make_settings(FALLBACK_SITE, port=headend.port)
    async with running(settings, clock=clock, device_factory=devices) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(12.0, asset_id="f-bess-2", duration_s=5.0)
        await final(headend, sid)
        devices["f-bess-2"].fail_release = True  # type: ignore[attr-defined]
        clock.advance(5.0)
        ack = await release_ack(headend, sid)
        pending = agent.control.of("f-bess-2")
        snap = next(a for a in agent.snapshot()["assets"] if a["asset_id"] == "f-bess-2")
        still = agent.fleet["f-bess-2"].setpoint_kw
        await until(lambda: devices["f-bess-2"].calls.count(("release", None)) >= 2)
        devices["f-bess-2"].fail_release = False  # type: ignore[attr-defined]
        await until(lambda: agent.control.of("f-bess-2") is None)
        asset = agent.fleet["f-bess-2"]
        after_retry = (asset.setpoint_kw, asset.setpoint_id)
        await checks(agent)
    (alloc,) = ack.allocations
    assert (alloc.asset_id, alloc.applied_kw, alloc.limit_reason) == (
        "f-bess-2",
        None,
        pb.LimitReason.DEVICE_FAULT,
    )
    assert alloc.limit_detail == (
        "release failed: device error: bus timeout on release; retried every tick"
    )
    assert pending is not None
    assert pending.releasing is ReleaseCause.DURATION_ENDED
    assert snap["control"]["releasing"] == "duration_ended"
    assert still == 12.0  # the device may still hold it: the readings do not pretend
    assert after_retry == (None, "")
    assert len(released(headend, sid)) == 1  # one ack; the retry is logged
    assert "event=release_failed" in caplog.text
    assert "event=release_confirmed asset_id=f-bess-2" in caplog.text


async def test_a_legacy_agent_takes_a_duration_and_a_release(
    headend: FakeHeadend, make_settings, running, legacy_site: str
) -> None:
    clock = manual_clock()
    async with running(make_settings(legacy_site, port=headend.port), clock=clock) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        timed = await headend.push_setpoint(8.0, duration_s=3.0)
        applied = await final(headend, timed)
        clock.advance(3.0)
        ended = await release_ack(headend, timed)
        other = await headend.push_setpoint(-4.0)
        await final(headend, other)
        await headend.push_release(other, "operator")
        cancelled = await release_ack(headend, other)
        kw = agent.fleet.only().setpoint_kw
    assert applied.ends_at == applied.ts + timedelta(seconds=3)
    for ack, cause in (
        (ended, pb.ReleaseCause.DURATION_ENDED),
        (cancelled, pb.ReleaseCause.CANCELLED),
    ):
        assert (ack.asset_id, ack.release_cause) == ("", cause)
        assert [a.asset_id for a in ack.allocations] == ["l-bess-1"]
    assert kw is None


async def test_on_the_real_clock_a_duration_ends_within_a_tick(
    headend: FakeHeadend, make_settings, running
) -> None:
    settings = make_settings(_site(), port=headend.port, tick_s=0.5)
    async with running(settings) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(-15.0, asset_id="d-bess-2", duration_s=0.6)
        applied = await final(headend, sid)
        ack = await release_ack(headend, sid)
        kw = agent.fleet["d-bess-2"].setpoint_kw
    assert applied.ends_at is not None
    lag = (ack.ts - applied.ends_at).total_seconds()
    assert 0.0 <= lag < settings.tick_s
    assert kw is None
