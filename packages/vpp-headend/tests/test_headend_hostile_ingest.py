"""Hostile telemetry against the ingest path: a reading no column can hold is refused at
intake (its neighbours and other sites are stored), a row the database refuses is
isolated from its batch, a failure that is not about rows keeps the rows, and a stopped
writer or latest-value flusher shows on /ready and is restarted.

A reading refused at intake is the device's fault, not a protocol violation: the stream
stays open and the gateway's other readings keep flowing.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

import vpp_protocol as vp
from vpp_headend import convert
from vpp_headend.convert import Row
from vpp_protocol.upb import pb

Eventually = Callable[..., Awaitable[None]]
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=600)


def _ts(n: int) -> datetime:
    return BASE + timedelta(seconds=n)


async def _metric(running: Any, name: str, **labels: str) -> float:
    """A sample of /metrics (0.0 when absent)."""
    body = (await running.http.get("/metrics")).text
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def _seqs(running: Any, asset_id: str) -> list[int]:
    async with running.headend.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT seq FROM telemetry WHERE asset_id = :a ORDER BY seq"), {"a": asset_id}
        )
        return [r[0] for r in rows]


async def test_a_seq_past_bigint_drops_that_reading_only(
    running: Any, agents: Any, site_yaml: Any, eventually: Eventually, caplog: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    a = await agents(running.grpc_port, "site-a")
    await a.register(["a-1"])
    b = await agents(running.grpc_port, "site-b")
    await b.register(["b-1"])
    b.send(telemetry=b.telemetry("b-1", seq=1, ts=_ts(1)))
    # The proto field is uint64, the column bigint: 2**63 and 2**64-1 fit the wire only.
    a.send_batch(
        [
            a.telemetry("a-1", 1.0, seq=1, ts=_ts(1)),
            a.telemetry("a-1", 9.0, seq=2**63, ts=_ts(2)),
            a.telemetry("a-1", 2.0, seq=2, ts=_ts(2)),
        ]
    )
    b.send(telemetry=b.telemetry("b-1", seq=2, ts=_ts(2)))
    a.send_batch(
        [
            a.telemetry("a-1", 9.0, seq=2**64 - 1, ts=_ts(3)),
            a.telemetry("a-1", 3.0, seq=3, ts=_ts(3)),
        ]
    )
    for n in range(3, 11):
        b.send(telemetry=b.telemetry("b-1", seq=n, ts=_ts(n)))

    async def stored() -> bool:
        return await _seqs(running, "b-1") == list(range(1, 11)) and await _seqs(
            running, "a-1"
        ) == [1, 2, 3]

    await eventually(stored, 10.0, "site B's readings or site A's good ones were not stored")
    history = (await running.http.get("/telemetry/b-1/history")).json()
    assert history["count"] == 10
    assert await _metric(running, "vpp_telemetry_rejected_total", reason="seq_out_of_range") == 2
    assert await _metric(running, "vpp_telemetry_dropped_total", reason="invalid") == 2
    # The device's fault, not a protocol violation: site A's stream stays open and serves.
    a.send(telemetry=a.telemetry("a-1", 4.0, seq=4, ts=_ts(4)))

    async def a_goes_on() -> bool:
        return await _seqs(running, "a-1") == [1, 2, 3, 4]

    await eventually(a_goes_on, 5.0, "site A's stream no longer stores readings")
    assert not a.ended.is_set()
    # Logged once per session and reason, not once per reading.
    assert caplog.text.count("reason=seq_out_of_range") == 1


async def test_every_intake_reason_is_counted_and_logged_once(
    running: Any, agents: Any, site_yaml: Any, eventually: Eventually, caplog: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    a = await agents(running.grpc_port, "site-a")
    await a.register(["a-1"])
    now = datetime.now(UTC)
    bad = [
        vp.Telemetry(asset_id="a-1", seq=0, ts=now, power_kw=1.0),
        vp.Telemetry(asset_id="a-1", seq=1, ts=None, power_kw=1.0),
        vp.Telemetry(asset_id="a-1", seq=1, ts=datetime(2300, 1, 1, tzinfo=UTC), power_kw=1.0),
        vp.Telemetry(asset_id="a-1", seq=1, ts=now, power_kw=float("inf")),
        vp.Telemetry(asset_id="a-1", seq=1, ts=now, power_kw=2e7),
    ]
    a.send_batch(bad + bad + [a.telemetry("a-1", 5.0, seq=1, ts=_ts(1))])

    async def stored() -> bool:
        return await _seqs(running, "a-1") == [1]

    await eventually(stored, 5.0, "the good reading of the batch was not stored")
    expect = {
        "seq_out_of_range": 2,
        "ts_missing": 2,
        "ts_out_of_range": 2,
        "power_not_finite": 2,
        "power_out_of_range": 2,
    }
    for reason, count in expect.items():
        assert await _metric(running, "vpp_telemetry_rejected_total", reason=reason) == count
        assert caplog.text.count(f"reason={reason}") == 1, reason
    assert await _metric(running, "vpp_telemetry_dropped_total", reason="invalid") == 10


_NO_ENVELOPE = (None, None, None, None)


def _row(seq: int, *, setpoint_id: str | None = None) -> Row:
    return ("a-1", seq, _ts(seq), _ts(seq), float(seq), 50.0, 1, None, setpoint_id, *_NO_ENVELOPE)


async def test_rows_the_database_refuses_are_isolated_from_their_batch(
    running: Any, site_yaml: Any, eventually: Eventually, caplog: Any
) -> None:
    # Rows intake validation would have refused, put straight on the queue: the writer is
    # the last line, and must not lose the batch (or itself) to one bad row.
    await running.import_site(site_yaml("site-a", ["a-1"]))
    rows = [_row(n) for n in range(1, 31)]
    rows[4] = _row(5, setpoint_id="bad\x00id")  # PostgreSQL: invalid byte sequence 0x00
    rows[11] = ("a-1", 12, _ts(12), _ts(12), None, None, 1, None, None, *_NO_ENVELOPE)  # NOT NULL
    rows[22] = ("a-1", 2**63, _ts(23), _ts(23), 1.0, None, 1, None, None, *_NO_ENVELOPE)  # bigint
    await running.headend.ingest.put(rows)
    good = [n for n in range(1, 31) if n not in (5, 12, 23)]

    async def stored() -> bool:
        return await _seqs(running, "a-1") == good

    await eventually(stored, 10.0, "the good rows of the batch were not all stored")
    assert await _metric(running, "vpp_telemetry_rejected_total", reason="write_error") == 3
    assert await _metric(running, "vpp_telemetry_dropped_total", reason="write_error") == 3
    assert caplog.text.count("event=ingest_rows_rejected") == 1
    await running.headend.ingest.put([_row(31)])

    async def next_stored() -> bool:
        return (await _seqs(running, "a-1"))[-1:] == [31]

    await eventually(next_stored, 5.0, "the writer stopped after the bad batch")
    assert await _metric(running, "vpp_ingest_task_restarts_total", task="writer") == 0


async def test_a_failure_not_about_the_rows_keeps_them_until_it_is_fixed(
    running: Any, site_yaml: Any, eventually: Eventually
) -> None:
    # A schema change gone wrong refuses every row alike: dropping them one by one would
    # lose all telemetry. The writer keeps them (backpressure) and /ready says why.
    await running.import_site(site_yaml("site-a", ["a-1"]))
    async with running.headend.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE telemetry RENAME COLUMN seq TO seq_gone"))
    await running.headend.ingest.put([_row(n) for n in range(1, 6)])

    async def not_ready() -> bool:
        resp = await running.http.get("/ready")
        return resp.status_code == 503 and "ingest writer cannot write" in resp.json()["detail"]

    await eventually(not_ready, 5.0, "/ready did not report the failing writer")
    async with running.headend.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE telemetry RENAME COLUMN seq_gone TO seq"))

    async def stored() -> bool:
        return await _seqs(running, "a-1") == [1, 2, 3, 4, 5]

    await eventually(stored, 10.0, "the kept rows were not stored after the fix")
    assert (await running.http.get("/ready")).status_code == 200
    assert await _metric(running, "vpp_telemetry_dropped_total", reason="write_error") == 0


@pytest.mark.parametrize(
    ("name", "task"), [("ingest-writer", "writer"), ("ingest-latest", "latest")]
)
async def test_a_stopped_ingest_task_shows_on_ready_and_is_restarted(
    running: Any, agents: Any, site_yaml: Any, eventually: Eventually, name: str, task: str
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    a = await agents(running.grpc_port, "site-a")
    await a.register(["a-1"])
    # A cancellation leaking into the task (asyncio's public API, no test hook) stops it.
    victim = next(t for t in asyncio.all_tasks() if t.get_name() == name)
    victim.cancel()
    await asyncio.wait({victim})
    resp = await running.http.get("/ready")
    assert resp.status_code == 503
    assert f"ingest {task} stopped (cancelled)" in resp.json()["detail"]
    assert await _metric(running, "vpp_ingest_task_up", task=task) == 0

    async def ready() -> bool:
        return (await running.http.get("/ready")).status_code == 200

    await eventually(ready, 5.0, "the ingest task was not restarted")
    assert await _metric(running, "vpp_ingest_task_restarts_total", task=task) == 1
    assert await _metric(running, "vpp_ingest_task_up", task=task) == 1
    a.send(telemetry=a.telemetry("a-1", 7.0, seq=1, ts=_ts(1)))

    async def flowing() -> bool:
        async with running.headend.engine.connect() as conn:
            latest = await conn.execute(
                text("SELECT seq FROM telemetry_latest WHERE asset_id = 'a-1'")
            )
            return await _seqs(running, "a-1") == [1] and latest.scalar() == 1

    await eventually(flowing, 5.0, "history or latest values stopped after the restart")


_VALUES = (
    "seq, ts, power_kw, soc_pct, status, setpoint_kw, setpoint_id,"
    " available_min_kw, available_max_kw, min_stable_kw, setpoint_ends_at"
)


def _hostile_readings(n: int, seed: int) -> list[pb.Telemetry]:
    """Readings built from each field's edge values, mixed at random."""
    rng = random.Random(seed)
    seqs = [0, 1, 2, 2**31, 2**63 - 1, 2**63, 2**64 - 1]
    seconds = [0, 946_684_799, 946_684_800, 1_790_000_000, 7_258_118_399, 7_258_118_400]
    nanos = [0, 999_999_999]
    floats = [0.0, -0.0, 5e-324, 1e7, -1e7, 1.0000001e7, 1e308, float("nan"), float("inf")]
    statuses = [-(2**31), -1, 0, 1, 4, 32_767, 32_768, 2**31 - 1]
    ids = ["", "x" * 64, "x" * 65, "a\x00b", "a\nb", "a\x7fb", "é-ü", "\u2028", "\u200b"]
    out = []
    for i in range(n):
        r = pb.Telemetry(
            asset_id="a-1",
            seq=rng.choice(seqs) if rng.random() < 0.5 else i + 1,
            power_kw=rng.choice(floats),
            status=rng.choice(statuses),
            setpoint_id=rng.choice(ids),
        )
        r.ts.seconds = rng.choice(seconds)
        r.ts.nanos = rng.choice(nanos)
        if rng.random() < 0.7:
            r.soc_pct = rng.choice([*floats, 50.0, 101.0, -1.0, 101.5])
        if rng.random() < 0.7:
            r.setpoint_kw = rng.choice(floats)
        for name in ("available_min_kw", "available_max_kw", "min_stable_kw"):
            if rng.random() < 0.5:
                setattr(r, name, rng.choice(floats))
        if rng.random() < 0.5:
            r.setpoint_ends_at.seconds = rng.choice(seconds)
            r.setpoint_ends_at.nanos = rng.choice(nanos)
        out.append(r)
    return out


async def test_whatever_intake_accepts_the_database_stores(
    running: Any, site_yaml: Any, eventually: Eventually
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    received = datetime.now(UTC)
    outcomes = [convert.reading_row(r, "a-1", received) for r in _hostile_readings(3_000, 11)]
    rows = [o for o in outcomes if isinstance(o, tuple)]
    reasons = {o for o in outcomes if isinstance(o, str)}
    assert rows, "the edge values left no valid reading"
    assert reasons <= set(convert.REJECT_REASONS)
    await running.headend.ingest.put(rows)

    async def stored() -> bool:
        return await _metric(running, "vpp_telemetry_rows_stored_total") == len(rows)

    await eventually(stored, 20.0, "not every accepted reading was stored")
    assert await _metric(running, "vpp_telemetry_dropped_total", reason="write_error") == 0
    # Stored as accepted: psycopg's binary smallint silently wraps 40000 to -25536, so a
    # value that merely "went in" is not enough.
    async with running.headend.engine.connect() as conn:
        stored_rows = (await conn.execute(text(f"SELECT {_VALUES} FROM telemetry"))).all()
    assert Counter(map(tuple, stored_rows)) == Counter(r[1:3] + r[4:] for r in rows)
