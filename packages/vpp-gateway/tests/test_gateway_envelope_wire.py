"""The live envelope on the wire: every reading says what its asset can do now (DESIGN §3a)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import vpp_protocol as pb
from vpp_gateway import Limits
from vpp_gateway.devices import Measurement
from vpp_gateway.envelope import Envelope, envelope
from vpp_gateway.model import Status
from vpp_gateway.testing import FakeHeadend
from vpp_protocol.sitefile import AssetConfig


def _site() -> str:
    # PV by day and PV by night whatever the wall clock: put solar noon now, or 12 h away.
    now = datetime.now(UTC)
    noon = round(now.hour + now.minute / 60, 3)
    midnight = round((noon + 12) % 24, 3)
    return f"""
site_id: site-e
assets:
  - {{asset_id: e-pv-day, kind: pv, capacity_kw: 100,
     simulator: {{solar_noon_utc_h: {noon}, day_length_h: 24}}}}
  - {{asset_id: e-pv-night, kind: pv, capacity_kw: 100,
     simulator: {{solar_noon_utc_h: {midnight}, day_length_h: 2}}}}
  - {{asset_id: e-bess-empty, kind: bess, capacity_kw: 50, energy_kwh: 100,
     simulator: {{initial_soc_pct: 5}}}}
  - {{asset_id: e-gen-1, kind: genset, capacity_kw: 200, min_stable_kw: 60, fallback_kw: 0}}
  - {{asset_id: e-ev-away, kind: ev_charger, capacity_kw: 22, simulator: {{vehicle: false}}}}
  - {{asset_id: e-load-1, kind: load, capacity_kw: 20}}
  - {{asset_id: e-meter-1, kind: meter}}
  - {{asset_id: e-down-1, kind: bess, capacity_kw: 10, simulator: {{offline: true}}}}
  - {{asset_id: e-short-1, kind: bess, capacity_kw: 50, simulator: {{apply_factor: 0.8}}}}
  - {{asset_id: e-slow-1, kind: bess, capacity_kw: 50, simulator: {{apply_delay_s: 1.0}}}}
"""


def _env(t: pb.Telemetry) -> tuple[float | None, float | None, float | None]:
    return (t.available_min_kw, t.available_max_kw, t.min_stable_kw)


def _latest(headend: FakeHeadend) -> dict[str, pb.Telemetry]:
    out: dict[str, pb.Telemetry] = {}
    for t in headend.readings:
        if t.seq > (out[t.asset_id].seq if t.asset_id in out else 0):
            out[t.asset_id] = t
    return out


async def test_readings_carry_each_assets_live_envelope(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(_site(), port=headend.port)):
        await headend.wait_for(lambda: len(_latest(headend)) == 10)
        n = len(headend.readings)
        await headend.wait_for(lambda: len(headend.readings) >= n + 20)  # live ticks
    latest = _latest(headend)
    day = latest["e-pv-day"]
    assert day.available_min_kw == 0.0
    assert day.available_max_kw is not None
    assert day.available_max_kw > 90.0  # solar noon
    assert _env(latest["e-pv-night"]) == (0.0, 0.0, None)
    assert _env(latest["e-bess-empty"]) == (-50.0, 0.0, None)  # at its reserve
    assert _env(latest["e-gen-1"]) == (0.0, 200.0, 60.0)  # the site file's minimum
    assert _env(latest["e-ev-away"]) == (0.0, 0.0, None)
    assert _env(latest["e-load-1"]) == (-20.0, 0.0, None)  # static limits
    assert _env(latest["e-meter-1"]) == (None, None, None)  # not dispatchable
    down = latest["e-down-1"]
    assert down.status == pb.AssetStatus.OFFLINE
    assert _env(down) == (0.0, 0.0, None)
    assert all(t.setpoint_ends_at is None for t in latest.values())
    gen = next(a for a in headend.registers[0].assets if a.asset_id == "e-gen-1")
    assert (gen.min_stable_kw, gen.fallback_kw) == (60.0, 0.0)


async def test_legacy_readings_carry_the_envelope_too(
    headend: FakeHeadend, make_settings, running, legacy_site: str
) -> None:
    async with running(make_settings(legacy_site, port=headend.port)):
        await headend.wait_for(lambda: len(headend.readings) >= 3)
        n = len(headend.readings)
        await headend.wait_for(lambda: len(headend.readings) >= n + 2)
    last = headend.readings[-1]
    assert last.asset_id == ""
    assert _env(last) == (-40.0, 40.0, None)


async def test_a_device_that_sets_less_or_is_slow_shows_in_acks_and_readings(
    headend: FakeHeadend, make_settings, running
) -> None:
    settings = make_settings(_site(), port=headend.port, device_timeout_s=0.2)
    async with running(settings):
        await headend.wait_for(lambda: headend.current is not None)
        short = await headend.push_setpoint(40.0, asset_id="e-short-1")
        slow = await headend.push_setpoint(40.0, asset_id="e-slow-1")
        await headend.wait_for(lambda: len(headend.acks_for(short)) >= 2)
        await headend.wait_for(lambda: len(headend.acks_for(slow)) >= 2)
        await headend.wait_for(
            lambda: any(t.setpoint_id == short and t.power_kw == 32.0 for t in headend.readings)
        )
    short_ack, slow_ack = headend.acks_for(short)[-1], headend.acks_for(slow)[-1]
    assert short_ack.state == pb.AckState.APPLIED
    assert short_ack.applied_kw == 32.0
    assert slow_ack.state == pb.AckState.FAILED
    assert "did not answer" in slow_ack.reason


STATIC = Limits(-50.0, 50.0)
BESS = AssetConfig(asset_id="b", kind="bess", capacity_kw=50)


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (Measurement(1.0, available_min_kw=-10, available_max_kw=5), Envelope(-10, 5)),
        (Measurement(1.0), Envelope(-50, 50)),  # the device cannot tell: static limits
        (Measurement(1.0, available_min_kw=-90, available_max_kw=90), Envelope(-50, 50)),
        (Measurement(1.0, available_min_kw=5, available_max_kw=-5), Envelope(-50, 50)),
        (Measurement(1.0, available_max_kw=float("nan")), Envelope(-50, 50)),
        (Measurement(0.0, Status.OFFLINE), Envelope(0, 0)),
        (Measurement(0.0, Status.FAULT, available_max_kw=9), Envelope(0, 0)),
    ],
)
def test_envelope_narrows_what_the_device_says_by_the_static_limits(
    m: Measurement, expected: Envelope
) -> None:
    assert envelope(BESS, STATIC, m) == expected


def test_envelope_minimum_stable_load_and_unbounded_limits() -> None:
    gen = AssetConfig(asset_id="g", kind="genset", capacity_kw=100, min_stable_kw=30)
    assert envelope(gen, Limits(0, 100), Measurement(0.0)) == Envelope(0, 100, 30)
    assert envelope(gen, Limits(0, 100), Measurement(0.0, min_stable_kw=40)).min_stable_kw == 40
    meter = AssetConfig(asset_id="m", kind="meter")
    assert envelope(meter, Limits(0, 0), Measurement(5.0, available_max_kw=1)) == Envelope()
    other = AssetConfig(asset_id="o", kind="other")
    inf = float("inf")
    assert envelope(other, Limits(-inf, inf), Measurement(0.0)) == Envelope(None, None)
