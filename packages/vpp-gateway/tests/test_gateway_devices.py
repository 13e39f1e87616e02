"""Simulated devices, their live envelopes and fault injection; the clamp rule."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp_gateway import Limits, ManualClock
from vpp_gateway.devices import (
    DeviceAdapter,
    DeviceError,
    SimBess,
    SimEvCharger,
    SimGenset,
    SimParamError,
    SimPV,
    simulated_device,
)
from vpp_gateway.setpoints import clamp_note
from vpp_protocol.sitefile import AssetConfig

KINDS = ["pv", "bess", "meter", "genset", "ev_charger", "load", "other"]
finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


def _asset(kind: str, cap: float = 100.0, **kw: object) -> AssetConfig:
    return AssetConfig(asset_id=f"x-{kind}", kind=kind, capacity_kw=cap, **kw)  # type: ignore[arg-type]


def _trace(kind: str, seed: int, setpoints: list[float], steps: int = 20) -> list[tuple]:
    clock = ManualClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    dev = simulated_device(_asset(kind), clock, seed)

    async def go() -> list[tuple]:
        out = []
        for i in range(steps):
            if i < len(setpoints) and kind != "meter":
                await dev.apply(dev.limits.clamp(setpoints[i]))
            m = await dev.read()
            out.append((m.power_kw, m.soc_pct, m.status))
            clock.advance(60)
        return out

    return asyncio.run(go())


def test_devices_satisfy_the_adapter_protocol() -> None:
    clock = ManualClock()
    for kind in KINDS:
        assert isinstance(simulated_device(_asset(kind), clock, 0), DeviceAdapter)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32), sps=st.lists(finite, max_size=5))
def test_simulators_are_deterministic(kind: str, seed: int, sps: list[float]) -> None:
    assert _trace(kind, seed, sps) == _trace(kind, seed, sps)


def test_seed_changes_noise() -> None:
    assert _trace("meter", 1, []) != _trace("meter", 2, [])


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from([k for k in KINDS if k != "meter"]), sps=st.lists(finite, max_size=8))
def test_simulators_respect_limits(kind: str, sps: list[float]) -> None:
    lo, hi = _asset(kind).bounds
    for power, soc, _ in _trace(kind, 0, sps):
        assert lo - 1e-9 <= power <= hi + 1e-9
        if soc is not None:
            assert 0.0 <= soc <= 100.0


def _bess(soc: float, cap: float = 100.0, energy: float = 200.0, **sim: object) -> SimBess:
    return SimBess(
        _asset("bess", cap=cap, energy_kwh=energy, simulator={"initial_soc_pct": soc, **sim}),
        ManualClock(),
        0,
    )


@settings(max_examples=50, deadline=None)
@given(
    energy=st.floats(1, 1000),
    soc0=st.floats(0, 100),
    p=finite,
    step_ms=st.integers(0, 1_800_000),  # whole milliseconds: the clock keeps microseconds
    pieces=st.integers(2, 12),
)
def test_bess_one_long_step_ends_where_many_short_ones_do(
    energy: float, soc0: float, p: float, step_ms: int, pieces: int
) -> None:
    # The taper is integrated exactly: how often the battery is read does not change it.
    one, many = _bess(soc0, energy=energy), _bess(soc0, energy=energy)
    for b in (one, many):
        b.command(b.limits.clamp(p))
    one._clock.advance(step_ms * pieces / 1000)  # type: ignore[attr-defined]
    one.measure()
    for _ in range(pieces):
        many._clock.advance(step_ms / 1000)  # type: ignore[attr-defined]
        many.measure()
    assert math.isclose(one.energy_kwh, many.energy_kwh, rel_tol=1e-9, abs_tol=1e-9)
    # and it never leaves [reserve, top] (nor the range it started in, if outside)
    lo, hi = min(energy * 0.05, energy * soc0 / 100), energy
    assert lo - 1e-9 <= one.energy_kwh <= hi + 1e-9


@settings(max_examples=50, deadline=None)
@given(soc0=st.floats(0, 100), p=finite, dt=st.floats(0, 600))
def test_bess_power_is_what_the_envelope_allows_of_the_setpoint(
    soc0: float, p: float, dt: float
) -> None:
    b = _bess(soc0)
    applied = b.command(b.limits.clamp(p))
    m = b.measure()
    env = Limits(m.available_min_kw, m.available_max_kw)  # type: ignore[arg-type]
    assert applied == m.power_kw == env.clamp(b.limits.clamp(p))
    assert -100 <= env.min_kw <= 0 <= env.max_kw <= 100
    b._clock.advance(dt)  # type: ignore[attr-defined]
    later = b.measure()
    assert later.available_min_kw <= later.power_kw <= later.available_max_kw  # type: ignore[operator]


def test_bess_near_empty_cannot_discharge_and_near_full_cannot_charge() -> None:
    empty = _bess(5.0)  # at the default reserve of 5 %
    m = empty.measure()
    assert (m.available_min_kw, m.available_max_kw) == (-100.0, 0.0)
    assert empty.command(50.0) == 0.0
    assert empty.measure().power_kw == 0.0
    full = _bess(100.0)
    m = full.measure()
    assert (m.available_min_kw, m.available_max_kw) == (0.0, 100.0)
    assert full.command(-50.0) == 0.0
    # inside the taper band (5 % of SoC above the reserve) the limit falls linearly
    half = _bess(7.5).measure()
    assert half.available_max_kw is not None
    assert math.isclose(half.available_max_kw, 50.0)
    assert _bess(50.0).measure().available_max_kw == 100.0


def test_bess_discharging_tapers_to_its_reserve_and_stops_there() -> None:
    clock = ManualClock()
    bess = SimBess(
        _asset("bess", cap=50, energy_kwh=10, simulator={"initial_soc_pct": 10}), clock, 0
    )
    bess.command(50.0)
    clock.advance(3600)
    m = bess.measure()
    assert m.soc_pct is not None
    assert 5.0 <= m.soc_pct < 5.001
    assert m.power_kw == m.available_max_kw
    assert m.power_kw < 0.1
    assert m.available_min_kw == -50.0  # it can still charge


def test_bess_reserve_and_taper_come_from_simulator_parameters() -> None:
    b = _bess(20.0, min_soc_pct=20, taper_pct=0)
    assert b.measure().available_max_kw == 0.0
    with pytest.raises(SimParamError, match=r"simulator\.taper_pct must be a number within"):
        _bess(50.0, taper_pct=-1)


def test_pv_follows_the_sun_and_curtails() -> None:
    clock = ManualClock(datetime(2026, 6, 21, 0, 0, tzinfo=UTC))
    pv = SimPV(_asset("pv", cap=100), clock, 0)
    night = pv.measure()
    assert night.power_kw == 0.0  # midnight
    assert (night.available_min_kw, night.available_max_kw) == (0.0, 0.0)
    assert pv.command(50.0) == 0.0  # nothing to give
    clock.advance(12 * 3600)
    noon = pv.measure()
    assert math.isclose(noon.power_kw, 50.0)  # the curtailment limit held
    assert noon.available_max_kw is not None
    assert math.isclose(noon.available_max_kw, 100.0)
    assert pv.command(30.0) == 30.0
    curtailed = pv.measure()
    assert curtailed.power_kw == 30.0
    assert curtailed.available_max_kw == noon.available_max_kw  # the sun did not change


def test_pv_clouds_are_the_same_for_a_read_and_an_apply_at_one_instant() -> None:
    clock = ManualClock(datetime(2026, 6, 21, 12, 0, tzinfo=UTC))
    pv = SimPV(_asset("pv", cap=100, simulator={"cloudiness": 1.0}), clock, 7)
    m = pv.measure()
    assert m.available_max_kw is not None
    assert 0.0 < m.available_max_kw < 100.0
    assert pv.command(100.0) == m.available_max_kw
    assert pv.measure().available_max_kw == m.available_max_kw
    again = SimPV(_asset("pv", cap=100, simulator={"cloudiness": 1.0}), clock, 7)
    assert again.measure() == pv.measure()  # deterministic given clock and seed


def _ev(clock: ManualClock, **sim: object) -> SimEvCharger:
    return SimEvCharger(_asset("ev_charger", cap=22, simulator=sim), clock, 0)


def test_ev_charger_with_nothing_plugged_in_can_take_nothing() -> None:
    ev = _ev(ManualClock(), vehicle=False)
    m = ev.measure()
    assert (m.power_kw, m.available_min_kw, m.available_max_kw) == (0.0, 0.0, 0.0)
    assert m.status.value == "standby"
    assert ev.command(-11.0) == 0.0
    plugged = _ev(ManualClock()).measure()
    assert (plugged.power_kw, plugged.available_min_kw, plugged.available_max_kw) == (
        -22.0,
        -22.0,
        0.0,
    )


def test_ev_charger_follows_its_plug_schedule() -> None:
    clock = ManualClock(datetime(2026, 6, 21, 12, 0, tzinfo=UTC))
    ev = _ev(clock, plugged_utc_h=[[18, 7]], session_kwh=11)
    assert ev.measure().available_min_kw == 0.0  # noon: away
    clock.advance(8 * 3600)  # 20:00, plugged in
    assert ev.measure().available_min_kw == -22.0
    clock.advance(3600)  # 21:00: 22 kWh delivered, the 11 kWh session is over
    assert ev.measure().available_min_kw == 0.0
    clock.advance(21 * 3600)  # 18:00 next day: a new vehicle, a new session
    assert ev.measure().available_min_kw == -22.0
    clock.advance(9 * 3600 - 1)  # 02:59: still within the window past midnight, but done
    assert ev.measure().available_min_kw == 0.0


@pytest.mark.parametrize("bad", [[[18]], "evenings", [[18, 25]], [[True, 7]]])
def test_ev_charger_refuses_a_bad_plug_schedule(bad: object) -> None:
    with pytest.raises(SimParamError, match=r"simulator\.plugged_utc_h must be a list"):
        _ev(ManualClock(), plugged_utc_h=bad)


@given(p=st.floats(-50, 150))
def test_genset_is_off_or_within_min_stable_and_max(p: float) -> None:
    g = SimGenset(_asset("genset", cap=100, min_stable_kw=40), ManualClock(), 0)
    applied = g.command(g.limits.clamp(p))
    assert applied == (0.0 if p <= 0 else min(max(p, 40.0), 100.0))
    m = g.measure()
    assert (m.available_min_kw, m.available_max_kw, m.min_stable_kw) == (0.0, 100.0, 40.0)


def test_genset_has_no_minimum_unless_the_site_file_gives_one() -> None:
    g = SimGenset(_asset("genset", cap=100), ManualClock(), 0)
    assert g.command(5.0) == 5.0
    assert g.measure().min_stable_kw is None


@pytest.mark.parametrize("name", ["min_stable_pct", "min_stable_kw"])
def test_genset_refuses_the_old_simulator_minimum(name: str) -> None:
    with pytest.raises(
        SimParamError, match=f"simulator.{name} is no longer supported.*min_stable_kw"
    ):
        SimGenset(_asset("genset", cap=100, simulator={name: 30}), ManualClock(), 0)


def test_meter_reports_no_envelope() -> None:
    m = simulated_device(_asset("meter"), ManualClock(), 0)
    reading = asyncio.run(m.read())
    assert (reading.available_min_kw, reading.available_max_kw, reading.min_stable_kw) == (
        None,
        None,
        None,
    )


ENVELOPED = ["pv", "bess", "ev_charger", "load", "other"]


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(ENVELOPED), hour=st.integers(0, 23), p=finite)
def test_a_simulator_sets_what_its_envelope_shows_of_the_request(
    kind: str, hour: int, p: float
) -> None:
    # "No rule that the site file and the envelope do not show": apply is the envelope's clamp.
    clock = ManualClock(datetime(2026, 6, 21, hour, 30, tzinfo=UTC))
    dev = simulated_device(_asset(kind), clock, 0)
    before = asyncio.run(dev.read())
    env = Limits(before.available_min_kw, before.available_max_kw)  # type: ignore[arg-type]
    assert asyncio.run(dev.apply(dev.limits.clamp(p))) == env.clamp(dev.limits.clamp(p))


def test_fault_injection_sets_less_than_asked() -> None:
    factor = SimBess(_asset("bess", simulator={"apply_factor": 0.8}), ManualClock(), 0)
    assert asyncio.run(factor.apply(50.0)) == 40.0
    assert factor.measure().power_kw == 40.0  # it really does less, not only says so
    cap = SimBess(_asset("bess", simulator={"apply_cap_kw": 10}), ManualClock(), 0)
    assert asyncio.run(cap.apply(-50.0)) == -10.0
    assert asyncio.run(cap.apply(5.0)) == 5.0


def test_fault_injection_fails_on_apply() -> None:
    dev = simulated_device(_asset("pv", simulator={"fail_apply": True}), ManualClock(), 0)
    with pytest.raises(DeviceError, match="refused"):
        asyncio.run(dev.apply(10.0))
    asyncio.run(dev.read())  # reads still work


def test_fault_injection_delays_apply() -> None:
    dev = SimBess(_asset("bess", simulator={"apply_delay_s": 0.2}), ManualClock(), 0)

    async def go() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(dev.apply(30.0), 0.02)
        assert dev.setpoint_kw is None  # abandoned in time: never took effect
        assert await asyncio.wait_for(dev.apply(30.0), 5.0) == 30.0

    asyncio.run(go())


@pytest.mark.parametrize(
    ("sim", "message"),
    [
        ({"apply_factor": 1.5}, "simulator.apply_factor must be a number within [0, 1]"),
        ({"apply_cap_kw": -1}, "simulator.apply_cap_kw must be a number >= 0"),
        ({"apply_delay_s": "slow"}, "simulator.apply_delay_s has the wrong type"),
        ({"apply_delay_s": True}, "simulator.apply_delay_s must be a number"),
    ],
)
def test_fault_injection_parameters_are_checked(sim: dict[str, object], message: str) -> None:
    with pytest.raises(SimParamError, match=re.escape(message)):
        simulated_device(_asset("other", simulator=sim), ManualClock(), 0)


@given(req=finite, a=finite, b=finite)
def test_clamp_rule(req: float, a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    value, clamped, note = clamp_note(req, lo, hi)
    assert lo <= value <= hi
    assert clamped == (req != value)
    assert (note == "") == (not clamped)
    if lo <= req <= hi:
        assert value == req
    assert Limits(lo, hi).clamp(req) == value
