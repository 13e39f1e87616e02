"""Dispatch delivers what was asked and shows what was delivered (DESIGN.md §3a).

Over a real stream (`FakeHeadend` on loopback): the site split works on live envelopes and
minimum stable loads; allocations are applied concurrently; what a device does not take is
redistributed; the ack says per asset what it was asked, what it set, and why it fell short.
PV is put in the dark (or the sun) relative to the wall clock, so every run sees the same.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

import vpp_protocol as pb
from vpp_gateway import ManualClock
from vpp_gateway.delivery import Deliverer, command
from vpp_gateway.devices import simulated_device
from vpp_gateway.envelope import envelope
from vpp_gateway.limits import TOLERANCE_KW
from vpp_gateway.log import EventLog
from vpp_gateway.model import Reading
from vpp_gateway.runtime import AssetFleet
from vpp_gateway.testing import FakeHeadend
from vpp_protocol.sitefile import AssetConfig

AVAILABLE = pb.LimitReason.AVAILABLE_POWER
SOC = pb.LimitReason.STATE_OF_CHARGE
STABLE = pb.LimitReason.MIN_STABLE_LOAD
LIMITS = pb.LimitReason.LIMITS
FAULT = pb.LimitReason.DEVICE_FAULT
TIMEOUT = pb.LimitReason.DEVICE_TIMEOUT
REDUCED = pb.LimitReason.DEVICE_REDUCED


def _dark() -> str:
    """Simulator parameters that keep a PV in the dark now: solar noon 12 h away."""
    now = datetime.now(UTC)
    midnight = round((now.hour + now.minute / 60 + 12) % 24, 3)
    return f"{{solar_noon_utc_h: {midnight}, day_length_h: 2}}"


def _exact(values: list[float]) -> Decimal:
    return sum((Decimal(repr(v)) for v in values), Decimal(0))


async def _final(headend: FakeHeadend, sid: str, within_s: float = 10.0) -> pb.SetpointAck:
    await headend.wait_for(lambda: len(headend.acks_for(sid)) >= 2, within_s)
    return headend.acks_for(sid)[-1]


def _by_id(ack: pb.SetpointAck) -> dict[str, pb.Allocation]:
    return {a.asset_id: a for a in ack.allocations}


def _dark_site() -> str:
    dark = _dark()
    return f"""
site_id: site-n
assets:
  - {{asset_id: n-pv-1, kind: pv, capacity_kw: 120, simulator: {dark}}}
  - {{asset_id: n-pv-2, kind: pv, capacity_kw: 120, simulator: {dark}}}
  - {{asset_id: n-pv-3, kind: pv, capacity_kw: 80, simulator: {dark}}}
  - {{asset_id: n-pv-4, kind: pv, capacity_kw: 60, simulator: {dark}}}
  - {{asset_id: n-bess-1, kind: bess, capacity_kw: 250, energy_kwh: 500}}
  - {{asset_id: n-bess-2, kind: bess, capacity_kw: 250, energy_kwh: 500}}
  - {{asset_id: n-bess-3, kind: bess, capacity_kw: 100, energy_kwh: 200}}
  - {{asset_id: n-meter-1, kind: meter}}
  - {{asset_id: n-genset-1, kind: genset, capacity_kw: 200, min_stable_kw: 60}}
  - {{asset_id: n-ev-1, kind: ev_charger, capacity_kw: 22}}
  - {{asset_id: n-ev-2, kind: ev_charger, capacity_kw: 22}}
  - {{asset_id: n-ev-3, kind: ev_charger, capacity_kw: 50}}
"""


async def test_a_dark_site_meets_a_request_its_batteries_can_and_says_what_is_short(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(_dark_site(), port=headend.port)):
        await headend.wait_for(lambda: len(headend.readings) >= 12)
        met = await _final(headend, await headend.push_setpoint(450.3, site_id="site-n"))
        short = await _final(headend, await headend.push_setpoint(1000.0, site_id="site-n"))

    assert met.state == pb.AckState.APPLIED, met.reason
    allocs = _by_id(met)
    assert "n-meter-1" not in allocs
    assert _exact([a.power_kw for a in allocs.values()]) == Decimal("450.3")
    assert _exact([a.applied_kw or 0.0 for a in allocs.values()]) == Decimal("450.3")
    assert (met.requested_kw, met.applied_kw, met.shortfall_kw) == (450.3, 450.3, 0.0)
    pvs = [a for i, a in allocs.items() if "-pv-" in i]
    assert len(pvs) == 4
    for pv in pvs:
        assert (pv.power_kw, pv.applied_kw) == (0.0, 0.0)
        assert (pv.limit_reason, pv.limit_detail) == (AVAILABLE, "no sun: available 0 kW")
    # the batteries alone can do it: the genset stays off, and says why it gives nothing
    gen = allocs["n-genset-1"]
    assert (gen.power_kw, gen.limit_reason) == (0.0, STABLE)
    assert "60 kW" in gen.limit_detail
    assert all(allocs[f"n-bess-{i}"].limit_reason == pb.LimitReason.UNSPECIFIED for i in (1, 2, 3))

    # more than batteries and genset can give: every asset at its limit, each with a reason
    assert short.state == pb.AckState.APPLIED
    assert (short.requested_kw, short.applied_kw, short.shortfall_kw) == (1000.0, 800.0, 200.0)
    s = _by_id(short)
    assert {s[i].applied_kw for i in ("n-bess-1", "n-bess-2")} == {250.0}
    assert s["n-genset-1"].applied_kw == 200.0
    assert all(a.limit_reason != pb.LimitReason.UNSPECIFIED for a in s.values()), [
        (a.asset_id, a.limit_reason) for a in s.values()
    ]
    assert (s["n-bess-3"].limit_reason, s["n-bess-3"].limit_detail) == (LIMITS, "at max_kw 100")
    assert s["n-pv-1"].limit_reason == AVAILABLE
    assert "shortfall 200 kW" in short.reason


def _genset_site() -> str:
    return f"""
site_id: site-g
assets:
  - {{asset_id: g-pv-1, kind: pv, capacity_kw: 50, simulator: {_dark()}}}
  - {{asset_id: g-gen-1, kind: genset, capacity_kw: 100, min_stable_kw: 40}}
  - {{asset_id: g-bess-1, kind: bess, capacity_kw: 30, energy_kwh: 300}}
  - {{asset_id: g-bess-low, kind: bess, capacity_kw: 50, energy_kwh: 100,
     simulator: {{initial_soc_pct: 5}}}}
"""


async def test_a_genset_runs_only_above_its_minimum_stable_load(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(_genset_site(), port=headend.port)) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 4)
        small = await _final(headend, await headend.push_setpoint(20.0, site_id="site-g"))
        gen_after_small = agent.fleet["g-gen-1"].setpoint_kw
        needs = await _final(headend, await headend.push_setpoint(60.0, site_id="site-g"))
        gen_after_needs = agent.fleet["g-gen-1"].setpoint_kw
        beyond = await _final(headend, await headend.push_setpoint(200.0, site_id="site-g"))

    # 20 kW: the battery alone; the genset is off (it cannot run at less than 40 kW)
    a = _by_id(small)
    assert (a["g-gen-1"].power_kw, a["g-bess-1"].power_kw) == (0.0, 20.0)
    assert gen_after_small == 0.0
    assert a["g-gen-1"].limit_reason == STABLE
    assert (small.applied_kw, small.shortfall_kw) == (20.0, 0.0)
    # 60 kW: more than the battery's 30, so the genset runs, at least at its minimum
    b = _by_id(needs)
    assert b["g-gen-1"].power_kw >= 40.0
    assert gen_after_needs == b["g-gen-1"].power_kw
    assert _exact([x.power_kw for x in b.values()]) == Decimal("60")
    assert (needs.applied_kw, needs.shortfall_kw) == (60.0, 0.0)
    assert b["g-bess-low"].power_kw == 0.0  # at its reserve
    # 200 kW: 100 + 30 is all there is; the rest is the shortfall, each short asset says why
    c = _by_id(beyond)
    assert beyond.state == pb.AckState.APPLIED
    assert (beyond.applied_kw, beyond.shortfall_kw) == (130.0, 70.0)
    assert (c["g-gen-1"].limit_reason, c["g-gen-1"].limit_detail) == (LIMITS, "at max_kw 100")
    assert (c["g-bess-1"].limit_reason, c["g-bess-1"].limit_detail) == (LIMITS, "at max_kw 30")
    low = c["g-bess-low"]
    assert low.limit_reason == SOC
    assert low.limit_detail.startswith("soc 5 %")
    assert (c["g-pv-1"].limit_reason, c["g-pv-1"].limit_detail) == (
        AVAILABLE,
        "no sun: available 0 kW",
    )


REDISTRIBUTE_SITE = """
site_id: site-r
assets:
  - {asset_id: r-short-1, kind: bess, capacity_kw: 50, simulator: {apply_factor: 0.5}}
  - {asset_id: r-fail-1, kind: bess, capacity_kw: 50, simulator: {fail_apply: true}}
  - {asset_id: r-ok-1, kind: bess, capacity_kw: 50, energy_kwh: 500}
  - {asset_id: r-ok-2, kind: bess, capacity_kw: 100, energy_kwh: 1000}
"""


async def test_what_a_device_does_not_take_goes_to_the_others(
    headend: FakeHeadend, make_settings, running
) -> None:
    async with running(make_settings(REDISTRIBUTE_SITE, port=headend.port)) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 4)
        sid = await headend.push_setpoint(120.0, site_id="site-r")
        met = await _final(headend, sid)
        await headend.wait_for(
            lambda: any(
                t.asset_id == "r-ok-2" and t.setpoint_id == sid and t.power_kw == 72.0
                for t in headend.readings
            )
        )
        held = {a.asset_id: a.setpoint_kw for a in agent.fleet}
        over = await _final(headend, await headend.push_setpoint(200.0, site_id="site-r"))

    # proportional 24/24/24/48; the half-hearted one sets 12, the broken one nothing;
    # the 36 kW missing go to the two that took everything, in proportion 50 : 100
    assert met.state == pb.AckState.APPLIED
    a = _by_id(met)
    assert (a["r-short-1"].power_kw, a["r-short-1"].applied_kw) == (24.0, 12.0)
    assert a["r-short-1"].limit_reason == REDUCED
    assert a["r-short-1"].limit_detail == "device set 12 kW instead of 24 kW"
    assert a["r-fail-1"].applied_kw is None
    assert a["r-fail-1"].limit_reason == FAULT
    assert "refused" in a["r-fail-1"].limit_detail
    assert (a["r-ok-1"].power_kw, a["r-ok-1"].applied_kw) == (36.0, 36.0)
    assert (a["r-ok-2"].power_kw, a["r-ok-2"].applied_kw) == (72.0, 72.0)
    assert (met.applied_kw, met.shortfall_kw) == (120.0, 0.0)
    assert "r-fail-1" in met.reason
    assert "r-short-1" in met.reason
    assert held == {"r-short-1": 12.0, "r-fail-1": None, "r-ok-1": 36.0, "r-ok-2": 72.0}
    # asking more than the healthy ones can make up: they go to their maximum, the rest is short
    b = _by_id(over)
    assert (b["r-ok-1"].applied_kw, b["r-ok-2"].applied_kw) == (50.0, 100.0)
    assert (over.applied_kw, over.shortfall_kw) == (170.0, 30.0)
    assert (b["r-ok-2"].limit_reason, b["r-ok-2"].limit_detail) == (LIMITS, "at max_kw 100")
    assert b["r-short-1"].limit_reason == REDUCED


async def test_a_site_setpoint_no_device_confirms_fails_with_all_of_it_short(
    headend: FakeHeadend, make_settings, running
) -> None:
    site = """
site_id: site-x
assets:
  - {asset_id: x-fail-1, kind: bess, capacity_kw: 50, simulator: {fail_apply: true}}
  - {asset_id: x-fail-2, kind: bess, capacity_kw: 50, simulator: {fail_apply: true}}
"""
    async with running(make_settings(site, port=headend.port)):
        await headend.wait_for(lambda: len(headend.readings) >= 2)
        ack = await _final(headend, await headend.push_setpoint(-30.0, site_id="site-x"))
    assert ack.state == pb.AckState.FAILED
    assert (ack.requested_kw, ack.applied_kw, ack.shortfall_kw) == (-30.0, 0.0, -30.0)
    assert [(a.asset_id, a.applied_kw, a.limit_reason) for a in ack.allocations] == [
        ("x-fail-1", None, FAULT),
        ("x-fail-2", None, FAULT),
    ]


SLOW_SITE = """
site_id: site-s
assets:
  - {asset_id: s-a-slow, kind: bess, capacity_kw: 50, simulator: {apply_delay_s: 2.0}}
  - {asset_id: s-b-fast, kind: bess, capacity_kw: 50, energy_kwh: 500}
  - {asset_id: s-c-fast, kind: bess, capacity_kw: 100, energy_kwh: 1000}
"""


async def test_a_slow_device_holds_no_other_and_its_share_moves(
    headend: FakeHeadend, make_settings, running
) -> None:
    settings = make_settings(SLOW_SITE, port=headend.port, device_timeout_s=0.5)
    async with running(settings) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 3)
        sid = await headend.push_setpoint(100.0, site_id="site-s")
        # the fast ones run their share while the slow one is still being waited for
        await headend.wait_for(
            lambda: any(
                t.asset_id == "s-c-fast" and t.setpoint_id == sid and t.power_kw == 50.0
                for t in headend.readings
            )
        )
        assert [x.state for x in headend.acks_for(sid)] == [pb.AckState.RECEIVED]
        ack = await _final(headend, sid)
        # past the moment the abandoned command would have landed: it never does
        landed_by = ack.ts + timedelta(seconds=2.5)
        await headend.wait_for(
            lambda: any(
                t.asset_id == "s-a-slow" and t.ts is not None and t.ts > landed_by
                for t in headend.readings
            ),
            within_s=10.0,
        )
        slow = agent.fleet["s-a-slow"]
        device_setpoint = slow.device.setpoint_kw  # type: ignore[attr-defined]  # a SimBess
    assert ack.state == pb.AckState.APPLIED
    a = _by_id(ack)
    assert a["s-a-slow"].applied_kw is None
    assert a["s-a-slow"].limit_reason == TIMEOUT
    assert a["s-a-slow"].limit_detail == "device did not answer in 0.5 s"
    assert math.isclose(a["s-b-fast"].applied_kw + a["s-c-fast"].applied_kw, 100.0)
    assert (ack.applied_kw, ack.shortfall_kw) == (100.0, 0.0)
    assert device_setpoint is None
    assert slow.setpoint_kw is None
    last_slow = [t for t in headend.readings if t.asset_id == "s-a-slow"][-1]
    assert (last_slow.power_kw, last_slow.setpoint_id) == (0.0, "")


def _single_site() -> str:
    return f"""
site_id: site-1
assets:
  - {{asset_id: o-pv-1, kind: pv, capacity_kw: 50, simulator: {_dark()}}}
  - {{asset_id: o-gen-1, kind: genset, capacity_kw: 100, min_stable_kw: 40}}
  - {{asset_id: o-bess-low, kind: bess, capacity_kw: 50, energy_kwh: 100,
     simulator: {{initial_soc_pct: 5}}}}
  - {{asset_id: o-bess-1, kind: bess, capacity_kw: 50}}
  - {{asset_id: o-slow-1, kind: bess, capacity_kw: 50, simulator: {{apply_delay_s: 2.0}}}}
"""


async def test_a_single_asset_setpoint_says_why_it_fell_short(
    headend: FakeHeadend, make_settings, running
) -> None:
    settings = make_settings(_single_site(), port=headend.port, device_timeout_s=0.3)
    cases = [
        ("o-pv-1", 30.0, 0.0, AVAILABLE, "no sun: available 0 kW"),
        ("o-gen-1", 10.0, 40.0, STABLE, "at its minimum stable load 40 kW"),
        ("o-bess-low", 20.0, 0.0, SOC, "soc 5 %: can discharge 0 kW"),
        ("o-bess-1", 500.0, 50.0, LIMITS, "clamped to max_kw 50"),
        ("o-bess-1", -20.0, -20.0, pb.LimitReason.UNSPECIFIED, ""),
    ]
    async with running(settings):
        await headend.wait_for(lambda: len(headend.readings) >= 5)
        acks = [
            await _final(headend, await headend.push_setpoint(kw, asset_id=asset_id))
            for asset_id, kw, *_ in cases
        ]
        slow = await _final(headend, await headend.push_setpoint(10.0, asset_id="o-slow-1"))
    for (asset_id, kw, applied, reason, detail), ack in zip(cases, acks, strict=True):
        assert ack.state == pb.AckState.APPLIED, (asset_id, ack.reason)
        assert (ack.asset_id, ack.requested_kw, ack.applied_kw) == (asset_id, kw, applied)
        assert ack.shortfall_kw == kw - applied
        assert (ack.limit_reason, ack.limit_detail) == (reason, detail), asset_id
    assert slow.state == pb.AckState.FAILED
    assert (slow.limit_reason, slow.shortfall_kw, slow.applied_kw) == (TIMEOUT, 10.0, None)


# -- the loop alone, on simulated devices and a manual clock ---------------------------------


def _fleet(caps: list[float], factors: list[float], broken: list[bool]) -> AssetFleet:
    configs = tuple(
        AssetConfig(
            asset_id=f"x-{i}",
            kind="other",
            capacity_kw=cap,
            simulator={"apply_factor": f, "fail_apply": bad},
        )
        for i, (cap, f, bad) in enumerate(zip(caps, factors, broken, strict=True))
    )
    clock = ManualClock()
    fleet = AssetFleet.build(configs, simulated_device, clock, 0, {})
    for a in fleet:  # one reading each: the split needs the asset online, with its envelope
        m = asyncio.run(a.device.read())
        env = envelope(a.config, a.limits, m)
        a.last_reading = Reading(
            a.asset_id,
            1,
            clock.now(),
            m.power_kw,
            m.status,
            available_min_kw=env.min_kw,
            available_max_kw=env.max_kw,
            min_stable_kw=env.min_stable_kw,
        )
    return fleet


@settings(max_examples=60, deadline=None)
@given(
    assets=st.lists(
        st.tuples(
            st.integers(1, 200).map(float),
            st.sampled_from([1.0, 1.0, 0.5, 0.9]),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    request=st.integers(0, 1_000_000).map(lambda w: w / 1000),
)
def test_delivery_meets_every_request_the_healthy_assets_can_make_up(
    assets: list[tuple[float, float, bool]], request: float
) -> None:
    caps, factors, broken = map(list, zip(*assets, strict=True))
    fleet = _fleet(caps, factors, broken)
    deliverer = Deliverer(lambda a, kw: command(a, kw, 1.0), EventLog(), {"setpoint_id": "p"})
    d = asyncio.run(deliverer.run(request, list(fleet)))
    healthy = sum(c for c, f, bad in assets if f == 1.0 and not bad)
    applied = [a.applied_kw or 0.0 for a in d.allocations]
    assert math.isclose(math.fsum(applied), d.applied_kw, abs_tol=1e-6)
    # never more than asked; short by what the ack says (both to half a step of the 1 W grid)
    assert d.applied_kw <= request + TOLERANCE_KW
    assert math.isclose(d.applied_kw + d.shortfall_kw, request, abs_tol=TOLERANCE_KW)
    if request <= healthy:
        assert d.shortfall_kw == 0.0, d
    for a, bad in zip(d.allocations, broken, strict=True):
        assert (a.applied_kw is None) == bad
        if bad:
            assert a.limit is not None
            assert a.limit.reason.value == "device_fault"
