"""The live operating envelope on the headend (DESIGN.md §3a): gateways report it with
each reading; the headend validates it at intake, stores it in history and latest,
serves it on GET /telemetry and gives the dispatch planner the fresh ones
(`Ingest.envelopes`). Migration 0005 adds its columns without rewriting history."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from alembic import command

import vpp_protocol as vp
from vpp_headend.db.engine import make_engine
from vpp_headend.db.migrate import alembic_config, upgrade
from vpp_headend.db.partitions import ensure_partitions
from vpp_headend.domain import Envelope

NOW = datetime.now(UTC).replace(microsecond=0)
ENDS = NOW + timedelta(seconds=900)
_ENVELOPE = ("available_min_kw", "available_max_kw", "min_stable_kw", "setpoint_ends_at")


def _reading(
    agent: Any,
    asset_id: str,
    seq: int,
    *,
    ts: datetime = NOW,
    ends: datetime | None = None,
    **envelope: float,
) -> vp.Telemetry:
    r: vp.Telemetry = agent.telemetry(asset_id, float(seq), seq=seq, ts=ts)
    for name, value in envelope.items():
        setattr(r, name, value)
    r.setpoint_ends_at = ends
    return r


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _envelope_of(body: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(body[name] for name in _ENVELOPE)


def _db_envelopes(db_url: str, table: str) -> dict[tuple[str, int], tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(f"SELECT asset_id, seq, {', '.join(_ENVELOPE)} FROM {table}")
        return {(a, seq): tuple(rest) for a, seq, *rest in rows}


async def _connected(running: Any, agents: Any, site_yaml: Any, assets: list[str]) -> Any:
    await running.import_site(site_yaml("site-a", assets))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(assets)
    return agent


async def test_envelope_is_stored_in_history_and_latest_and_served(
    start_headend, agents, site_yaml, db_url, eventually
) -> None:
    running = await start_headend()
    agent = await _connected(running, agents, site_yaml, ["a-1", "ev-1"])
    env = {"available_min_kw": -80.0, "available_max_kw": 60.0, "min_stable_kw": 10.0}
    agent.send_batch(
        [
            _reading(agent, "a-1", 1, ts=NOW - timedelta(seconds=1)),  # no envelope yet
            _reading(agent, "a-1", 2, ends=ENDS, **env),
            # Nothing plugged in: 0 .. 0 is an envelope, not "unknown".
            _reading(agent, "ev-1", 1, available_min_kw=0.0, available_max_kw=0.0),
        ]
    )

    async def stored() -> bool:
        return len(_db_envelopes(db_url, "telemetry_latest")) == 2

    await eventually(stored, 5, "telemetry_latest never got both assets")
    latest = (await running.http.get("/telemetry/a-1")).json()
    assert latest["seq"] == 2
    assert _envelope_of(latest) == (-80.0, 60.0, 10.0, _iso(ENDS))
    ev = (await running.http.get("/telemetry/ev-1")).json()
    assert _envelope_of(ev) == (0.0, 0.0, None, None)

    history = (await running.http.get("/telemetry/a-1/history")).json()["readings"]
    assert [(r["seq"], *_envelope_of(r)) for r in history] == [
        (2, -80.0, 60.0, 10.0, _iso(ENDS)),
        (1, None, None, None, None),
    ]
    in_db = (-80.0, 60.0, 10.0, ENDS)
    assert _db_envelopes(db_url, "telemetry")[("a-1", 2)] == in_db
    assert _db_envelopes(db_url, "telemetry_latest")[("a-1", 2)] == in_db

    # A replica that holds nothing in memory answers from the database alike.
    other = await start_headend(replica="other")
    assert _envelope_of((await other.http.get("/telemetry/a-1")).json()) == (
        -80.0,
        60.0,
        10.0,
        _iso(ENDS),
    )


# seq → (what the gateway sends, what is stored)
_INVALID: dict[int, tuple[dict[str, Any], tuple[Any, ...]]] = {
    1: ({"available_min_kw": float("nan"), "available_max_kw": 50.0}, (None, 50.0, None, None)),
    2: ({"available_min_kw": -5.0, "available_max_kw": float("inf")}, (-5.0, None, None, None)),
    3: ({"available_min_kw": -1e308, "available_max_kw": 1e308}, (None, None, None, None)),
    4: ({"available_min_kw": 40.0, "available_max_kw": 30.0}, (None, None, None, None)),
    5: ({"min_stable_kw": -2.0, "available_max_kw": 30.0}, (None, 30.0, None, None)),
    6: ({"min_stable_kw": float("-inf")}, (None, None, None, None)),
    7: ({"ends": datetime(1990, 1, 1, tzinfo=UTC)}, (None, None, None, None)),
    8: ({"ends": datetime(2300, 1, 1, tzinfo=UTC)}, (None, None, None, None)),
    9: ({"available_min_kw": 30.0, "available_max_kw": 30.0}, (30.0, 30.0, None, None)),
}


async def test_invalid_envelope_values_are_dropped_and_the_reading_kept(
    running, agents, site_yaml, eventually
) -> None:
    agent = await _connected(running, agents, site_yaml, ["a-1"])
    agent.send_batch([_reading(agent, "a-1", seq, **sent) for seq, (sent, _) in _INVALID.items()])

    async def all_stored() -> bool:
        return (await running.http.get("/telemetry/a-1/history")).json()["count"] == len(_INVALID)

    await eventually(all_stored, 5, "a reading with a bad envelope value was not stored")
    history = (await running.http.get("/telemetry/a-1/history")).json()["readings"]
    got = {r["seq"]: (r["power_kw"], *_envelope_of(r)) for r in history}
    assert got == {seq: (float(seq), *stored) for seq, (_, stored) in _INVALID.items()}
    metrics = (await running.http.get("/metrics")).text
    assert 'vpp_telemetry_dropped_total{reason="invalid"}' not in metrics
    assert agent.error is None
    assert not agent.ended.is_set()


async def test_an_older_gateway_without_envelope_stores_nulls(
    running, agents, site_yaml, db_url, eventually
) -> None:
    agent = await _connected(running, agents, site_yaml, ["a-1"])
    agent.send(telemetry=agent.telemetry("a-1", 7.0, seq=1))  # sets no envelope field

    async def flushed() -> bool:
        return ("a-1", 1) in _db_envelopes(db_url, "telemetry_latest")

    await eventually(flushed, 5, "the reading never reached telemetry_latest")
    nothing = (None, None, None, None)
    assert _envelope_of((await running.http.get("/telemetry/a-1")).json()) == nothing
    assert _db_envelopes(db_url, "telemetry") == {("a-1", 1): nothing}
    assert _db_envelopes(db_url, "telemetry_latest") == {("a-1", 1): nothing}
    ingest = running.headend.ingest
    assert ingest.envelope("a-1") is None
    assert await ingest.envelopes(["a-1"], max_age_s=60) == {}


async def test_envelopes_are_fresh_ones_from_memory_or_the_database(
    start_headend, agents, site_yaml, db_url, eventually
) -> None:
    # Taken here, not at import: freshness is judged against the headend's real clock,
    # and this test may run minutes after the module was collected.
    now = datetime.now(UTC).replace(microsecond=0)
    a = await start_headend(replica="replica-a")
    b = await start_headend(replica="replica-b")
    assets = ["fresh", "stale", "plain", "silent", "moved"]
    agent = await _connected(a, agents, site_yaml, assets)
    old = now - timedelta(seconds=120)
    agent.send_batch(
        [
            _reading(agent, "fresh", 1, ts=now, available_min_kw=-10.0, available_max_kw=20.0),
            _reading(agent, "stale", 1, ts=old, available_max_kw=5.0),
            _reading(agent, "plain", 1, ts=now),  # fresh, but no envelope (an older gateway)
            _reading(agent, "moved", 1, ts=old, available_max_kw=1.0),
        ]
    )

    async def flushed() -> bool:
        return len(_db_envelopes(db_url, "telemetry_latest")) == 4

    await eventually(flushed, 5, "telemetry_latest never got the four readings")
    fresh = Envelope(-10.0, 20.0, None, now)
    # In memory on A, and from telemetry_latest on B (which holds nothing).
    for replica in (a, b):
        assert await replica.headend.ingest.envelopes(assets, max_age_s=60) == {"fresh": fresh}
    assert a.headend.ingest.envelope("stale") == Envelope(None, 5.0, None, old)  # no age check
    assert b.headend.ingest.envelope("fresh") is None  # B's memory holds nothing
    assert await a.headend.ingest.envelopes(["stale"], max_age_s=300) == {
        "stale": Envelope(None, 5.0, None, old)
    }

    # "moved" reports again through B: A's memory is stale, telemetry_latest is fresh.
    await agent.close()
    on_b = await agents(b.grpc_port, "site-a")
    await on_b.register(assets)
    on_b.send(
        telemetry=_reading(on_b, "moved", 2, ts=now, available_min_kw=-3.0, available_max_kw=3.0)
    )

    async def moved_flushed() -> bool:
        return ("moved", 2) in _db_envelopes(db_url, "telemetry_latest")

    await eventually(moved_flushed, 5, "B never flushed the moved asset's reading")
    got = await a.headend.ingest.envelopes(["moved", "fresh"], max_age_s=60)
    assert got == {"moved": Envelope(-3.0, 3.0, None, now), "fresh": fresh}


# -- migration 0005 --------------------------------------------------------------------------


def _columns(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,),
    )
    return {str(name): str(type_) for name, type_ in rows}


def _filenodes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT relname, relfilenode FROM pg_class WHERE relname IN"
        " ('telemetry_p20260101', 'telemetry_default', 'telemetry_latest')"
    )
    return {str(name): int(node) for name, node in rows}


_ADDED = {
    "available_min_kw": "double precision",
    "available_max_kw": "double precision",
    "min_stable_kw": "double precision",
    "setpoint_ends_at": "timestamp with time zone",
}


async def _ensure_partitions(url: str, today: date) -> list[str]:
    engine = make_engine(url)
    try:
        return await ensure_partitions(engine, today, 0)
    finally:
        await engine.dispose()


def test_migration_0005_adds_the_envelope_columns_in_place_and_reverts(empty_db) -> None:
    # Sync: Alembic's env.py runs its own event loop.
    upgrade(empty_db, "0004_telemetry_ts_brin")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE telemetry_p20260101 PARTITION OF telemetry"
            " FOR VALUES FROM ('2026-01-01') TO ('2026-01-02')"
        )
        conn.execute(
            "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status)"
            " SELECT 'a', i, timestamptz '2026-01-01' + i * interval '1 s', now(), 1, 1"
            " FROM generate_series(1, 1000) AS i"
        )
        conn.execute(
            "INSERT INTO telemetry_latest (asset_id, seq, ts, received_at, power_kw, status)"
            " VALUES ('a', 1000, '2026-01-01T00:16:40Z', now(), 1, 1)"
        )
        before = _filenodes(conn)
    upgrade(empty_db, "0005_telemetry_envelope")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for table in ("telemetry", "telemetry_p20260101", "telemetry_default", "telemetry_latest"):
            assert _ADDED.items() <= _columns(conn, table).items(), table
        assert _filenodes(conn) == before  # catalog only: no table was rewritten
        old = conn.execute(
            "SELECT count(*), count(available_max_kw), count(setpoint_ends_at) FROM telemetry"
        ).fetchone()
        assert old == (1000, 0, 0)
        # A reading of a day with no partition yet lands in the default partition...
        conn.execute(
            "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status,"
            " available_min_kw, available_max_kw, min_stable_kw, setpoint_ends_at)"
            " VALUES ('a', 2000, '2026-01-05T12:00:00Z', now(), 1, 1, -1, 2, 0.5,"
            " '2026-01-05T12:15:00Z')"
        )
    # ...and keeps its envelope when the headend creates that day's partition.
    assert "telemetry_p20260105" in asyncio.run(_ensure_partitions(empty_db, date(2026, 1, 5)))
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert _ADDED.items() <= _columns(conn, "telemetry_p20260105").items()
        moved = conn.execute(
            "SELECT available_min_kw, available_max_kw, min_stable_kw, setpoint_ends_at"
            " FROM telemetry_p20260105 WHERE seq = 2000"
        ).fetchone()
        assert moved == (-1.0, 2.0, 0.5, datetime(2026, 1, 5, 12, 15, tzinfo=UTC))

    command.downgrade(alembic_config(empty_db), "0004_telemetry_ts_brin")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for table in ("telemetry", "telemetry_p20260101", "telemetry_latest"):
            assert not _ADDED.keys() & _columns(conn, table).keys(), table
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (1001,)
        assert _filenodes(conn) == before
    upgrade(empty_db, "0005_telemetry_envelope")  # and up again
