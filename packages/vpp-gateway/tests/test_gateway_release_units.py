"""The parts of the time in force alone: releasing a device, the control table on disk, the
fail-safe's clock, wire conversion, settings and the status text (DESIGN.md §3b)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from gateway_tif import Devices, Recording

import vpp_protocol as pb
from vpp_gateway import ManualClock, SettingsError
from vpp_gateway.control import ControlTable, control_end, duration_problem
from vpp_gateway.convert import ack_message, headend_event
from vpp_gateway.devices import DeviceError, SimBess, SimEvCharger, SimGenset, SimLoad, SimPV
from vpp_gateway.failsafe import FailSafe
from vpp_gateway.model import (
    Ack,
    AckState,
    Allocation,
    Control,
    InForce,
    Limited,
    LimitReason,
    Reading,
    ReleaseCause,
    ReleaseCommand,
    SetpointCommand,
    Status,
)
from vpp_gateway.release import release_asset
from vpp_gateway.runtime import AssetFleet
from vpp_gateway.settings import failsafe_warnings
from vpp_gateway.state import DB_NAME, StateStore
from vpp_gateway.status import render
from vpp_protocol.sitefile import AssetConfig

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


def _asset(kind: str, cap: float = 100.0, **fields: object) -> AssetConfig:
    return AssetConfig(asset_id=f"u-{kind}", kind=kind, capacity_kw=cap, **fields)  # type: ignore[arg-type]


# -- releasing a device -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("pv", 100.0), ("bess", 0.0), ("genset", 0.0), ("ev_charger", -100.0), ("load", -100.0)],
)
def test_an_adapter_without_release_gets_the_kinds_default(kind: str, expected: float) -> None:
    devices = Devices(releasable=False)
    fleet = AssetFleet.build((_asset(kind),), devices, ManualClock(T0), 0, {})
    asset = next(iter(fleet))
    r = asyncio.run(release_asset(asset, 1.0))
    assert (r.ok, r.applied_kw) == (True, None)
    assert devices[asset.asset_id].calls == [("apply", expected)]


def test_a_fallback_kw_is_applied_clamped_and_reported() -> None:
    devices = Devices()
    config = _asset("bess", fallback_kw=-30.0)
    fleet = AssetFleet.build((config,), devices, ManualClock(T0), 0, {})
    asset = next(iter(fleet))
    r = asyncio.run(release_asset(asset, 1.0))
    assert (r.ok, r.applied_kw) == (True, -30.0)
    assert devices[asset.asset_id].calls == [("apply", -30.0)]  # never release()


def test_a_release_that_fails_or_hangs_says_why() -> None:
    class Hanging(Recording):
        async def release(self) -> None:
            await asyncio.sleep(10)

    clock = ManualClock(T0)
    configs = (
        _asset("bess", simulator={"fail_release": True}),
        _asset("pv", simulator={"offline": True}),
    )
    fleet = AssetFleet.build(configs, Devices(), clock, 0, {})
    bess, pv = list(fleet)
    refused, offline = (asyncio.run(release_asset(a, 1.0)) for a in (bess, pv))
    assert (refused.ok, refused.limit) == (
        False,
        Limited(LimitReason.DEVICE_FAULT, "device error: simulated device refused the release"),
    )
    assert offline.limit is not None
    assert "offline" in offline.limit.detail
    hang = AssetFleet.build(
        (_asset("other"),), lambda c, k, s: Hanging(SimBess(_asset("bess"), k, s)), clock, 0, {}
    )
    slow = asyncio.run(release_asset(next(iter(hang)), 0.05))
    assert (slow.ok, slow.limit) == (
        False,
        Limited(LimitReason.DEVICE_TIMEOUT, "device did not answer in 0.05 s"),
    )


def test_simulators_go_back_to_their_own_behaviour() -> None:
    clock = ManualClock(T0)  # solar noon: the sun gives the PV its capacity
    pv = SimPV(_asset("pv"), clock, 0)
    bess = SimBess(_asset("bess", energy_kwh=200.0), clock, 0)
    gen = SimGenset(_asset("genset"), clock, 0)
    ev = SimEvCharger(_asset("ev_charger", cap=22.0), clock, 0)
    load = SimLoad(_asset("load", simulator={"base_kw": -40.0, "noise_kw": 0.0}), clock, 0)

    async def run() -> None:
        for dev, kw in ((pv, 10.0), (bess, 50.0), (gen, 60.0), (ev, -5.0), (load, -10.0)):
            await dev.apply(kw)
        clock.advance(3600.0)
        for dev in (pv, bess, gen, ev, load):
            await dev.release()

    asyncio.run(run())
    assert pv.measure().power_kw == pytest.approx(pv.available_kw())  # uncurtailed
    assert pv.available_kw() > 90.0
    assert bess.soc_pct == pytest.approx(25.0)  # an hour at 50 kW was counted, then idle
    clock.advance(3600.0)
    assert (bess.measure().power_kw, bess.soc_pct) == (0.0, pytest.approx(25.0))
    assert (gen.measure().power_kw, gen.measure().status) == (0.0, Status.STANDBY)
    assert ev.measure().power_kw == -22.0  # unrestricted
    assert ev.delivered_kwh == pytest.approx(5.0 + 22.0)
    assert load.measure().power_kw == -40.0

    offline = SimBess(_asset("bess", simulator={"offline": True}), clock, 0)
    with pytest.raises(DeviceError, match="offline"):
        asyncio.run(offline.release())


# -- the end of control --------------------------------------------------------------------------


def test_the_end_is_the_earlier_one_and_bad_durations_are_named() -> None:
    cmd = SetpointCommand("s", "asset", "a", 1.0)
    assert control_end(cmd, T0) is None
    later = SetpointCommand("s", "asset", "a", 1.0, ends_at=T0 + timedelta(hours=1))
    both = SetpointCommand("s", "asset", "a", 1.0, ends_at=T0 + timedelta(hours=1), duration_s=60)
    assert control_end(later, T0) == T0 + timedelta(hours=1)
    assert control_end(both, T0) == T0 + timedelta(seconds=60)
    for bad in (0.0, -1.0, float("nan"), float("inf"), 1e12):
        problem = duration_problem(SetpointCommand("s", "asset", "a", 1.0, duration_s=bad))
        assert problem.startswith("duration_s"), bad
    assert duration_problem(both) == ""


async def test_the_control_table_survives_a_reopen_and_supersedes(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path, 1 << 20)
    table = ControlTable.load(store)
    applied = Ack("old", AckState.APPLIED, T0)
    timed = Ack("timed", AckState.APPLIED, T0)
    await table.take(InForce("old"), [Control("a", "old", 5.0)], (applied, 1e10))
    await table.take(
        InForce("timed", ends_at=T0 + timedelta(seconds=60)),
        [Control("b", "timed", 2.0)],
        (timed, 1e10),
    )
    newer = Ack("new", AckState.APPLIED, T0)
    await table.take(
        InForce("new"), [Control("a", "new", -1.0), Control("b", "new", -2.0)], (newer, 1e10)
    )
    # "old" had no end and nothing left: gone; "timed" waits for its end, holding nothing
    assert [f.setpoint_id for f in table.setpoints()] == ["timed", "new"]
    assert table.holding("timed") == []
    assert table.next_end() == T0 + timedelta(seconds=60)
    assert [f.setpoint_id for f in table.due(T0 + timedelta(seconds=60))] == ["timed"]
    gone = Ack("new", AckState.RELEASED, T0, release_cause=ReleaseCause.CANCELLED)
    await table.end("new", ["a"], ["b"], ReleaseCause.CANCELLED, (gone, 2e10))
    await store.close()

    store = await StateStore.open(tmp_path, 1 << 20)
    try:
        again = ControlTable.load(store)
        assert [f.setpoint_id for f in again.setpoints()] == ["timed"]
        assert again.setpoints()[0].ends_at == T0 + timedelta(seconds=60)
        assert again.of("a") is None
        assert again.of("b") == Control("b", "new", -2.0, ReleaseCause.CANCELLED)
        assert again.releasing() == [Control("b", "new", -2.0, ReleaseCause.CANCELLED)]
        journaled = store.journal_get("new")
        assert journaled is not None
        assert (journaled.state, journaled.release_cause) == (
            AckState.RELEASED,
            ReleaseCause.CANCELLED,
        )
        assert store.journal_keep("new") == 2e10
    finally:
        await store.close()


async def test_an_older_state_directory_is_upgraded_in_place(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.executescript(
        """
        CREATE TABLE seqs (asset_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE journal (
            setpoint_id TEXT PRIMARY KEY, keep_until REAL NOT NULL, ack BLOB NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE spool (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            asset_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
            power_kw REAL NOT NULL, status TEXT NOT NULL, soc_pct REAL, setpoint_kw REAL,
            setpoint_id TEXT NOT NULL, sent INTEGER NOT NULL
        );
        """
    )
    old_ack = {"setpoint_id": "s1", "state": "applied", "ts": T0.isoformat(), "applied_kw": 4.0}
    conn.execute("INSERT INTO journal VALUES (?, ?, ?)", ("s1", 1e10, msgspec.json.encode(old_ack)))
    conn.execute(
        "INSERT INTO spool (asset_id, seq, ts, power_kw, status, soc_pct, setpoint_kw,"
        " setpoint_id, sent) VALUES ('a', 1, ?, 3.0, 'ok', NULL, 4.0, 's1', 0)",
        (T0.timestamp(),),
    )
    conn.commit()
    conn.close()
    store = await StateStore.open(tmp_path, 1 << 20)
    try:
        ack = store.journal_get("s1")
        assert ack is not None
        assert (ack.applied_kw, ack.release_cause, ack.ends_at) == (4.0, None, None)
        (reading,) = store.spool_snapshot()
        assert (reading.setpoint_kw, reading.setpoint_ends_at) == (4.0, None)
        assert store.load_control() == ([], [])
        await store.record_tick(
            [Reading("a", 2, T0, 1.0, Status.OK, setpoint_ends_at=T0 + timedelta(seconds=9))],
            {"a": 2},
            sent_at=0,
            prune_before=0,
        )
        assert store.spool_snapshot()[-1].setpoint_ends_at == T0 + timedelta(seconds=9)
    finally:
        await store.close()


# -- the fail-safe's clock ----------------------------------------------------------------------


def test_the_failsafe_counts_from_the_last_message_and_rearms_on_the_next() -> None:
    fs = FailSafe(60.0, start_mono=100.0)
    assert not fs.due(None, 159.0)
    assert fs.due(None, 160.0)  # never heard: from the start
    assert not fs.due(150.0, 209.0)
    assert fs.due(150.0, 210.0)
    fs.trip(210.0, heard_count=3)
    assert not fs.due(150.0, 1000.0)  # once
    assert not fs.rearm(3)
    assert fs.rearm(4)
    assert fs.tripped_at is None
    # a previous run last heard the headend 50 s before this one started
    assert FailSafe(60.0, 100.0, silent_at_start_s=50.0).due(None, 110.0)
    assert not FailSafe(0.0, 100.0).due(None, 1e9)  # off


# -- wire conversion ------------------------------------------------------------------------


def test_setpoint_and_release_messages_become_domain_events() -> None:
    sp = pb.Setpoint(
        setpoint_id="s1",
        asset_id="a",
        power_kw=5.0,
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=5),
        ends_at=T0 + timedelta(minutes=30),
        duration_s=600.0,
    )
    event = headend_event(pb.HeadendMessage(setpoint=sp))
    assert isinstance(event, SetpointCommand)
    assert (event.ends_at, event.duration_s) == (T0 + timedelta(minutes=30), 600.0)
    plain = headend_event(
        pb.HeadendMessage(setpoint=pb.Setpoint(setpoint_id="s2", site_id="x", power_kw=1.0))
    )
    assert isinstance(plain, SetpointCommand)
    assert (plain.ends_at, plain.duration_s) == (None, None)
    release = pb.Release(setpoint_id="s1", reason="cancelled by operator", issued_at=T0)
    assert headend_event(pb.HeadendMessage(release=release)) == ReleaseCommand(
        "s1", "cancelled by operator", T0
    )


def test_acks_carry_the_end_and_the_release_cause() -> None:
    applied = ack_message(Ack("s1", AckState.APPLIED, T0, "a", applied_kw=5.0, ends_at=T0))
    assert applied.setpoint_ack is not None
    assert (applied.setpoint_ack.ends_at, applied.setpoint_ack.release_cause) == (
        T0,
        pb.ReleaseCause.UNSPECIFIED,
    )
    msg = ack_message(
        Ack(
            "s1",
            AckState.RELEASED,
            T0,
            reason="fail-safe",
            allocations=(Allocation("a", 5.0, None), Allocation("b", 2.0, 1.5)),
            release_cause=ReleaseCause.FAILSAFE,
        )
    )
    ack = pb.AgentMessage.parse(bytes(msg)).setpoint_ack
    assert ack is not None
    assert (ack.state, ack.release_cause, ack.ends_at) == (
        pb.AckState.RELEASED,
        pb.ReleaseCause.FAILSAFE,
        None,
    )
    assert [(a.asset_id, a.power_kw, a.applied_kw) for a in ack.allocations] == [
        ("a", 5.0, None),
        ("b", 2.0, 1.5),
    ]
    for cause, wire in (
        (ReleaseCause.DURATION_ENDED, pb.ReleaseCause.DURATION_ENDED),
        (ReleaseCause.CANCELLED, pb.ReleaseCause.CANCELLED),
    ):
        m = ack_message(Ack("s", AckState.RELEASED, T0, release_cause=cause)).setpoint_ack
        assert m is not None
        assert m.release_cause == wire


# -- settings and status --------------------------------------------------------------------


def test_failsafe_settings_are_validated(make_settings) -> None:
    with pytest.raises(SettingsError, match="failsafe_after_s"):
        make_settings(failsafe_after_s=-1.0)
    with pytest.raises(SettingsError, match="failsafe_after_s"):
        make_settings(failsafe_after_s=float("nan"))
    assert make_settings().failsafe_after_s == 900.0
    site = "site_id: s\nfailsafe_after_s: 120\nassets:\n  - {asset_id: a, kind: bess}\n"
    settings = make_settings(site)
    assert settings.failsafe_after_s == 120.0
    # FAST knobs: heartbeat 0.5 s, keepalive 5 + 2 s → a dead link is noticed within 7 s
    assert failsafe_warnings(settings) == []
    assert "below 3 x" in failsafe_warnings(make_settings(site, failsafe_after_s=20.0))[0]


def test_status_shows_the_setpoint_in_force_and_the_failsafe() -> None:
    snap = {
        "site_id": "s",
        "pid": 1,
        "agent_version": "x",
        "updated_at": T0.isoformat(),
        "connection": {
            "headend": "h:1",
            "state": "backoff",
            "since": T0.isoformat(),
            "last_reason": "",
            "session_id": "",
            "epoch": 0,
            "connects": 1,
            "failures": 3,
        },
        "spool": {"depth": 0, "dropped": 0, "used_bytes": 0, "max_bytes": 1e6},
        "failsafe": {"after_s": 900.0, "tripped": True, "silent_s": 901.0},
        "assets": [
            {
                "asset_id": "a",
                "kind": "bess",
                "seq": 3,
                "power_kw": 5.0,
                "setpoint_kw": 5.0,
                "rate_per_min": 15.0,
                "status": "ok",
                "applied_at": T0.isoformat(),
                "accepted": True,
                "reject_reason": "",
                "control": {
                    "setpoint_id": "sp-1",
                    "power_kw": 5.0,
                    "ends_at": T0.isoformat(),
                    "releasing": "failsafe",
                },
            }
        ],
    }
    text = render(snap, T0)
    assert "fail-safe: TRIPPED" in text
    assert f"in force: setpoint sp-1 at 5.00 kW, until {T0.isoformat()}" in text
    assert "RELEASING: failsafe" in text
