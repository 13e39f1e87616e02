"""A site's telemetry in one call: GET /sites/{site_id}/telemetry (every asset's newest
reading and the site total, meters apart), every site's total (`site_totals`), and the
site's one-minute history summed from the rollups (GET /sites/{site_id}/rollup)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

import vpp_protocol as vp
from vpp_headend.rollup import minute_floor, rollup

SITE = """\
site_id: site-m
assets:
  - asset_id: m-bess
    kind: bess
    capacity_kw: 100
  - asset_id: m-meter
    kind: meter
  - asset_id: m-pv
    kind: pv
    capacity_kw: 50
  - asset_id: m-silent
    kind: load
    capacity_kw: 20
"""
REPORTING = {"m-bess": 30.0, "m-meter": -12.5, "m-pv": 17.25}
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60)
M = minute_floor(datetime.now(UTC)) - timedelta(minutes=10)


async def _report(h: Any, agents: Any) -> Any:
    """A gateway on ``h`` for site-m; one reading of each of `REPORTING` (m-silent none)."""
    agent = await agents(h.grpc_port, "site-m")
    result = await agent.register([*REPORTING, "m-silent"], kind=vp.AssetKind.OTHER)
    assert set(result.accepted_asset_ids) == {*REPORTING, "m-silent"}
    agent.send_batch(
        [
            agent.telemetry(a, p, seq=1, ts=BASE + timedelta(seconds=n))
            for n, (a, p) in enumerate(REPORTING.items())
        ]
    )
    return agent


async def _site_when(h: Any, eventually: Any, reporting: int) -> dict[str, Any]:
    body: dict[str, Any] = {}

    async def seen() -> bool:
        nonlocal body
        resp = await h.http.get("/sites/site-m/telemetry")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return bool(body["total"]["assets_reporting"] == reporting)

    await eventually(seen, 5, lambda: f"site-m never showed {reporting} reporting: {body}")
    return body


async def test_the_site_total_sums_dispatchable_assets_and_the_meter_apart(
    running: Any, agents: Any, eventually: Any
) -> None:
    await running.import_site(SITE)
    await running.import_site("site_id: site-x\nassets:\n  - asset_id: x-1\n    kind: bess\n")
    silent = (await running.http.get("/sites/site-m/telemetry")).json()
    assert [a["reading"] for a in silent["assets"]] == [None] * 4
    assert silent["total"] == {
        "power_kw": None,
        "meter_kw": None,
        "assets_reporting": 0,
        "assets": 4,
        "newest_ts": None,
        "oldest_ts": None,
        "worst_lag_s": None,
    }

    await _report(running, agents)
    body = await _site_when(running, eventually, 3)
    assert body["site_id"] == "site-m"
    assert [(a["asset_id"], a["kind"]) for a in body["assets"]] == [
        ("m-bess", "bess"),
        ("m-meter", "meter"),
        ("m-pv", "pv"),
        ("m-silent", "load"),
    ]
    by_id = {a["asset_id"]: a["reading"] for a in body["assets"]}
    assert by_id["m-silent"] is None
    for asset_id, power in REPORTING.items():
        one = (await running.http.get(f"/telemetry/{asset_id}")).json()
        assert by_id[asset_id]["power_kw"] == power
        assert {k: v for k, v in by_id[asset_id].items() if k != "lag_s"} == {
            k: v for k, v in one.items() if k != "lag_s"
        }
    total = body["total"]
    assert total["power_kw"] == 30.0 + 17.25  # not the meter's -12.5: it sees the same flow
    assert total["meter_kw"] == -12.5
    assert total["assets_reporting"] == 3
    assert total["assets"] == 4
    at = datetime.fromisoformat(body["at"])
    oldest = datetime.fromisoformat(total["oldest_ts"])
    assert oldest == BASE
    assert datetime.fromisoformat(total["newest_ts"]) == BASE + timedelta(seconds=2)
    assert total["worst_lag_s"] == round((at - oldest).total_seconds(), 3)

    totals = await running.headend.telemetry.site_totals()

    async def flushed() -> bool:
        nonlocal totals
        totals = await running.headend.telemetry.site_totals()
        return "site-m" in totals and totals["site-m"].assets_reporting == 3

    await eventually(flushed, 5, lambda: f"telemetry_latest never held site-m: {totals}")
    assert set(totals) == {"site-m"}  # site-x has reported nothing
    t = totals["site-m"]
    assert (t.power_kw, t.meter_kw) == (47.25, -12.5)
    assert (t.oldest_ts, t.newest_ts) == (BASE, BASE + timedelta(seconds=2))
    assert t.newest_received_at >= t.newest_ts


async def test_an_unknown_site_is_a_404(running: Any) -> None:
    for path in ("/sites/ghost/telemetry", "/sites/ghost/rollup", "/sites/bad%20id/telemetry"):
        resp = await running.http.get(path)
        assert resp.status_code == 404, resp.text
        assert resp.json()["field"] == "site_id"


async def test_readings_held_by_the_other_replica_come_from_the_database(
    start_headend: Any, agents: Any, eventually: Any
) -> None:
    a = await start_headend(replica="replica-a")
    b = await start_headend(replica="replica-b")
    await a.import_site(SITE)
    await _report(a, agents)
    assert all(b.headend.ingest.held(asset_id) is None for asset_id in REPORTING)
    body = await _site_when(b, eventually, 3)
    assert body["total"]["power_kw"] == 47.25
    assert body["total"]["meter_kw"] == -12.5
    assert {a["asset_id"]: a["reading"] and a["reading"]["seq"] for a in body["assets"]} == {
        "m-bess": 1,
        "m-meter": 1,
        "m-pv": 1,
        "m-silent": None,
    }
    assert (await b.headend.telemetry.site_totals())["site-m"].power_kw == 47.25


async def test_the_site_rollup_sums_its_dispatchable_assets_per_minute(running: Any) -> None:
    await running.import_site(SITE)
    # minute 0: bess 10 (one reading) + pv 2..4 (two); minute 1: bess only;
    # minute 2: pv only; the meter is in every minute and never summed.
    rows = [
        ("m-bess", 1, 0, 10, 10.0),
        ("m-pv", 1, 0, 5, 2.0),
        ("m-pv", 2, 0, 35, 4.0),
        ("m-bess", 2, 1, 10, -6.0),
        ("m-pv", 3, 2, 10, 1.5),
        *(("m-meter", n + 1, n, 20, 99.0) for n in range(3)),
    ]
    async with running.headend.engine.begin() as conn:
        for asset_id, seq, minute, second, power in rows:
            await conn.execute(
                text(
                    "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status) "
                    "VALUES (:a, :s, :ts, now(), :p, 1)"
                ),
                {
                    "a": asset_id,
                    "s": seq,
                    "ts": M + timedelta(minutes=minute, seconds=second),
                    "p": power,
                },
            )
    await rollup(running.headend.engine, M + timedelta(minutes=4))

    def iso(minute: int) -> str:
        return (M + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")

    body = (await running.http.get("/sites/site-m/rollup")).json()
    assert body["site_id"] == "site-m"
    assert body["count"] == 3
    assert body["next"] is None
    sums = [
        (m["minute"], m["assets"], m["min_power_kw"], m["avg_power_kw"], m["max_power_kw"])
        for m in body["minutes"]
    ]
    assert sums == [
        (iso(2), 1, 1.5, 1.5, 1.5),
        (iso(1), 1, -6.0, -6.0, -6.0),
        (iso(0), 2, 12.0, 13.0, 14.0),  # bess 10 + pv's 2 / 3 / 4
    ]
    assert set(body["minutes"][0]) == {
        "minute",
        "assets",
        "min_power_kw",
        "avg_power_kw",
        "max_power_kw",
    }

    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await running.http.get("/sites/site-m/rollup", params=params)).json()
        pages += page["minutes"]
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == body["minutes"]

    window = {"start": iso(1), "end": iso(2)}
    ranged = (await running.http.get("/sites/site-m/rollup", params=window)).json()
    assert [m["minute"] for m in ranged["minutes"]] == [iso(1)]
    backwards = await running.http.get(
        "/sites/site-m/rollup", params={"start": iso(2), "end": iso(1)}
    )
    assert backwards.status_code == 422
    assert backwards.json()["field"] == "start"
    naive = await running.http.get("/sites/site-m/rollup", params={"start": "2026-01-01T00:00"})
    assert naive.status_code == 422
    assert naive.json()["field"] == "start"
    schema = (await running.http.get("/schema/openapi.json")).json()
    assert "/sites/{site_id}/rollup" in schema["paths"]
    assert "/sites/{site_id}/telemetry" in schema["paths"]
    assert "SiteTelemetryOut" in schema["components"]["schemas"]
