"""One-minute rollups: the numbers of a minute, late readings, idempotence, the lock,
the REST endpoint, retention, the CLI and the headend's background job."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from vpp_headend.cli import app
from vpp_headend.db.rollup_repo import ROLLUP
from vpp_headend.rollup import (
    LOCK_KEY,
    Rolled,
    Skipped,
    minute_floor,
    rollup,
    summarize_new_ranges,
)

# A closed minute in the recent past (today's and yesterday's partitions exist).
M = minute_floor(datetime.now(UTC)) - timedelta(minutes=10)
_INSERT = (
    "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, soc_pct, status) "
    "VALUES (%s, %s, %s, now(), %s, %s, 1)"
)


def _at(minute: int, second: float) -> datetime:
    return M + timedelta(minutes=minute, seconds=second)


async def _insert(
    engine: AsyncEngine, *rows: tuple[str, int, datetime, float, float | None]
) -> None:
    async with engine.begin() as conn:
        for asset_id, seq, ts, power_kw, soc_pct in rows:
            await conn.execute(
                text(
                    "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, soc_pct, "
                    "status) VALUES (:a, :s, :ts, now(), :p, :soc, 1)"
                ),
                {"a": asset_id, "s": seq, "ts": ts, "p": power_kw, "soc": soc_pct},
            )


async def _minutes(engine: AsyncEngine, asset_id: str = "a-1") -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT bucket, n, min_power_kw, avg_power_kw, max_power_kw, last_soc_pct "
                "FROM telemetry_1m WHERE asset_id = :a ORDER BY bucket"
            ),
            {"a": asset_id},
        )
        return [tuple(r) for r in rows]


@pytest.mark.parametrize("paced", [False, True], ids=["one_statement", "paced"])
async def test_a_minute_is_min_avg_max_count_and_last_soc(running: Any, paced: bool) -> None:
    engine = running.headend.engine
    await _insert(
        engine,
        ("a-1", 1, _at(0, 5), 1.0, 40.0),
        ("a-1", 2, _at(0, 50), 6.0, None),  # newest of the minute, but no SoC
        ("a-1", 3, _at(0, 20), 2.0, 45.0),  # last SoC by ts, though stored last
        ("a-1", 4, _at(1, 0), -3.0, 50.0),  # the next minute starts at :00
        ("a-2", 2, _at(0, 30), 9.0, 72.0),  # same ts as seq 1: the higher seq is last
        ("a-2", 1, _at(0, 30), 9.0, 70.0),
        ("a-1", 5, _at(2, 10), 7.0, 55.0),  # in the minute that is still open
    )
    done = await rollup(engine, _at(2, 30), paced=paced)
    assert isinstance(done, Rolled)
    assert done.end == _at(2, 0)
    assert done.rows == 3
    assert await _minutes(engine) == [
        (_at(0, 0), 3, 1.0, 3.0, 6.0, 45.0),
        (_at(1, 0), 1, -3.0, -3.0, -3.0, 50.0),
    ]
    assert await _minutes(engine, "a-2") == [(_at(0, 0), 2, 9.0, 9.0, 9.0, 72.0)]


async def test_the_paced_job_rests_between_minutes_as_long_as_each_ran(running: Any) -> None:
    engine = running.headend.engine
    await _insert(engine, *(("a-1", m + 1, _at(m, 5), 1.0, 40.0) for m in range(4)))
    started: dict[int, float] = {}  # the headend's own tasks use the engine too
    spans: list[tuple[float, float]] = []

    def before(conn: Any, cursor: Any, *_: Any) -> None:
        started[id(cursor)] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        began = started.pop(id(cursor), None)
        if began is not None and statement.lstrip().startswith("INSERT INTO telemetry_1m"):
            spans.append((began, time.perf_counter()))

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", before)
    event.listen(sync, "after_cursor_execute", after)
    try:
        done = await rollup(engine, _at(4, 30), since=_at(0, 0), paced=True)
    finally:
        event.remove(sync, "before_cursor_execute", before)
        event.remove(sync, "after_cursor_execute", after)
    assert isinstance(done, Rolled)
    assert done.rows == 4
    assert len(spans) == 4  # one statement per minute
    for (start, end), (next_start, _) in itertools.pairwise(spans):
        assert next_start - end >= (end - start) * 0.9  # rested as long as it ran


async def test_a_late_reading_re_rolls_its_minute_and_reruns_change_nothing(running: Any) -> None:
    engine = running.headend.engine
    await _insert(engine, ("a-1", 1, _at(0, 5), 1.0, 40.0), ("a-1", 2, _at(1, 5), 2.0, 41.0))
    await rollup(engine, _at(2, 1))
    first = await _minutes(engine)
    again = await rollup(engine, _at(2, 1))
    assert isinstance(again, Rolled)
    assert again.rows == 0
    assert await _minutes(engine) == first

    # Arrives after minute 0 was rolled up, within the overlap (3 minutes by default).
    await _insert(engine, ("a-1", 3, _at(0, 55), 10.0, 90.0))
    late = await rollup(engine, _at(3, 1))
    assert isinstance(late, Rolled)
    assert late.rows == 1
    assert (await _minutes(engine))[0] == (_at(0, 0), 2, 1.0, 5.5, 10.0, 90.0)
    await rollup(engine, _at(3, 1))
    assert (await _minutes(engine))[0] == (_at(0, 0), 2, 1.0, 5.5, 10.0, 90.0)


async def test_a_second_replica_skips_while_one_holds_the_lock(running: Any) -> None:
    engine = running.headend.engine
    await _insert(engine, ("a-1", 1, _at(0, 5), 1.0, 40.0))
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        assert await rollup(engine, _at(2, 0)) == Skipped("locked")
    results = await asyncio.gather(*(rollup(engine, _at(2, 0)) for _ in range(4)))
    assert any(isinstance(r, Rolled) for r in results)
    assert await _minutes(engine) == [(_at(0, 0), 1, 1.0, 1.0, 1.0, 40.0)]


def _rows_examined(plan: dict[str, Any]) -> int:
    """Rows the scans of a plan node tree read (returned plus filtered out)."""
    own = 0
    if "Scan" in plan["Node Type"] and plan.get("Relation Name", "").startswith("telemetry"):
        own = (
            plan["Actual Rows"] * plan.get("Actual Loops", 1)
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
    return own + sum(_rows_examined(p) for p in plan.get("Plans", []))


async def test_the_rollup_reads_its_window_not_the_whole_partition(running: Any) -> None:
    # A day partition holds every reading of the day; the job rolls a few minutes of it
    # every minute. Without an index on ts alone it scanned the whole partition each time.
    engine = running.headend.engine
    day = datetime(2020, 1, 1, tzinfo=UTC)  # one partition (the default) for all of it
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status)"
                " SELECT 'a-' || (i % 1000), i, :day + i * interval '50 ms', now(), 1.0, 1"
                " FROM generate_series(1, 200000) AS i"
            ),
            {"day": day},
        )
        await conn.execute(text("ANALYZE telemetry"))
    # The job summarizes the ranges filled since its last run before it rolls (no
    # autovacuum has run here: without this every range would be read).
    assert await summarize_new_ranges(engine) > 0
    assert await summarize_new_ranges(engine) == 0  # nothing new since
    start = day + timedelta(hours=3)  # past the bulk (2.8 h of it): one row in the window
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status)"
                " VALUES ('w-1', 1, :ts, now(), 2.0, 1)"
            ),
            {"ts": start + timedelta(seconds=5)},
        )
    async with engine.connect() as conn:
        explain = text("EXPLAIN (ANALYZE, FORMAT JSON) " + ROLLUP.text)
        plan = (
            await conn.execute(explain, {"start": start, "end": start + timedelta(minutes=3)})
        ).scalar_one()[0]["Plan"]
        await conn.rollback()
    assert _rows_examined(plan) < 20_000  # of 200,001 rows in the partition


async def test_summarizing_leaves_a_table_that_vacuum_holds_alone(running: Any) -> None:
    engine = running.headend.engine
    async with engine.begin() as conn:  # more than one block range (128 pages) of rows
        await conn.execute(
            text(
                "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status)"
                " SELECT 'a-1', i, :m + i * interval '1 ms', now(), 1.0, 1"
                " FROM generate_series(1, 30000) AS i"
            ),
            {"m": _at(0, 0)},
        )
    url = running.headend.settings.database_url
    async with await psycopg.AsyncConnection.connect(url) as vacuum_like:
        # What a VACUUM holds on the partition; waiting for it would get autovacuum
        # cancelled (after deadlock_timeout), so the job skips the table this round.
        await vacuum_like.execute("LOCK TABLE telemetry_default IN SHARE UPDATE EXCLUSIVE MODE")
        for partition in await _partitions_holding(engine, _at(0, 1)):
            await vacuum_like.execute(f'LOCK TABLE "{partition}" IN SHARE UPDATE EXCLUSIVE MODE')
        started = time.perf_counter()
        async with asyncio.timeout(5):  # a job that waited for the lock would hang here
            assert await summarize_new_ranges(engine) == 0
        assert time.perf_counter() - started < 1.0  # deadlock_timeout: 1 s
    assert await summarize_new_ranges(engine) >= 1  # released: summarized now


async def _partitions_holding(engine: AsyncEngine, ts: datetime) -> list[str]:
    async with engine.connect() as conn:
        row = await conn.execute(
            text("SELECT tableoid::regclass::text FROM telemetry WHERE ts = :ts LIMIT 1"),
            {"ts": ts},
        )
        return [str(r[0]) for r in row]


async def test_rest_rollup_newest_first_with_limit_and_range(running: Any, site_yaml: Any) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    engine = running.headend.engine
    await _insert(engine, *(("a-1", n + 1, _at(n, 10), float(n), 50.0 + n) for n in range(4)))
    await rollup(engine, _at(5, 0))

    body = (await running.http.get("/telemetry/a-1/rollup", params={"limit": 2})).json()
    assert body["count"] == 2
    assert [m["max_power_kw"] for m in body["minutes"]] == [3.0, 2.0]
    assert body["minutes"][0] == {
        "minute": _at(3, 0).isoformat().replace("+00:00", "Z"),
        "count": 1,
        "min_power_kw": 3.0,
        "avg_power_kw": 3.0,
        "max_power_kw": 3.0,
        "last_soc_pct": 53.0,
    }
    ranged = await running.http.get(
        "/telemetry/a-1/rollup",
        params={"start": _at(1, 0).isoformat(), "end": _at(3, 0).isoformat()},
    )
    assert [m["max_power_kw"] for m in ranged.json()["minutes"]] == [2.0, 1.0]
    assert (await running.http.get("/telemetry/nope/rollup")).status_code == 404
    assert (await running.http.get("/telemetry/a-1/rollup", params={"limit": 0})).status_code == 422
    schema = (await running.http.get("/schema/openapi.json")).json()
    assert "/telemetry/{asset_id}/rollup" in schema["paths"]
    assert "RollupOut" in schema["components"]["schemas"]


async def test_background_job_rolls_up_without_a_call(
    start_headend: Any, agents: Any, site_yaml: Any, eventually: Any
) -> None:
    running = await start_headend(rollup_interval_s=0.1)
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    closed = minute_floor(datetime.now(UTC)) - timedelta(minutes=1)
    agent.send_batch(
        [agent.telemetry("a-1", p, ts=closed + timedelta(seconds=s)) for s, p in ((1, 4), (2, 8))]
    )

    async def rolled() -> bool:
        return bool(await _minutes(running.headend.engine))

    await eventually(rolled, 5, "the background job never rolled the minute up")
    assert await _minutes(running.headend.engine) == [(closed, 2, 4.0, 6.0, 8.0, 50.0)]


def test_cli_rollup_since_rebuilds_beyond_the_window_and_prune_deletes_old(db_url: str) -> None:
    now = datetime.now(UTC)
    old = minute_floor(now) - timedelta(hours=5)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(_INSERT, ("a-1", 1, old + timedelta(seconds=3), 2.0, 20.0))
        conn.execute(_INSERT, ("a-1", 2, old + timedelta(seconds=9), 4.0, None))
        conn.execute(
            "INSERT INTO telemetry_1m VALUES ('a-1', %s, 1, 1, 1, 1, NULL), "
            "('a-9', %s, 1, 1, 1, 1, NULL)",
            (minute_floor(now) - timedelta(days=401), minute_floor(now) - timedelta(days=399)),
        )
    runner = CliRunner()
    args = ["--database-url", db_url]
    plain = runner.invoke(app, ["db", "rollup", *args])
    assert plain.exit_code == 0, plain.output
    assert "0 minute row(s)" in plain.output  # the background window is the last 2 hours

    since = (old - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
    rebuilt = runner.invoke(app, ["db", "rollup", "--since", since, *args])
    assert rebuilt.exit_code == 0, rebuilt.output
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT n, avg_power_kw, last_soc_pct FROM telemetry_1m WHERE bucket = %s", (old,)
        ).fetchone()
    assert row == (2, 3.0, 20.0)

    pruned = runner.invoke(app, ["db", "prune", *args])
    assert pruned.exit_code == 0, pruned.output
    assert "deleted 1 rollup minute(s)" in pruned.output
    with psycopg.connect(db_url) as conn:
        left = conn.execute("SELECT asset_id FROM telemetry_1m ORDER BY asset_id").fetchall()
    assert left == [("a-1",), ("a-9",)]


@pytest.mark.parametrize("days", ["0", "x"])
def test_prune_refuses_a_bad_rollup_retention(db_url: str, days: str) -> None:
    res = CliRunner().invoke(app, ["db", "prune", "--rollup-days", days, "--database-url", db_url])
    assert res.exit_code == 2
