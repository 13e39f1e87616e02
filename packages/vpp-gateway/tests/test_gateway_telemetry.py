"""Telemetry over a real stream: one reading per asset per tick, seq, timestamps, legacy mode."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import vpp_protocol as pb
from vpp_gateway.testing import FakeHeadend


async def test_n_assets_n_readings_per_tick(headend: FakeHeadend, make_settings, running) -> None:
    settings = make_settings(port=headend.port)
    started = datetime.now(UTC)
    async with running(settings) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 5 * 6, within_s=10)
        ticks = agent.mux.ticks
    assert headend.registers[0].site_id == "site-t"
    assert [a.asset_id for a in headend.registers[0].assets] == [
        a.asset_id for a in settings.assets
    ]
    by_asset: dict[str, list[pb.Telemetry]] = defaultdict(list)
    for t in headend.readings:
        by_asset[t.asset_id].append(t)
    assert set(by_asset) == {a.asset_id for a in settings.assets}
    for asset_id, readings in by_asset.items():
        seqs = [t.seq for t in readings]
        assert seqs == sorted(seqs), asset_id
        assert len(set(seqs)) == len(seqs), asset_id
        assert seqs[0] == 1
        for t in readings:
            assert t.ts is not None
            assert started - timedelta(seconds=1) <= t.ts <= datetime.now(UTC)
    # one TelemetryBatch per tick: readings of one tick share one generation time
    by_ts: dict[datetime, set[str]] = defaultdict(set)
    for t in headend.readings:
        assert t.ts is not None
        by_ts[t.ts].add(t.asset_id)
    full = [ids for ids in by_ts.values() if len(ids) == len(settings.assets)]
    assert len(full) >= 5
    assert ticks >= 5


async def test_seq_survives_restart(headend: FakeHeadend, make_settings, running) -> None:
    settings = make_settings(port=headend.port)
    async with running(settings):
        await headend.wait_for(lambda: len(headend.readings) >= 10)
    last = max(t.seq for t in headend.readings if t.asset_id == "t-pv-1")
    count = len(headend.readings)
    async with running(settings):
        await headend.wait_for(lambda: len(headend.readings) >= count + 10)
    seqs = [t.seq for t in headend.readings if t.asset_id == "t-pv-1"]
    assert len(seqs) == len(set(seqs)), "a seq was reused after a restart"
    assert max(seqs) > last
    assert headend.duplicates == 0


async def test_legacy_single_asset(
    headend: FakeHeadend, make_settings, running, legacy_site: str
) -> None:
    settings = make_settings(legacy_site, port=headend.port)
    async with running(settings) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 3)
        reg = headend.registers[0]
        assert reg.assets == []
        assert reg.asset_id == "l-bess-1"
        assert all(t.asset_id == "" for t in headend.readings)
        sid = await headend.push_setpoint(-10.0)  # no target: the one asset
        await headend.wait_for(lambda: len(headend.acks_for(sid)) >= 2)
        await headend.wait_for(lambda: any(t.setpoint_kw == -10.0 for t in headend.readings))
        assert agent.fleet.only().setpoint_kw == -10.0
    acks = headend.acks_for(sid)
    assert [a.state for a in acks] == [pb.AckState.RECEIVED, pb.AckState.APPLIED]
    assert all(a.asset_id == "" for a in acks)
    assert acks[1].applied_kw == -10.0
    assert any(t.setpoint_id == sid for t in headend.readings)
    # the fake headend attributes asset-less readings to the session's default asset
    assert set(headend.stored) == {"l-bess-1"}


async def test_rejected_asset_kept_off_the_wire(make_settings, running) -> None:
    h = FakeHeadend(heartbeat_s=0.5, reject={"t-load-1": "registered to another site"})
    await h.start()
    try:
        async with running(make_settings(port=h.port)) as agent:
            await h.wait_for(lambda: len(h.readings) >= 12)
            assert not agent.fleet["t-load-1"].accepted
    finally:
        await h.stop()
    assert "t-load-1" not in {t.asset_id for t in h.readings}
