"""Cursor paging of every list endpoint: ``{"items", "next"}`` (history and rollups keep
their object and add ``next``); walking the pages yields each item once, in order; a bad
cursor or limit is a 422 naming it; a dispatch created mid-walk repeats and skips nothing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from vpp_headend.rollup import minute_floor, rollup

# Readings on a fixed grid in the recent past (today's partitions exist).
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=100)
M = minute_floor(datetime.now(UTC)) - timedelta(minutes=10)

SITES = {
    "site-a": ["a-1", "a-2", "a-3"],
    "site-b": ["b-1"],
    "site-c": ["c-1", "c-2"],
    "site-d": ["d-1"],
}


def _key(item: dict[str, Any]) -> str:
    """What identifies an item of any list."""
    for name in ("dispatch_id", "asset_id", "site_id", "minute"):
        if name in item:
            return str(item[name])
    return f"{item['ts']}/{item['seq']}"


async def walk(
    http: Any, path: str, limit: int, params: dict[str, Any] | None = None, field: str = "items"
) -> list[dict[str, Any]]:
    """Every item of a list, a page of ``limit`` at a time, following ``next``; checks
    that each page but the last is full and that no empty page trails."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**(params or {}), "limit": limit, **({"cursor": cursor} if cursor else {})}
        resp = await http.get(path, params=query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        page = body[field]
        assert len(page) <= limit
        out += page
        if body["next"] is None:
            assert page or not out, "an empty last page after a full one"
            return out
        assert len(page) == limit, f"a short page before the last: {body}"
        cursor = body["next"]


async def everything(
    http: Any, path: str, params: dict[str, Any] | None = None, field: str = "items"
) -> list[dict[str, Any]]:
    body = (await http.get(path, params={**(params or {}), "limit": 1000})).json()
    assert body["next"] is None
    return list(body[field])


@pytest.fixture
async def stocked(running: Any, agents: Any, site_yaml: Any, eventually: Any) -> Any:
    """Four sites, seven assets, seven dispatches, a gateway on site-b with eight
    readings of b-1 (two of them at one ts), and rollups of a-1 over five minutes."""
    for site_id, assets in SITES.items():
        await running.import_site(site_yaml(site_id, assets))
    for n, target in enumerate(
        [
            {"asset_id": "a-1"},
            {"asset_id": "a-2"},
            {"site_id": "site-b"},
            {"asset_id": "a-1"},
            {"site_id": "site-c"},
            {"asset_id": "c-2"},
            {"asset_id": "a-1"},
        ]
    ):
        await running.dispatch(**target, power_kw=float(n + 1), ttl_s=600)
    agent = await agents(running.grpc_port, "site-b")
    await agent.register(["b-1"])
    stamps = [BASE + timedelta(seconds=n) for n in (1, 2, 3, 3, 4, 5, 6, 7)]
    agent.send_batch(
        [agent.telemetry("b-1", float(n), seq=n + 1, ts=ts) for n, ts in enumerate(stamps)]
    )

    async def stored() -> bool:
        body = (await running.http.get("/telemetry/b-1/history")).json()
        return bool(body["count"] == len(stamps))

    await eventually(stored, 5, "the readings of b-1 were never stored")
    async with running.headend.engine.begin() as conn:
        for n in range(5):
            await conn.execute(
                text(
                    "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status) "
                    "VALUES ('a-1', :s, :ts, now(), :p, 1)"
                ),
                {"s": n + 1, "ts": M + timedelta(minutes=n, seconds=10), "p": float(n)},
            )
    await rollup(running.headend.engine, M + timedelta(minutes=6))
    return running


LISTS = [
    ("/sites", {}, "items", 4),
    ("/assets", {}, "items", 7),
    ("/assets", {"site_id": "site-a"}, "items", 3),
    ("/gateways", {}, "items", 4),
    ("/dispatches", {}, "items", 7),
    ("/dispatches", {"asset_id": "a-1"}, "items", 3),
    ("/dispatches", {"site_id": "site-b"}, "items", 1),
    # Not site-b's (sent to its gateway) nor the two to a-1 that a newer one superseded.
    ("/dispatches", {"state": "pending"}, "items", 4),
    ("/telemetry/b-1/history", {}, "readings", 8),
    ("/telemetry/a-1/rollup", {}, "minutes", 5),
]


async def test_a_limit_of_two_is_two_items_and_a_next_that_yields_the_rest(stocked: Any) -> None:
    http = stocked.http
    first = (await http.get("/assets", params={"limit": 2})).json()
    assert [a["asset_id"] for a in first["items"]] == ["a-1", "a-2"]
    assert isinstance(first["next"], str)
    second = (await http.get("/assets", params={"limit": 2, "cursor": first["next"]})).json()
    assert [a["asset_id"] for a in second["items"]] == ["a-3", "b-1"]
    rest = (await http.get("/assets", params={"limit": 100, "cursor": second["next"]})).json()
    assert [a["asset_id"] for a in rest["items"]] == ["c-1", "c-2", "d-1"]
    assert rest["next"] is None
    # Without a limit a page holds up to 100: everything here, and no next.
    assert (await http.get("/assets")).json()["next"] is None


async def test_walking_every_list_yields_each_item_once_in_order(stocked: Any) -> None:
    http = stocked.http
    for path, params, field, n in LISTS:
        whole = await everything(http, path, params, field)
        assert len(whole) == n, (path, params, whole)
        assert len({_key(i) for i in whole}) == n, (path, params)
        for limit in (1, 2, 3):
            walked = await walk(http, path, limit, params, field)
            assert walked == whole, (path, params, limit)


async def test_lists_are_ordered_by_their_keys(stocked: Any) -> None:
    http = stocked.http
    dispatches = await everything(http, "/dispatches")
    issued = [(d["issued_at"], d["dispatch_id"]) for d in dispatches]
    assert issued == sorted(issued, reverse=True)
    history = await everything(http, "/telemetry/b-1/history", field="readings")
    assert [r["seq"] for r in history] == [8, 7, 6, 5, 4, 3, 2, 1]  # seq 3 and 4 share a ts
    minutes = await everything(http, "/telemetry/a-1/rollup", field="minutes")
    assert [m["max_power_kw"] for m in minutes] == [4.0, 3.0, 2.0, 1.0, 0.0]
    gateways = {g["site_id"]: g for g in await walk(http, "/gateways", 1)}
    assert gateways["site-b"]["connected"] is True  # the live session, on its page
    assert gateways["site-a"]["connected"] is False


async def test_history_pages_keep_the_window(stocked: Any) -> None:
    http = stocked.http
    window = {
        "start": (BASE + timedelta(seconds=2)).isoformat(),
        "end": (BASE + timedelta(seconds=6)).isoformat(),
    }
    walked = await walk(http, "/telemetry/b-1/history", 1, window, "readings")
    assert [r["seq"] for r in walked] == [6, 5, 4, 3, 2]
    first = (await http.get("/telemetry/b-1/history", params={**window, "limit": 2})).json()
    assert first["count"] == 2
    assert first["limit"] == 2


def _tampered(cursor: str, **changes: Any) -> str:
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw.update(changes)
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()


async def _problem(http: Any, path: str, params: dict[str, Any], field: str) -> dict[str, Any]:
    resp = await http.get(path, params=params)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["field"] == field, body
    assert "Traceback" not in resp.text
    return dict(body)


async def test_a_bad_cursor_is_a_422_naming_cursor(stocked: Any) -> None:
    http = stocked.http
    of_site_a = (await http.get("/assets", params={"site_id": "site-a", "limit": 1})).json()
    cursor = of_site_a["next"]
    assert cursor
    bad = [
        "garbage!",
        "not-json-at-all",
        "",
        "%00",
        cursor[: len(cursor) // 2],
        cursor[:-1],
        "x" * 513,
        _tampered(cursor, v=2),
        _tampered(cursor, k=["a-\u0000"]),
        _tampered(cursor, k=[7]),
        _tampered(cursor, k=[]),
        _tampered(cursor, extra=1),
    ]
    for value in bad:
        await _problem(http, "/assets", {"site_id": "site-a", "cursor": value}, "cursor")
    # A cursor made for other filters or another list.
    for path, params in [
        ("/assets", {}),
        ("/assets", {"site_id": "site-b"}),
        ("/sites", {}),
        ("/gateways", {}),
        ("/dispatches", {}),
        ("/telemetry/a-1/history", {}),
    ]:
        body = await _problem(http, path, {**params, "cursor": cursor}, "cursor")
        assert "other filters" in body["detail"]
    dispatch_cursor = (await http.get("/dispatches", params={"limit": 1})).json()["next"]
    await _problem(http, "/dispatches", {"state": "failed", "cursor": dispatch_cursor}, "cursor")
    history_cursor = (await http.get("/telemetry/b-1/history", params={"limit": 1})).json()["next"]
    later = {"start": BASE.isoformat(), "cursor": history_cursor}
    await _problem(http, "/telemetry/b-1/history", later, "cursor")
    await _problem(http, "/telemetry/b-1/rollup", {"cursor": history_cursor}, "cursor")
    # The same window spelled in another zone is the same filter.
    start = BASE.isoformat()
    same = (await http.get("/telemetry/b-1/history", params={"start": start, "limit": 1})).json()
    shifted = BASE.astimezone(timezone(timedelta(hours=2))).isoformat()
    again = await http.get(
        "/telemetry/b-1/history", params={"start": shifted, "cursor": same["next"]}
    )
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    ("path", "too_big"),
    [
        ("/sites", 1001),
        ("/assets", 1001),
        ("/gateways", 1001),
        ("/dispatches", 1001),
        ("/telemetry/a-1/history", 10_001),
        ("/telemetry/a-1/rollup", 10_001),
        ("/sites/site-a/rollup", 10_001),
    ],
)
async def test_a_limit_out_of_range_is_a_422_naming_limit(
    running: Any, site_yaml: Any, path: str, too_big: int
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    for limit in (0, -1, too_big, "many"):
        await _problem(running.http, path, {"limit": limit}, "limit")
    assert (await running.http.get(path, params={"limit": too_big - 1})).status_code == 200


async def test_a_dispatch_created_mid_walk_neither_repeats_nor_hides_older_ones(
    stocked: Any,
) -> None:
    http = stocked.http
    before = await everything(http, "/dispatches")
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    created: list[str] = []
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await http.get("/dispatches", params=params)).json()
        seen += body["items"]
        created.append((await stocked.dispatch(asset_id="a-3", power_kw=9.0))["dispatch_id"])
        if body["next"] is None:
            break
        cursor = body["next"]
    assert seen == before
    assert not set(created) & {d["dispatch_id"] for d in seen}
    now_first = (await http.get("/dispatches", params={"limit": len(created)})).json()["items"]
    assert [d["dispatch_id"] for d in now_first] == created[::-1]


async def test_the_pages_are_in_the_openapi_schema(running: Any) -> None:
    schema = (await running.http.get("/schema/openapi.json")).json()
    components = schema["components"]["schemas"]
    for name, path, item in [
        ("SitePage", "/sites", "SiteOut"),
        ("AssetPage", "/assets", "AssetOut"),
        ("GatewayPage", "/gateways", "GatewayOut"),
        ("DispatchPage", "/dispatches", "DispatchSummaryOut"),
    ]:
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"]["$ref"] == f"#/components/schemas/{name}"
        page = components[name]
        assert set(page["required"]) == {"items", "next"}
        assert page["properties"]["items"]["items"]["$ref"] == f"#/components/schemas/{item}"
        names = {p["name"] for p in schema["paths"][path]["get"]["parameters"]}
        assert {"limit", "cursor"} <= names
    assert "next" in components["HistoryOut"]["properties"]
    assert "next" in components["RollupOut"]["properties"]
