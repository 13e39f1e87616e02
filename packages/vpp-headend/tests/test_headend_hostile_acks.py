"""Acks a stream must survive, and dispatches that must end (issue 14).

A NUL in an ack's reason (devices pad strings with NUL), a database blip while an ack is
handled, a gateway that said "received" and then went quiet: none of these closes the
stream, loses the ack, or leaves a dispatch in ``received`` for ever.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import betterproto2
import psycopg
import pytest
from headend_clocked import ShiftedClock
from headend_http import app_client
from hypothesis import given
from hypothesis import strategies as st

import vpp_protocol as vp
from vpp_headend import Headend, Settings, create_app
from vpp_headend.ack_retry import AckRetry
from vpp_headend.convert import ack_from_pb
from vpp_headend.domain import Ack
from vpp_headend.limits import MAX_REASON_CHARS
from vpp_headend.sessions import Session
from vpp_protocol.sitefile import parse_site_file
from vpp_protocol.upb import pb


def _stream_is_open(agent: Any) -> None:
    """The agent's one stream is still up and the headend never sent SessionClosed."""
    assert agent.error is None, agent.error
    assert not agent.ended.is_set()
    kinds = [betterproto2.which_one_of(m, "body")[0] for m in agent.incoming._queue]
    assert "session_closed" not in kinds


async def _gateway(http: Any, site_id: str) -> dict[str, Any]:
    gateways = (await http.get("/gateways")).json()["items"]
    return next(g for g in gateways if g["site_id"] == site_id)


async def _stored_seq(http: Any, asset_id: str) -> int | None:
    resp = await http.get(f"/telemetry/{asset_id}")
    return resp.json()["seq"] if resp.status_code == 200 else None


# -- NUL and control characters ---------------------------------------------------------


async def test_nul_in_ack_reason_is_stored_escaped_and_the_stream_stays(
    running, agents, site_yaml, eventually
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    result = await agent.register(["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=5.0)
    sp = await agent.setpoint()
    # A Modbus string register: text, an embedded NUL, then NUL padding to its length.
    reason = "clamped\x00by inverter\x00\x00\x00\x00"
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="a-1", applied_kw=5.0, reason=reason)

    done = await running.wait_state(body["dispatch_id"], "applied")
    assert done["deliveries"][0]["reason"] == "clamped\\x00by inverter"
    assert done["allocations"][0]["reason"] == "clamped\\x00by inverter"
    assert done["transitions"][-1]["state"] == "applied"

    # The same stream goes on: a reading sent after the ack is stored.
    agent.send(telemetry=agent.telemetry("a-1", 2.5, seq=1))

    async def stored() -> bool:
        return await _stored_seq(running.http, "a-1") == 1

    await eventually(stored, 5, "a reading sent after the NUL ack was never stored")
    _stream_is_open(agent)
    assert (await _gateway(running.http, "site-a"))["session_id"] == result.session_id


@given(st.text(max_size=2 * MAX_REASON_CHARS))
def test_any_ack_reason_converts_to_bounded_text_without_control_characters(reason: str) -> None:
    msg = pb.SetpointAck(setpoint_id=str(uuid.uuid4()), state=pb.ACK_STATE_FAILED, reason=reason)
    clean = ack_from_pb(msg, "a-1").reason
    assert len(clean) <= MAX_REASON_CHARS
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in clean)
    if reason[:MAX_REASON_CHARS].isprintable():
        assert clean == reason[:MAX_REASON_CHARS]  # ordinary text is kept as it came


async def test_other_control_characters_in_a_reason_are_escaped_not_stored_raw(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=1.0)
    sp = await agent.setpoint()
    reason = "line1\nline2\t\x1b[31mred\u202eevil\x7f"
    agent.ack(sp.setpoint_id, vp.AckState.FAILED, asset_id="a-1", reason=reason)
    done = await running.wait_state(body["dispatch_id"], "failed")
    assert done["deliveries"][0]["reason"] == "line1\\nline2\\t\\x1b[31mred\\u202eevil\\x7f"


async def test_ack_naming_an_asset_id_with_control_characters_is_refused_as_invalid(
    running, agents, site_yaml, eventually, caplog
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1", "a-2"])
    body = await running.dispatch(site_id="site-a", power_kw=4.0)
    sp = await agent.setpoint()
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="a-1\x00")
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, allocations={"a-1": 2.0, "a-2\x07": 2.0})

    async def refused() -> bool:
        metrics = (await running.http.get("/metrics")).text
        return 'vpp_setpoint_acks_ignored_total{why="invalid"} 2.0' in metrics

    await eventually(refused, 5, "the acks with control characters in ids were not refused")
    refusals = [r.getMessage() for r in caplog.records if "event=ack_invalid" in r.getMessage()]
    assert len(refusals) == 2
    assert "SetpointAck.asset_id 'a-1" in refusals[0]
    assert "SetpointAck.allocations.asset_id 'a-2" in refusals[1]
    assert all("contains control characters" in r for r in refusals)
    assert (await running.dispatch_state(body["dispatch_id"]))["state"] == "sent"
    # Refused, not fatal: the gateway's next, valid ack lands on the same stream.
    agent.ack(sp.setpoint_id, vp.AckState.APPLIED, allocations={"a-1": 2.0, "a-2": 2.0})
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert sorted(a["asset_id"] for a in done["allocations"]) == ["a-1", "a-2"]
    _stream_is_open(agent)


# -- a database blip while an ack is handled ----------------------------------------------


async def _lock_waiters(admin: psycopg.AsyncConnection[Any]) -> set[int]:
    """Backends of this database waiting for a lock (an ack waiting for our row lock)."""
    cur = await admin.execute(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return {row[0] for row in await cur.fetchall()}


async def _ack_waiting(
    admin: psycopg.AsyncConnection[Any],
    killed: set[int],
    eventually: Callable[..., Awaitable[None]],
    when: str,
) -> set[int]:
    """Wait until a backend not yet killed waits for the row lock; its pids."""
    waiting: set[int] = set()

    async def found() -> bool:
        nonlocal waiting
        waiting = await _lock_waiters(admin) - killed
        return bool(waiting)

    await eventually(found, 10, f"no ack waiting for the row lock ({when})")
    return waiting


async def _kill_headend_backends(admin: psycopg.AsyncConnection[Any], spare: int) -> int:
    """Terminate every connection to this database but ``admin``'s and ``spare``."""
    cur = await admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
        (spare,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_database_connections_killed_while_acks_wait_keep_the_stream_and_the_ack(
    running, agents, site_yaml, eventually, db_url
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    result = await agent.register(["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=6.0)
    sp = await agent.setpoint()
    admin = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    locker = await psycopg.AsyncConnection.connect(db_url)
    try:
        # Hold the dispatch row: the headend's ack waits on it, inside its transaction.
        await locker.execute(
            "SELECT 1 FROM dispatches WHERE dispatch_id = %s FOR UPDATE", (sp.setpoint_id,)
        )
        agent.ack(sp.setpoint_id, vp.AckState.APPLIED, asset_id="a-1", applied_kw=6.0)
        killed: set[int] = set()
        for blip in range(2):  # the database goes away twice while the ack is in flight
            killed |= await _ack_waiting(admin, killed, eventually, f"blip {blip}")
            assert await _kill_headend_backends(admin, locker.info.backend_pid) >= 1
        # A third attempt waits for the lock again: the ack was retried, not dropped.
        await _ack_waiting(admin, killed, eventually, "after the second blip")
        await locker.rollback()  # the database is whole again
        done = await running.wait_state(body["dispatch_id"], "applied", 10)
    finally:
        await locker.close()
        await admin.close()
    assert done["allocations"][0]["applied_kw"] == 6.0
    assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "applied"]

    # Same session all along, and it still carries telemetry.
    agent.send(telemetry=agent.telemetry("a-1", 1.5, seq=1))

    async def stored() -> bool:
        return await _stored_seq(running.http, "a-1") == 1

    await eventually(stored, 10, "no telemetry stored on the stream after the blips")
    _stream_is_open(agent)
    gateway = await _gateway(running.http, "site-a")
    assert gateway["connected"]
    assert gateway["session_id"] == result.session_id


def _session(site_id: str) -> Session:
    now = datetime.now(UTC)
    return Session(site_id, uuid.uuid4(), 1, frozenset({"a-1"}), "", "?", "", now, now)


async def test_acks_wait_out_a_long_outage_in_order_per_site(eventually, caplog) -> None:
    """The retry queue keeps every ack through many failures and applies each site's
    acks in the order they came; a stop with acks still waiting says so."""
    down_for = 5  # attempts the "database" refuses
    applied: list[tuple[str, str]] = []

    async def apply(session: Session, ack: Ack) -> None:
        nonlocal down_for
        if down_for:
            down_for -= 1
            raise psycopg.OperationalError("connection refused")
        applied.append((session.site_id, ack.state))

    retry = AckRetry(apply, first_delay_s=0.001, max_delay_s=0.01)
    await retry.start()
    a, b = _session("site-a"), _session("site-b")
    sid = uuid.uuid4()
    try:
        await retry.handle(a, Ack(sid, "a-1", "received"))  # refused: queued
        await retry.handle(b, Ack(sid, "a-1", "applied"))  # refused: queued
        await retry.handle(a, Ack(sid, "a-1", "applied"))  # behind site-a's first ack
        assert retry.waiting == 3

        async def drained() -> bool:
            return retry.waiting == 0

        await eventually(drained, 5, "the waiting acks were not applied")
        assert applied == [("site-a", "received"), ("site-b", "applied"), ("site-a", "applied")]
        assert down_for == 0
        down_for = 1_000_000  # and the database goes away for good
        await retry.handle(a, Ack(sid, "a-1", "failed"))
        assert retry.waiting == 1
    finally:
        await retry.stop()
    assert "event=ack_retry_abandoned acks=1" in caplog.text


# -- received must end ------------------------------------------------------------------


async def test_received_then_disconnect_is_redelivered_on_reconnect_and_applied(
    running, agents, site_yaml
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1"])
    body = await running.dispatch(asset_id="a-1", power_kw=7.0, ttl_s=60)
    sp = await agent.setpoint()
    agent.ack(sp.setpoint_id, vp.AckState.RECEIVED, asset_id="a-1")
    await running.wait_state(body["dispatch_id"], "received")
    agent.drop()  # applied on site, but the final ack never left

    again = await agents(running.grpc_port, "site-a")
    await again.register(["a-1"])
    resent = await again.setpoint()
    assert resent.setpoint_id == body["dispatch_id"]
    assert resent.power_kw == 7.0
    # A gateway answers a re-delivery from its journal: RECEIVED, then the final ack.
    again.ack(resent.setpoint_id, vp.AckState.RECEIVED, asset_id="a-1")
    again.ack(resent.setpoint_id, vp.AckState.APPLIED, asset_id="a-1", applied_kw=7.0)
    done = await running.wait_state(body["dispatch_id"], "applied")
    assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "received", "applied"]
    assert any("re-sent" in (e["detail"] or "") for e in done["events"])


@dataclass
class Clocked:
    headend: Headend
    http: Any
    clock: ShiftedClock
    eventually: Callable[..., Awaitable[None]]

    @property
    def grpc_port(self) -> int:
        return self.headend.grpc_port

    async def state(self, dispatch_id: str) -> dict[str, Any]:
        resp = await self.http.get(f"/dispatch/{dispatch_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def wait_state(self, dispatch_id: str, state: str) -> dict[str, Any]:
        body: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal body
            body = await self.state(dispatch_id)
            return bool(body["state"] == state)

        await self.eventually(reached, 5, f"dispatch {dispatch_id} never reached {state}: {body}")
        return body


@pytest.fixture
async def clocked(
    settings: Settings, eventually: Callable[..., Awaitable[None]]
) -> AsyncIterator[Clocked]:
    """A headend on a clock the test moves; ack grace 10 s (of that clock)."""
    clock = ShiftedClock()
    s = settings.with_(ack_grace_s=10.0)
    async with (
        Headend.open(s, clock=clock) as headend,
        app_client(create_app(s, headend)) as http,
    ):
        yield Clocked(headend, http, clock, eventually)


async def _received_dispatch(clocked: Clocked, agent: Any, site_yaml: Any) -> str:
    await clocked.headend.registry.import_site(parse_site_file(site_yaml("site-a", ["a-1"])))
    await agent.register(["a-1"])
    resp = await clocked.http.post(
        "/dispatch", json={"asset_id": "a-1", "power_kw": 3.0, "ttl_s": 30}
    )
    assert resp.status_code == 202, resp.text
    dispatch_id: str = resp.json()["dispatch_id"]
    sp = await agent.setpoint()
    agent.ack(sp.setpoint_id, vp.AckState.RECEIVED, asset_id="a-1")
    return dispatch_id


async def test_received_with_no_final_ack_fails_after_expiry_plus_grace(
    clocked, agents, site_yaml
) -> None:
    agent = await agents(clocked.grpc_port, "site-a")
    dispatch_id = await _received_dispatch(clocked, agent, site_yaml)

    await clocked.wait_state(dispatch_id, "received")
    clocked.clock.advance(35)  # past expires_at (30 s), within the ack grace (10 s)
    assert await clocked.headend.dispatch.sweep() == 0  # a sweep now leaves it alone
    assert (await clocked.state(dispatch_id))["state"] == "received"
    clocked.clock.advance(10)  # expires_at + grace has passed
    done = await clocked.wait_state(dispatch_id, "failed")
    assert done["deliveries"][0]["reason"] == "no final ack"
    assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "received", "failed"]
    assert any(
        e["state"] == "failed" and e["scope"] == "site" and e["detail"] == "no final ack"
        for e in done["events"]
    )

    async def counted() -> bool:  # counted just after the commit
        metrics = (await clocked.http.get("/metrics")).text
        return 'vpp_dispatches_final_total{state="failed"} 1.0' in metrics

    await clocked.eventually(counted, 5, "the failed dispatch was not counted")
    _stream_is_open(agent)


async def test_received_is_redelivered_after_expiry_within_the_grace_and_applied(
    clocked, agents, site_yaml
) -> None:
    agent = await agents(clocked.grpc_port, "site-a")
    dispatch_id = await _received_dispatch(clocked, agent, site_yaml)
    agent.drop()
    clocked.clock.advance(35)  # the gateway comes back after expires_at, inside the grace
    again = await agents(clocked.grpc_port, "site-a")
    await again.register(["a-1"])
    resent = await again.setpoint()
    assert resent.setpoint_id == dispatch_id
    # It applied the setpoint before it went away: its journal answers APPLIED.
    again.ack(resent.setpoint_id, vp.AckState.APPLIED, asset_id="a-1", applied_kw=3.0)
    done = await clocked.wait_state(dispatch_id, "applied")
    assert done["deliveries"][0]["state"] == "applied"
