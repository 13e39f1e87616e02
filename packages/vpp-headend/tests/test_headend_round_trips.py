"""Dispatch REST calls in few database round trips: under load each round trip waits a turn
of a busy event loop (docs/scaling.md), so creating a dispatch writes it in one statement
and reading one (or a list) is one statement — with everything still in the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from sqlalchemy import event

import vpp_protocol as vp
from vpp_headend.notify import DISPATCH_CHANNEL


@asynccontextmanager
async def notifications(running: Any) -> AsyncIterator[list[str]]:
    """Payloads NOTIFYed on the dispatch channel while the block runs."""
    heard: list[str] = []
    url = running.headend.settings.database_url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {DISPATCH_CHANNEL}")
        yield heard
        await conn.execute("SELECT 1")  # a round trip: anything committed has arrived
        async for note in conn.notifies(timeout=0.5):
            heard.append(note.payload)


@contextmanager
def statements(running: Any) -> Iterator[list[str]]:
    """SQL statements the headend sends while the block runs (any connection of its pool)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        seen.append(" ".join(sql.split()))

    engine = running.headend.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def about_dispatches(sql: list[str]) -> list[str]:
    return [s for s in sql if "dispatch" in s]


async def test_a_dispatch_is_created_in_one_statement_and_read_in_one(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("s1", ["s1-a"], groups=["north"], capacity_kw=100))
    await running.import_site(site_yaml("s2", ["s2-a"], groups=["north"], capacity_kw=100))

    # Neither site is connected: each share waits, pending, for its gateway.
    async with notifications(running) as heard:
        with statements(running) as sql:
            body = await running.dispatch(group_id="north", power_kw=80.0)
    writes = [s for s in sql if s.startswith(("INSERT", "WITH"))]
    assert len(writes) == 1, writes
    for table in ("dispatches", "dispatch_deliveries", "dispatch_events"):
        assert f"INSERT INTO {table} " in writes[0]
    assert heard == [body["dispatch_id"]]  # pending: the replica holding a stream delivers
    assert {d["site_id"]: (d["state"], d["power_kw"]) for d in body["deliveries"]} == {
        "s1": ("pending", 40.0),
        "s2": ("pending", 40.0),
    }

    agent = await agents(running.grpc_port, "s1")
    await agent.register(["s1-a"])
    sp = await agent.setpoint()  # delivered when s1 connects
    assert sp.setpoint_id == body["dispatch_id"]

    with statements(running) as sql:
        got = await running.dispatch_state(body["dispatch_id"])
    assert len(about_dispatches(sql)) == 1, sql
    assert {d["site_id"]: d["state"] for d in got["deliveries"]} == {
        "s1": "sent",
        "s2": "pending",
    }
    assert [(e["state"], e["scope"], e.get("scope_id")) for e in got["events"]] == [
        ("pending", "dispatch", None),
        ("pending", "site", "s1"),
        ("pending", "site", "s2"),
        ("sent", "site", "s1"),
    ]  # the dispatch as a whole is still pending: s2 has not got its share

    with statements(running) as sql:
        listed = await running.http.get("/dispatches", params={"site_id": "s2"})
    assert listed.status_code == 200
    assert len(about_dispatches(sql)) == 1, sql
    [only] = listed.json()
    assert only["dispatch_id"] == body["dispatch_id"]
    assert {d["site_id"] for d in only["deliveries"]} == {"s1", "s2"}


async def test_an_asset_dispatch_stores_its_target_in_the_same_statement(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("s1", ["s1-a"]))
    agent = await agents(running.grpc_port, "s1")
    await agent.register(["s1-a"])
    async with notifications(running) as heard:
        with statements(running) as sql:
            body = await running.dispatch(asset_id="s1-a", power_kw=12.5)
    writes = [s for s in sql if s.startswith(("INSERT", "WITH"))]
    assert len(writes) == 1, writes
    assert "INSERT INTO dispatch_targets " in writes[0]
    assert heard == []  # sent on this replica's stream: nothing to announce
    sp = await agent.setpoint()
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, allocations={"s1-a": 12.5})
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert [(a["asset_id"], a["allocation_kw"], a["state"]) for a in done["allocations"]] == [
        ("s1-a", 12.5, "applied")
    ]
