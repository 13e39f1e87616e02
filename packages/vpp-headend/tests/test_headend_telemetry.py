"""Telemetry ingest: duplicates dropped, gaps counted, latest and history, watermarks,
and a restart of the headend on the same database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import vpp_protocol as vp
from vpp_headend.row_queue import RowQueue

# Readings are stamped on a fixed grid (a second apart, in the recent past).
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=100)


def _ts(n: int) -> datetime:
    return BASE + timedelta(seconds=n)


async def _one_loop_turn() -> None:
    """Let every task that is ready run up to its next wait: asyncio runs ready tasks in
    order, so a task created before this call has taken its first step when it returns."""
    await asyncio.sleep(0)


async def test_duplicates_dropped_gaps_counted_latest_and_history(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    agent = await agents(running.grpc_port, "site-a")
    result = await agent.register(["a-1", "a-2"])
    assert dict(result.telemetry_watermarks) == {"a-1": 0, "a-2": 0}

    agent.send_batch([agent.telemetry("a-1", float(n), seq=n, ts=_ts(n)) for n in range(1, 6)])
    # 3..5 again (a replay), then a jump to 9 (gap of 3), then 7 late (fills one).
    agent.send_batch([agent.telemetry("a-1", float(n), seq=n, ts=_ts(n)) for n in (3, 4, 5)])
    agent.send(telemetry=agent.telemetry("a-1", 9.0, seq=9, ts=_ts(9)))
    agent.send(telemetry=agent.telemetry("a-1", 7.0, seq=7, ts=_ts(7)))
    agent.send(telemetry=agent.telemetry("a-1", 9.0, seq=9, ts=_ts(9)))
    agent.send(telemetry=agent.telemetry("a-2", 2.0, seq=1))

    async def stored() -> bool:
        hist = (await running.http.get("/telemetry/a-1/history")).json()
        return hist["count"] == 7

    await eventually(stored, 5, "history never reached 7 readings")
    hist = (await running.http.get("/telemetry/a-1/history")).json()
    assert [r["seq"] for r in hist["readings"]] == [9, 7, 5, 4, 3, 2, 1]  # newest first
    limited = (await running.http.get("/telemetry/a-1/history", params={"limit": 2})).json()
    assert [r["seq"] for r in limited["readings"]] == [9, 7]
    window = (
        await running.http.get(
            "/telemetry/a-1/history",
            params={"start": _ts(3).isoformat(), "end": _ts(6).isoformat()},
        )
    ).json()
    assert [r["seq"] for r in window["readings"]] == [5, 4, 3]

    latest = (await running.http.get("/telemetry/a-1")).json()
    assert latest["seq"] == 9
    assert latest["power_kw"] == 9.0
    assert latest["site_id"] == "site-a"
    assert latest["status"] == "ok"
    assert latest["soc_pct"] == 50.0
    assert latest["lag_s"] > 85

    metrics = (await running.http.get("/metrics")).text
    assert "vpp_telemetry_duplicates_total 4.0" in metrics
    assert "vpp_telemetry_gaps_total 3.0" in metrics
    assert 'vpp_site_last_reading_timestamp_seconds{site_id="site-a"}' in metrics
    assert "vpp_telemetry_lag_seconds_count 8.0" in metrics  # each stored reading, once
    assert "vpp_telemetry_rows_stored_total 8.0" in metrics

    await agent.close()
    again = await agents(running.grpc_port, "site-a")
    result = await again.register(["a-1", "a-2"])
    assert dict(result.telemetry_watermarks) == {"a-1": 9, "a-2": 1}


async def test_invalid_readings_are_dropped_and_counted(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    agent.send_batch(
        [
            vp.Telemetry(asset_id="a-1", seq=0, ts=datetime.now(UTC), power_kw=1.0),  # seq 0
            vp.Telemetry(asset_id="a-1", seq=1, ts=None, power_kw=1.0),  # no time
            vp.Telemetry(asset_id="a-1", seq=2, ts=datetime.now(UTC), power_kw=float("nan")),
            vp.Telemetry(asset_id="", seq=3, ts=datetime.now(UTC), power_kw=1.0),  # no asset
            agent.telemetry("a-1", seq=4),
        ]
    )

    async def valid_one_stored() -> bool:  # the last of the frame: all of it was handled
        return (await running.http.get("/telemetry/a-1/history")).json()["count"] >= 1

    await eventually(valid_one_stored, 5, "the valid reading was never stored")
    hist = (await running.http.get("/telemetry/a-1/history")).json()
    assert [r["seq"] for r in hist["readings"]] == [4]
    metrics = (await running.http.get("/metrics")).text
    assert 'vpp_telemetry_dropped_total{reason="invalid"} 3.0' in metrics
    assert 'vpp_telemetry_dropped_total{reason="no_asset"} 1.0' in metrics


async def test_restart_keeps_pending_dispatches_and_history(
    start_headend, agents, site_yaml, eventually
) -> None:
    first = await start_headend()
    await first.import_site(site_yaml("site-a", ["a-1"]))
    await first.import_site(site_yaml("site-b", ["b-1"]))
    pending = await first.dispatch(asset_id="b-1", power_kw=6.0, ttl_s=60)
    agent = await agents(first.grpc_port, "site-a")
    await agent.register(["a-1"])
    agent.send_batch([agent.telemetry("a-1", float(n), seq=n, ts=_ts(n)) for n in range(1, 21)])

    async def stored() -> bool:
        return (await first.http.get("/telemetry/a-1/history")).json()["count"] == 20

    await eventually(stored, 5, "history not stored before the restart")
    await first.stop()
    await agent.wait_ended()

    second = await start_headend()
    state = await second.dispatch_state(pending["dispatch_id"])
    assert state["state"] == "pending"
    hist = (await second.http.get("/telemetry/a-1/history", params={"limit": 100})).json()
    assert hist["count"] == 20
    latest = (await second.http.get("/telemetry/a-1")).json()
    assert latest["seq"] == 20
    gateways = {g["site_id"]: g for g in (await second.http.get("/gateways")).json()["items"]}
    assert gateways["site-a"]["connected"] is False
    assert gateways["site-a"]["disconnect_reason"] == "server_shutdown"

    back = await agents(second.grpc_port, "site-a")
    result = await back.register(["a-1"])
    assert dict(result.telemetry_watermarks) == {"a-1": 20}
    # A replay of already stored readings is dropped; new ones are stored.
    back.send_batch([back.telemetry("a-1", seq=n, ts=_ts(n)) for n in range(15, 24)])
    b = await agents(second.grpc_port, "site-b")
    await b.register(["b-1"])
    sp = await b.setpoint()
    assert sp.setpoint_id == pending["dispatch_id"]

    async def replayed() -> bool:
        return (await second.http.get("/telemetry/a-1/history")).json()["count"] == 23

    await eventually(replayed, 5, "replay after restart was not deduplicated to 23 rows")


async def test_row_queue_blocks_producers_when_full() -> None:
    queue = RowQueue(max_rows=3)
    row = ("a", 1, datetime.now(UTC), datetime.now(UTC), 1.0, None, 1, None, None)
    await queue.put([row, row])
    blocked = asyncio.create_task(queue.put([row, row]))
    await _one_loop_turn()
    assert not blocked.done()  # backpressure: the producer waits, nothing is dropped
    assert queue.depth == 2
    assert len(await queue.get(10)) == 2
    await asyncio.wait_for(blocked, 1)
    assert queue.depth == 2
    huge = asyncio.create_task(queue.put([row] * 10))  # bigger than the queue: waits for empty
    await _one_loop_turn()
    assert not huge.done()
    assert len(await queue.get(1)) == 1
    assert len(await queue.get(10)) == 1
    await asyncio.wait_for(huge, 1)
    assert len(await queue.get(4)) == 4
    await queue.close()
    assert len(await queue.get(100)) == 6
    assert await queue.get(100) == []


async def test_row_queue_many_waiting_producers_all_get_through() -> None:
    """Thousands of streams waiting on a full queue: every chunk arrives, in order per
    producer, also when some waiting producers are cancelled (a stream that went away)."""
    queue = RowQueue(max_rows=50)
    now = datetime.now(UTC)

    def chunk(p: int, i: int) -> list[Any]:
        return [(f"p{p}", i, now, now, 1.0, None, 1, None, None)] * 5

    async def producer(p: int) -> None:
        for i in range(4):
            await queue.put(chunk(p, i))

    producers = [asyncio.create_task(producer(p)) for p in range(300)]
    await _one_loop_turn()  # each has put what fitted and waits for room
    cancelled = producers[100:110]
    for t in cancelled:
        t.cancel()
    got: list[Any] = []
    while len(got) < 290 * 4 * 5:
        batch = await asyncio.wait_for(queue.get(37), 2)
        got += batch
        await asyncio.sleep(0)
    await asyncio.gather(*producers, return_exceptions=True)
    assert queue.depth == 0
    seqs: dict[str, list[int]] = {}
    for row in got:
        seqs.setdefault(row[0], []).append(row[1])
    assert all(s == sorted(s) for s in seqs.values())
    assert sum(len(s) for s in seqs.values()) == len(got)


async def test_backpressure_holds_the_stream_not_the_data(
    start_headend, agents, site_yaml, eventually
) -> None:
    h = await start_headend(ingest_queue_rows=20, ingest_batch_rows=10)
    await h.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(h.grpc_port, "site-a")
    await agent.register(["a-1"])
    for start in range(1, 2001, 100):
        agent.send_batch(
            [agent.telemetry("a-1", seq=n, ts=_ts(0)) for n in range(start, start + 100)]
        )

    async def all_stored() -> bool:
        metrics = (await h.http.get("/metrics")).text
        return "vpp_telemetry_rows_stored_total 2000.0" in metrics

    await eventually(all_stored, 10, "not every reading was stored")
    assert "vpp_telemetry_dropped_total{reason=" not in (await h.http.get("/metrics")).text


async def test_latest_is_read_from_history_when_this_process_has_none(
    running, site_yaml, db_url
) -> None:
    """A replica that does not hold the gateway (nothing in memory, telemetry_latest not
    flushed yet) still answers GET /telemetry with the newest stored reading."""
    import psycopg

    await running.import_site(site_yaml("site-a", ["a-1"]))
    when = datetime.now(UTC) - timedelta(seconds=3)
    with psycopg.connect(db_url) as conn:  # written by "another replica"
        conn.execute(
            "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, soc_pct, status)"
            " VALUES ('a-1', 41, %s, %s, 12.5, 61.0, 1), ('a-1', 42, %s, %s, 13.5, 62.0, 1)",
            (when - timedelta(seconds=1), when, when, when),
        )
    latest = (await running.http.get("/telemetry/a-1")).json()
    assert (latest["seq"], latest["power_kw"], latest["soc_pct"]) == (42, 13.5, 62.0)


async def test_latest_values_are_flushed_in_chunks_and_never_move_back(
    start_headend, agents, site_yaml, db_url, eventually
) -> None:
    """telemetry_latest (what a restarted or other replica starts from) gets the newest
    reading of every asset, over several flush transactions, and a flush never replaces
    a newer row written by someone else (another replica) with an older one."""
    import psycopg

    running = await start_headend(latest_flush_chunk_rows=2)  # 5 assets → 3 transactions
    assets = [f"a-{i}" for i in range(1, 6)]
    await running.import_site(site_yaml("site-a", assets))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(assets)
    # After the Register (its watermark for a-5 is 0, so seq 1..3 are accepted here),
    # "another replica" stores a newer a-5 in telemetry_latest.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO telemetry_latest (asset_id, seq, ts, received_at, power_kw, status)"
            " VALUES ('a-5', 50, %s, %s, 55.0, 1)",
            (_ts(50), _ts(50)),
        )
    agent.send_batch(
        [
            agent.telemetry(a, float(10 * i + n), seq=n, ts=_ts(n))
            for n in (1, 2, 3)
            for i, a in enumerate(assets, start=1)
        ]
    )

    def stored() -> dict[str, tuple[int, float]]:
        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT asset_id, seq, power_kw FROM telemetry_latest").fetchall()
        return {a: (seq, kw) for a, seq, kw in rows}

    async def flushed() -> bool:
        return all(stored().get(a, (0, 0.0))[0] == 3 for a in assets[:4])

    await eventually(flushed, 5, "telemetry_latest never got seq 3 of a-1..a-4")
    assert stored() == {
        "a-1": (3, 13.0),
        "a-2": (3, 23.0),
        "a-3": (3, 33.0),
        "a-4": (3, 43.0),
        "a-5": (50, 55.0),  # the newer row stays
    }


async def test_a_stream_held_by_backpressure_is_not_a_silent_gateway(
    start_headend, agents, site_yaml, db_url, eventually
) -> None:
    """While the database stalls the writer and the full queue holds a stream, the
    gateway's heartbeats wait in our buffers: the session must not be closed for
    silence (3 intervals = 1.5 s here), and everything is stored once the stall ends.
    The headend's own heartbeats still reach the gateway: each is a turn of the sender
    that checks for silence, so five of them while the stream is held span the limit."""
    import psycopg

    h = await start_headend(ingest_queue_rows=20, ingest_batch_rows=10)
    await h.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(h.grpc_port, "site-a")
    await agent.register(["a-1"])
    session = h.headend.sessions.for_site("site-a")
    assert session is not None
    async with await psycopg.AsyncConnection.connect(db_url) as blocker:
        await blocker.execute("LOCK TABLE telemetry IN SHARE MODE")  # COPY waits
        for start in range(1, 501, 50):
            agent.send_batch(
                [agent.telemetry("a-1", seq=n, ts=_ts(0)) for n in range(start, start + 50)]
            )

        async def held() -> bool:
            return session.backpressured

        await eventually(held, 5, "the full queue never held the stream")
        while not agent.incoming.empty():  # what was sent before the stream was held
            agent.incoming.get_nowait()
        for _ in range(5):
            await agent.recv("heartbeat", within=2.0)
        assert session.backpressured
        assert not agent.ended.is_set()
        await blocker.rollback()

    async def all_stored() -> bool:
        metrics = (await h.http.get("/metrics")).text
        return "vpp_telemetry_rows_stored_total 500.0" in metrics

    await eventually(all_stored, 10, "not every reading was stored")
    assert not agent.ended.is_set()
    assert h.headend.sessions.for_site("site-a") is session
    assert (
        'vpp_gateway_disconnects_total{reason="heartbeat_timeout"}'
        not in (await h.http.get("/metrics")).text
    )


async def test_latest_value_is_overwritten_in_place(running, agents, site_yaml, eventually) -> None:
    # A new object kept per reading would live until the asset's next reading and sit in
    # the young GC generation: every young collection would walk all of them (50-150 ms
    # pauses at 10,000 readings/s). The newest reading overwrites the asset's one slot.
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    latest = running.headend.ingest._latest

    async def stored(seq: int) -> bool:
        slot = latest.get("a-1")
        return slot is not None and slot[1] == seq

    agent.send(telemetry=agent.telemetry("a-1", 1.0, seq=1, ts=_ts(1)))
    await eventually(lambda: stored(1), 5, "first reading not stored")
    slot = latest["a-1"]
    agent.send_batch([agent.telemetry("a-1", float(n), seq=n, ts=_ts(n)) for n in (2, 3, 4)])
    await eventually(lambda: stored(4), 5, "later readings not stored")
    assert latest["a-1"] is slot
    assert (await running.http.get("/telemetry/a-1")).json()["power_kw"] == 4.0
