"""Simulated devices and the clamp rule: deterministic with a seed, always within limits."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from vpp_gateway import Limits, ManualClock
from vpp_gateway.devices import DeviceAdapter, SimBess, SimGenset, SimPV, simulated_device
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


@settings(max_examples=50, deadline=None)
@given(
    energy=st.floats(1, 1000),
    soc0=st.floats(0, 100),
    # whole milliseconds: the clock keeps microseconds
    steps=st.lists(
        st.tuples(finite, st.integers(0, 7_200_000).map(lambda ms: ms / 1000)),
        min_size=1,
        max_size=10,
    ),
)
def test_bess_soc_integrates_power_within_energy_limits(
    energy: float, soc0: float, steps: list[tuple[float, float]]
) -> None:
    clock = ManualClock()
    bess = SimBess(_asset("bess", energy_kwh=energy, simulator={"initial_soc_pct": soc0}), clock, 0)
    for p, dt in steps:
        before = bess.energy_kwh
        applied = bess.command(bess.limits.clamp(p))
        assert -100 <= applied <= 100
        effective = bess.measure().power_kw
        clock.advance(dt)
        after = bess.measure()
        assert 0.0 <= after.soc_pct <= 100.0  # type: ignore[operator]
        expected = min(max(before - effective * dt / 3600, 0.0), energy)
        assert math.isclose(bess.energy_kwh, expected, rel_tol=1e-9, abs_tol=1e-9)


def test_bess_stops_discharging_when_empty() -> None:
    clock = ManualClock()
    bess = SimBess(
        _asset("bess", cap=50, energy_kwh=10, simulator={"initial_soc_pct": 10}), clock, 0
    )
    bess.command(50.0)
    clock.advance(3600)
    m = bess.measure()
    assert m.soc_pct == 0.0
    assert m.power_kw == 0.0


def test_pv_follows_the_sun_and_curtails() -> None:
    clock = ManualClock(datetime(2026, 6, 21, 0, 0, tzinfo=UTC))
    pv = SimPV(_asset("pv", cap=100), clock, 0)
    assert pv.measure().power_kw == 0.0  # midnight
    clock.advance(12 * 3600)
    assert math.isclose(pv.measure().power_kw, 100.0)
    pv.command(30.0)
    assert pv.measure().power_kw == 30.0


@given(p=st.floats(0.001, 100))
def test_genset_runs_at_least_min_stable_load(p: float) -> None:
    g = SimGenset(_asset("genset", cap=100, simulator={"min_stable_pct": 40}), ManualClock(), 0)
    applied = g.command(p)
    assert applied == max(p, 40.0)
    assert g.command(0.0) == 0.0


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
