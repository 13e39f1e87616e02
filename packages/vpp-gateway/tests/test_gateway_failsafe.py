"""The fail-safe and restarts (DESIGN.md §3b), over a real stream, on a `ManualClock`.

With no working session for ``failsafe_after_s`` the gateway releases every asset under
control; its acks reach the headend once it is back. A restarted gateway re-applies what is
still in force for the time it has left, and releases what ended while it was down.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from gateway_tif import Devices, after, checks, final, manual_clock, release_ack, released, until
from typer.testing import CliRunner

import vpp_protocol as pb
from vpp_gateway import ManualClock
from vpp_gateway.cli import app
from vpp_gateway.testing import FakeHeadend

SITE = """
site_id: site-s
assets:
  - {asset_id: s-bess-1, kind: bess, capacity_kw: 50, energy_kwh: 100}
  - {asset_id: s-bess-2, kind: bess, capacity_kw: 50, energy_kwh: 100}
  - {asset_id: s-gen-1, kind: genset, capacity_kw: 100, fallback_kw: 0}
  - {asset_id: s-meter-1, kind: meter}
"""


#: The FakeHeadend's heartbeat (conftest `headend`): out of the way of the manual clock.
HEADEND_HEARTBEAT_S = 30.0


async def test_no_session_for_failsafe_after_s_releases_every_asset(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    clock = manual_clock()
    settings = make_settings(SITE, port=headend.port, failsafe_after_s=60.0)
    async with running(settings, clock=clock) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 4)
        site = await headend.push_setpoint(40.0, site_id="site-s")
        one = await headend.push_setpoint(10.0, asset_id="s-bess-1")
        await final(headend, site)
        await final(headend, one)
        port = headend.port
        await headend.stop()  # the headend goes away: the gateway only gets refused
        await until(lambda: agent.connection.failures >= 1)

        clock.advance(59.0)
        await checks(agent)
        assert agent.releaser.failsafe.tripped_at is None
        assert all(a.setpoint_kw is not None for a in agent.fleet if a.dispatchable)
        ticks = agent.mux.ticks
        clock.advance(1.0)
        await until(lambda: all(a.setpoint_kw is None for a in agent.fleet))
        assert agent.mux.ticks - ticks <= 2, "not released within a tick of failsafe_after_s"
        held = {a.asset_id: (a.setpoint_kw, a.setpoint_id) for a in agent.fleet}
        await checks(agent)
        trips = caplog.text.count("event=failsafe ")

        await headend.start(port=port)
        await headend.wait_for(lambda: bool(released(headend, site) and released(headend, one)), 10)
        await until(lambda: agent.releaser.failsafe.tripped_at is None)  # re-armed
        n = len(headend.readings)
        await headend.wait_for(lambda: len(after(headend, "s-bess-1", n)) >= 2)
        latest = after(headend, "s-bess-1", n)[-1]

    assert all(v == (None, "") for v in held.values())
    assert trips == 1
    line = next(x for x in caplog.text.splitlines() if "event=failsafe " in x)
    for word in ("s-bess-1", "s-bess-2", "s-gen-1", site, one, "after_s=60"):
        assert word in line, line
    site_ack, one_ack = released(headend, site)[0], released(headend, one)[0]
    assert {site_ack.release_cause, one_ack.release_cause} == {pb.ReleaseCause.FAILSAFE}
    # the site setpoint lost s-bess-1 to the newer one: it releases only what it held
    assert {a.asset_id for a in site_ack.allocations} == {"s-bess-2", "s-gen-1"}
    assert [a.asset_id for a in one_ack.allocations] == ["s-bess-1"]
    gen = next(a for a in site_ack.allocations if a.asset_id == "s-gen-1")
    assert gen.applied_kw == 0.0  # its fallback_kw
    assert "no working session with the headend for 60 s" in one_ack.reason
    assert "event=failsafe_rearmed" in caplog.text
    assert (latest.setpoint_kw, latest.setpoint_id) == (None, "")
    # readings spooled during the outage show the release too
    assert any(t.asset_id == "s-bess-1" and t.setpoint_id == "" for t in headend.readings[:n]), (
        "no spooled reading after the release"
    )


async def test_failsafe_off_holds_the_setpoints(
    headend: FakeHeadend, make_settings, running
) -> None:
    clock = manual_clock()
    settings = make_settings(SITE, port=headend.port, failsafe_after_s=0.0)
    async with running(settings, clock=clock) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(10.0, asset_id="s-bess-1")
        await final(headend, sid)
        await headend.stop()
        await until(lambda: agent.connection.failures >= 1)
        clock.advance(10_000.0)
        await checks(agent, 3)
        assert agent.fleet["s-bess-1"].setpoint_kw == 10.0
        snap = agent.snapshot()["failsafe"]
        assert (snap["after_s"], snap["tripped"]) == (0.0, False)


async def test_a_restart_mid_duration_reapplies_it_until_its_original_end(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    settings = make_settings(SITE, port=headend.port)
    clock = manual_clock()
    t0 = clock.now()
    async with running(settings, clock=clock):
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(20.0, asset_id="s-bess-1", duration_s=60.0)
        applied = await final(headend, sid)

    later = ManualClock(t0 + timedelta(seconds=20))
    devices = Devices()
    async with running(settings, clock=later, device_factory=devices) as agent:
        restored = list(devices["s-bess-1"].calls)  # before it connected
        asset = agent.fleet["s-bess-1"]
        state = (asset.setpoint_kw, asset.setpoint_id, asset.setpoint_ends_at)
        first_seq = asset.seq + 1  # readings of this run (the spool replays older ones too)
        await headend.wait_for(
            lambda: any(t.seq >= first_seq for t in after(headend, "s-bess-1", 0))
        )
        reading = next(t for t in after(headend, "s-bess-1", 0) if t.seq >= first_seq)
        later.advance(39.0)
        await checks(agent)
        assert released(headend, sid) == []
        later.advance(1.0)
        ack = await release_ack(headend, sid)
    end = t0 + timedelta(seconds=60)
    assert applied.ends_at == end
    assert restored == [("apply", 20.0)]
    assert state == (20.0, sid, end)
    assert (reading.setpoint_kw, reading.setpoint_ends_at) == (20.0, end)
    assert (ack.release_cause, ack.ts) == (pb.ReleaseCause.DURATION_ENDED, end)
    assert "event=control_restored setpoint_id=" in caplog.text


async def test_a_restart_after_the_end_releases_at_start(
    headend: FakeHeadend, make_settings, running
) -> None:
    settings = make_settings(SITE, port=headend.port)
    clock = manual_clock()
    t0 = clock.now()
    async with running(settings, clock=clock):
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(15.0, asset_id="s-bess-2", duration_s=10.0)
        await final(headend, sid)
    port = headend.port
    await headend.stop()

    devices = Devices()
    late = ManualClock(t0 + timedelta(seconds=100))
    async with running(settings, clock=late, device_factory=devices) as agent:
        calls = list(devices["s-bess-2"].calls)
        kw = agent.fleet["s-bess-2"].setpoint_kw
        await headend.start(port=port)  # the release ack was waiting for a session
        ack = await release_ack(headend, sid)
        await headend.push_setpoint(15.0, asset_id="s-bess-2", setpoint_id=sid)
        again = await final(headend, sid, 5)
        assert agent.fleet["s-bess-2"].setpoint_kw is None
    assert calls == [("release", None)]  # released at start, never re-applied
    assert kw is None
    assert ack.release_cause == pb.ReleaseCause.DURATION_ENDED
    assert ack.reason == "duration ended while the gateway was down"
    assert [a.asset_id for a in ack.allocations] == ["s-bess-2"]
    assert again.state == pb.AckState.RELEASED


async def test_a_restart_long_after_contact_was_lost_fails_safe_at_start(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    settings = make_settings(SITE, port=headend.port, failsafe_after_s=60.0)
    clock = manual_clock()
    t0 = clock.now()
    async with running(settings, clock=clock) as agent:
        await headend.wait_for(lambda: headend.current is not None)
        sid = await headend.push_setpoint(-10.0, asset_id="s-bess-1")
        await final(headend, sid)
        await checks(agent)  # the last time heard is on disk
    port = headend.port
    await headend.stop()

    devices = Devices()
    async with running(
        settings, clock=ManualClock(t0 + timedelta(seconds=120)), device_factory=devices
    ) as agent:
        calls = list(devices["s-bess-1"].calls)
        tripped = agent.releaser.failsafe.tripped_at is not None
        await headend.start(port=port)
        ack = await release_ack(headend, sid)
    assert calls == [("release", None)]  # not re-applied: released
    assert tripped
    assert ack.release_cause == pb.ReleaseCause.FAILSAFE
    assert "at_start=true" in caplog.text


# -- `vpp-gateway check` ----------------------------------------------------------------------

GOOD = """\
site_id: site-c
headend: {host: 127.0.0.1, port: 1}
assets:
  - {asset_id: c-bess-1, kind: bess, capacity_kw: 50, energy_kwh: 100}
"""


@pytest.mark.parametrize(
    ("extra", "warning"),
    [
        ("", None),
        ("failsafe_after_s: 0\n", "failsafe_after_s: 0 turns the fail-safe off"),
        ("failsafe_after_s: 60\n", "failsafe_after_s 60 s is below 3 x"),
        ("failsafe_after_s: 135\n", None),
        (
            "failsafe_after_s: 300\ngateway: {heartbeat_interval_s: 60}\n",
            "use at least 540 s",
        ),
    ],
    ids=["default", "off", "short", "at-floor", "long-heartbeat"],
)
def test_check_warns_when_the_failsafe_is_off_or_too_short(
    tmp_path: Path, extra: str, warning: str | None
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD + extra)
    result = CliRunner().invoke(app, ["check", str(path), "--offline"])
    assert result.exit_code == 0, result.output
    assert "ok: " in result.stdout
    if warning is None:
        assert "warning" not in result.output
    else:
        assert result.stderr.startswith(f"warning: {path}: failsafe_after_s")
        assert warning in result.stderr
