"""Dispatch REST calls in few database round trips: under load each round trip waits a turn
of a busy event loop (docs/scaling.md), so creating a dispatch writes it in one statement
and reading one (or a list) is one statement — with everything still in the answer.

A POST /dispatch on the hot path (authenticated, its gateway connected here) is at most
three round trips, counted on the wire, and keeps every guarantee of the transaction it
replaced: the epoch fence, superseding older pending dispatches, Idempotency-Key races,
token revocation, registry changes (docs/decisions.md, "POST /dispatch in few round
trips")."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import event, func, select

import vpp_protocol as vp
from vpp_headend.auth import TokenCache, hash_token, new_token
from vpp_headend.db import dispatch_create as repo
from vpp_headend.db import models as m
from vpp_headend.db import security_repo
from vpp_headend.db.engine import reader
from vpp_headend.db.notify_repo import DISPATCH_CHANNEL
from vpp_headend.dispatch import create as creating
from vpp_headend.dispatch.planning import NOT_DISPATCHABLE_KINDS, connected_plan
from vpp_headend.domain import ASSET_KINDS, Asset, DispatchRequest
from vpp_headend.errors import ConflictError


@asynccontextmanager
async def notifications(running: Any) -> AsyncIterator[list[str]]:
    """Payloads NOTIFYed on the dispatch channel while the block runs."""
    heard: list[str] = []
    url = running.headend.settings.database_url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {DISPATCH_CHANNEL}")
        yield heard
        # Barrier: a round trip. The server sends what was committed before it ahead of
        # its answer, so it all waits in psycopg's backlog now: no wait for stragglers.
        await conn.execute("SELECT 1")
        async for note in conn.notifies(timeout=0):
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
    [only] = listed.json()["items"]
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


# -- round trips on the wire ----------------------------------------------------------------


@dataclass
class RoundTrips:
    """What the traced connections sent: one entry per round trip (the SQL of its
    Query or Parse message; ``(prepared)`` for a statement psycopg prepared earlier)."""

    sent: list[str] = field(default_factory=list)
    pings: int = 0  # the pool's check of a connection idle for a while (engine.py)

    @property
    def count(self) -> int:
        return len(self.sent)


@contextmanager
def round_trips(running: Any) -> Iterator[RoundTrips]:
    """Round trips to PostgreSQL of the REST requests made while the block runs, as libpq
    traces them: one per ReadyForQuery (BEGIN and COMMIT are round trips of their own,
    which SQLAlchemy's cursor events do not see). The test client runs the app in this
    test's task (`headend_http.app_client`), so only connections that task checks out
    are traced; the headend's background tasks are tasks of their own."""
    found = RoundTrips()
    fd, path = tempfile.mkstemp(prefix="vpp-trace-")
    here = asyncio.current_task()
    traced: set[int] = set()

    def on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if asyncio.current_task() is not here:
            return
        pgconn = dbapi_conn.driver_connection.pgconn
        pgconn.trace(fd)
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        traced.add(id(dbapi_conn))

    def on_checkin(dbapi_conn: Any, record: Any) -> None:
        if id(dbapi_conn) in traced:
            traced.discard(id(dbapi_conn))
            dbapi_conn.driver_connection.pgconn.untrace()

    engine = running.headend.engine.sync_engine
    # First, so that the idle-connection ping (a checkout listener too) is traced.
    event.listen(engine, "checkout", on_checkout, insert=True)
    event.listen(engine, "checkin", on_checkin)
    try:
        yield found
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
        os.close(fd)
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        os.unlink(path)
        sql = "(prepared)"
        for line in lines:
            parts = line.split("\t")
            if parts[0] == "F" and len(parts) > 3 and parts[2] in ("Query", "Parse"):
                sql = parts[3].strip()
            elif parts[0] == "B" and len(parts) > 2 and parts[2] == "ReadyForQuery":
                if sql == '";"':
                    found.pings += 1
                else:
                    found.sent.append(sql[:120])
                sql = "(prepared)"


async def _operator(running: Any) -> dict[str, str]:
    token_id, token = new_token()
    engine = running.headend.engine
    await security_repo.insert_token(engine, token_id, "test", "operator", hash_token(token))
    return {"Authorization": f"Bearer {token}"}


async def test_a_hot_path_dispatch_is_at_most_three_round_trips(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("s1", ["s1-a", "s1-b"]))
    agent = await agents(running.grpc_port, "s1")
    await agent.register(["s1-a", "s1-b"])
    auth = await _operator(running)
    # A first request, as any before it under load: the token looked up, the pool warm.
    await running.dispatch(asset_id="s1-a", power_kw=1.0, headers=auth)
    await agent.setpoint()

    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"asset_id": "s1-a", "power_kw": 2.0}, auth),
        ({"site_id": "s1", "power_kw": 3.0}, auth),
        ({"asset_id": "s1-b", "power_kw": 4.0}, auth | {"Idempotency-Key": "rt-1"}),
    ]
    for body, headers in cases:
        with round_trips(running) as trips:
            answer = await running.dispatch(headers=headers, **body)
        assert 1 <= trips.count <= 3, (body, trips.sent)  # 1: the request was traced
        assert answer["state"] == "sent", answer
        sp = await agent.setpoint()
        assert (sp.setpoint_id, sp.power_kw) == (answer["dispatch_id"], body["power_kw"])
        stored = (await running.http.get(f"/dispatch/{sp.setpoint_id}", headers=auth)).json()
        assert [(e["state"], e["scope"]) for e in stored["events"]] == [
            ("pending", "dispatch"),
            ("pending", "site"),
            ("sent", "site"),
            ("sent", "dispatch"),
        ]


async def test_the_hot_path_statement_writes_nothing_when_a_check_fails(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("s1", ["s1-a"]))
    await running.import_site(site_yaml("s2", ["s2-a"]))
    agent = await agents(running.grpc_port, "s1")
    await agent.register(["s1-a"])
    session = running.headend.sessions.for_site("s1")
    assert session is not None
    engine = reader(running.headend.engine)

    async def attempt(
        asset_id: str, *, session_id: UUID = session.session_id, site_id: str = "s1"
    ) -> repo.HereChecks:
        now = datetime.now(UTC)
        req = DispatchRequest("asset", asset_id, 5.0, now + timedelta(seconds=60))
        built = creating.build(uuid4(), req, connected_plan(req, site_id), now, now, {})
        async with engine.connect() as conn:
            return await repo.create_if_current(
                conn,
                built.new,
                site_id=site_id,
                session_id=session_id,
                not_dispatchable=NOT_DISPATCHABLE_KINDS,
            )

    async def stored() -> int:
        async with engine.connect() as conn:
            return int((await conn.scalar(select(func.count()).select_from(m.dispatches))) or 0)

    assert await attempt("s1-a", session_id=uuid4()) == repo.HereChecks(False, True, True)
    assert await attempt("s2-a") == repo.HereChecks(True, False, True)  # another site's
    assert await attempt("nope") == repo.HereChecks(True, False, True)
    assert await stored() == 0
    assert (await attempt("s1-a")).met
    assert await stored() == 1


def test_the_kinds_checked_in_sql_are_those_that_take_no_setpoints() -> None:
    refused = {k for k in ASSET_KINDS if not Asset(asset_id="x", site_id="s", kind=k).dispatchable}
    assert refused == set(NOT_DISPATCHABLE_KINDS)


async def test_a_stale_session_here_is_fenced_and_the_replica_holding_the_site_delivers(
    start_headend, agents, site_yaml
) -> None:
    # A hears nothing from its gateway for the whole test (no heartbeat due), so nothing
    # tells it the session was taken over: it still routes to it.
    a = await start_headend(replica="replica-a", heartbeat_interval_s=60.0)
    b = await start_headend(replica="replica-b")
    await a.import_site(site_yaml("site-f", ["f-1"]))
    on_a = await agents(a.grpc_port, "site-f")
    await on_a.register(["f-1"])
    listener = a.headend.listener
    await listener.stop()  # A misses the takeover's NOTIFY
    on_b = await agents(b.grpc_port, "site-f")
    taken = await on_b.register(["f-1"])
    assert a.headend.sessions.for_asset("f-1") is not None  # stale, and A does not know

    body = await a.dispatch(asset_id="f-1", power_kw=6.0)
    # Not sent on A's stale session: held pending for the replica holding the site.
    assert [(x["site_id"], x["state"]) for x in body["deliveries"]] == [("site-f", "pending")]
    sp = await on_b.setpoint()
    assert sp.setpoint_id == body["dispatch_id"]
    done = await b.wait_state(body["dispatch_id"], "sent")
    sent = [e["detail"] for e in done["events"] if e["state"] == "sent" and e["scope"] == "site"]
    assert sent == [f"session epoch {taken.epoch}"]  # never sent on A's session


async def test_the_fence_waits_for_a_takeover_in_flight_and_then_holds_the_dispatch(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("s1", ["s1-a"]))
    agent = await agents(running.grpc_port, "s1")
    await agent.register(["s1-a"])
    url = running.headend.settings.database_url
    expires = datetime.now(UTC) + timedelta(seconds=60)
    req = DispatchRequest("asset", "s1-a", 5.0, expires)
    async with (
        await psycopg.AsyncConnection.connect(url) as takeover,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as watch,
    ):
        # Another replica's Register, not yet committed (as gateways._record_connect).
        await takeover.execute(
            "UPDATE gateway_sessions SET session_id = %s, epoch = epoch + 1 WHERE site_id = 's1'",
            [uuid4()],
        )
        creating_task = asyncio.create_task(running.headend.dispatch.create(req))

        async def create_waits_for_the_row() -> bool:
            cur = await watch.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND query LIKE 'WITH checks%%'"
            )
            row = await cur.fetchone()
            return bool(row and row[0])

        await eventually(create_waits_for_the_row, 5, "the create did not wait for the fence")
        await takeover.commit()
        view, created = await creating_task
    assert created
    # The takeover won: held pending for the replica that now holds the site.
    assert [(x.site_id, x.state) for x in view.deliveries] == [("s1", "pending")]


async def test_a_pending_older_dispatch_is_superseded_by_newer_ones_sent_here(
    start_headend, agents, site_yaml
) -> None:
    a = await start_headend(replica="replica-a")
    b = await start_headend(replica="replica-b")
    await a.import_site(site_yaml("site-s", ["s-1"]))
    gw = await agents(b.grpc_port, "site-s")
    await gw.register(["s-1"])
    listener = b.headend.listener
    await listener.stop()  # B misses A's NOTIFY: what A creates stays pending
    older = await a.dispatch(asset_id="s-1", power_kw=1.0)
    assert older["state"] == "pending"

    # Newer dispatches for the same asset, at once, on the replica holding its gateway.
    expires = datetime.now(UTC) + timedelta(seconds=60)
    reqs = [DispatchRequest("asset", "s-1", float(n), expires) for n in (2, 3, 4)]
    made = await asyncio.gather(*(b.headend.dispatch.create(r) for r in reqs))
    newer = {str(view.dispatch_id) for view, created in made if created}
    assert len(newer) == 3
    assert {view.deliveries[0].state for view, _ in made} == {"sent"}
    got = {(await gw.setpoint()).setpoint_id for _ in newer}
    assert got == newer  # each newer one once; the older one never
    old = await b.dispatch_state(older["dispatch_id"])
    assert old["state"] == "superseded"
    [reason] = [x["reason"] for x in old["deliveries"]]
    assert reason.removeprefix("superseded by ") in newer


async def test_concurrent_posts_with_one_idempotency_key_make_one_dispatch(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("s1", ["s1-a"]))
    agent = await agents(running.grpc_port, "s1")
    await agent.register(["s1-a"])
    expires = datetime.now(UTC) + timedelta(seconds=60)
    req = DispatchRequest("asset", "s1-a", 7.0, expires, idempotency_key="same-key")
    made = await asyncio.gather(*(running.headend.dispatch.create(req) for _ in range(5)))
    assert len({view.dispatch_id for view, _ in made}) == 1
    assert sorted(created for _, created in made) == [False, False, False, False, True]
    sp = await agent.setpoint()
    assert sp.setpoint_id == str(made[0][0].dispatch_id)
    listed = (await running.http.get("/dispatches")).json()["items"]
    assert [x["dispatch_id"] for x in listed] == [sp.setpoint_id]
    other = DispatchRequest("asset", "s1-a", 8.0, expires, idempotency_key="same-key")
    with pytest.raises(ConflictError):
        await running.headend.dispatch.create(other)


async def test_token_lookups_are_cached_for_a_bounded_time(running) -> None:
    engine = reader(running.headend.engine)
    now = [100.0]
    cache = TokenCache(lambda h: security_repo.role_of(engine, h), ttl_s=2.0, clock=lambda: now[0])
    token_id, token = new_token()
    unknown = hash_token(token)
    assert await cache.role_of(unknown) == (None, False)
    # Not remembered as unknown: created now, it works at once.
    await security_repo.insert_token(running.headend.engine, token_id, "t", "viewer", unknown)
    assert await cache.role_of(unknown) == ("viewer", True)
    assert await security_repo.revoke_token(running.headend.engine, token_id, datetime.now(UTC))
    now[0] += 1.9
    assert await cache.role_of(unknown) == ("viewer", True)  # within the bound
    now[0] += 0.1
    assert await cache.role_of(unknown) == (None, False)  # past it: refused


async def test_a_revoked_token_is_refused_within_token_cache_s(
    start_headend, site_yaml, eventually
) -> None:
    running = await start_headend(token_cache_s=0.5)
    await running.import_site(site_yaml("s1", ["s1-a"]))
    old_id, old = new_token()
    engine = running.headend.engine
    await security_repo.insert_token(engine, old_id, "old", "operator", hash_token(old))
    auth = {"Authorization": f"Bearer {old}"}
    assert (await running.http.get("/sites", headers=auth)).status_code == 200
    # Rotation: the new token works at once, the old one is revoked.
    new_id, new = new_token()
    await security_repo.insert_token(engine, new_id, "new", "operator", hash_token(new))
    fresh = {"Authorization": f"Bearer {new}"}
    assert (await running.http.get("/sites", headers=fresh)).status_code == 200
    assert await security_repo.revoke_token(engine, old_id, datetime.now(UTC))
    revoked_at = time.monotonic()

    async def refused() -> bool:
        return (await running.http.get("/sites", headers=auth)).status_code != 200

    await eventually(refused, 0.5 + 1.0, "the revoked token still works")
    # Past the bound it stays refused, for dispatches too; the new token goes on working.
    # Kept: the headend's TokenCache reads time.monotonic (no injected clock), so "past
    # the bound" is real time; the cache on a test clock is the test above.
    await asyncio.sleep(max(0.0, revoked_at + 0.5 - time.monotonic()))
    denied = await running.http.post(
        "/dispatch", json={"asset_id": "s1-a", "power_kw": 1.0}, headers=auth
    )
    assert denied.status_code == 401
    await running.dispatch(asset_id="s1-a", power_kw=1.0, headers=fresh)


async def test_a_registry_change_is_seen_by_the_next_dispatch(running, agents, site_yaml) -> None:
    await running.import_site(site_yaml("s1", ["mv-1", "s1-m"]))
    gw1 = await agents(running.grpc_port, "s1")
    await gw1.register(["mv-1", "s1-m"])
    first = await running.dispatch(asset_id="mv-1", power_kw=1.0)
    assert first["deliveries"][0]["site_id"] == "s1"
    assert (await gw1.setpoint()).setpoint_id == first["dispatch_id"]

    # The asset moves to s2 (two imports); s1's session still claims it.
    await running.import_site(site_yaml("s1", ["s1-m"]))
    await running.import_site(site_yaml("s2", ["mv-1"]))
    assert running.headend.sessions.for_asset("mv-1") is not None
    moved = await running.dispatch(asset_id="mv-1", power_kw=2.0)
    assert [(x["site_id"], x["state"]) for x in moved["deliveries"]] == [("s2", "pending")]
    gw2 = await agents(running.grpc_port, "s2")
    await gw2.register(["mv-1"])
    assert (await gw2.setpoint()).setpoint_id == moved["dispatch_id"]

    # A meter takes no setpoints, though its gateway is connected here.
    await running.import_site(site_yaml("s3", ["s3-meter"], kind="meter"))
    gw3 = await agents(running.grpc_port, "s3")
    await gw3.register(["s3-meter"], kind=vp.AssetKind.METER)
    refused = await running.dispatch(expect=422, asset_id="s3-meter", power_kw=1.0)
    assert refused["field"] == "asset_id"
