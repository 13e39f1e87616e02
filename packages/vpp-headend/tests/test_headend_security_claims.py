"""Every way a gateway could claim a foreign asset is refused, logged, and stores nothing
under that asset; per-asset credentials are enforced from the registry."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

import vpp_protocol as vp

AgentFactory = Callable[..., Awaitable[Any]]
StartHeadend = Callable[..., Awaitable[Any]]


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vpp_headend")


async def _two_sites(running: Any, site_yaml: Callable[..., str]) -> None:
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))


async def _count(running: Any, sql: str, **params: Any) -> int:
    async with running.headend.engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar() or 0)


def _metric(running: Any, name: str, **labels: str) -> float:
    """A sample of the headend's metrics (what /metrics serves)."""
    return running.headend.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_register_claiming_a_foreign_asset_is_refused(
    running: Any, agents: AgentFactory, site_yaml: Callable[..., str], caplog: Any
) -> None:
    await _two_sites(running, site_yaml)
    a = await agents(running.grpc_port, "site-a")
    result = await a.register(["a-1", "b-1", "zz-unknown"])
    assert result.accepted_asset_ids == ["a-1"]
    codes = {r.asset_id: r.code for r in result.rejected}
    assert codes == {
        "b-1": vp.RejectCode.FOREIGN_ASSET,
        "zz-unknown": vp.RejectCode.UNKNOWN_ASSET,
    }
    assert "site-b" not in str(result.rejected)  # the owner is not disclosed
    assert _metric(running, "vpp_assets_rejected_total", code="foreign_asset") == 1
    # The audit record: which site claimed whose asset (no metric names them).
    assert "event=asset_rejected site_id=site-a asset_id=b-1 code=foreign_asset" in caplog.text
    session = running.headend.sessions.for_site("site-a")
    assert session is not None
    assert "b-1" not in session.assets
    # the real owner still gets its asset
    b = await agents(running.grpc_port, "site-b")
    assert (await b.register(["b-1"])).accepted_asset_ids == ["b-1"]


async def test_telemetry_for_an_asset_outside_the_session_is_dropped(
    running: Any,
    agents: AgentFactory,
    site_yaml: Callable[..., str],
    caplog: Any,
    eventually: Callable[..., Awaitable[None]],
) -> None:
    await _two_sites(running, site_yaml)
    a = await agents(running.grpc_port, "site-a")
    await a.register(["a-1"])  # a-2 is site-a's too but not claimed in this session
    a.send_batch([a.telemetry("b-1", 999.0), a.telemetry("a-2", 5.0), a.telemetry("a-1", 1.0)])
    a.send(telemetry=a.telemetry("b-1", 999.0, seq=7))
    # Barrier: a later reading of its own on the same stream. The stream is read in order
    # and ingest is one FIFO writer: once it is stored, both frames before it were handled.
    a.send(telemetry=a.telemetry("a-1", 2.0))

    async def stored_own() -> bool:
        return await _count(running, "SELECT count(*) FROM telemetry WHERE asset_id='a-1'") == 2

    await eventually(stored_own, 5.0, "a-1's own readings were never stored")
    foreign = "SELECT count(*) FROM telemetry WHERE asset_id IN ('b-1', 'a-2')"
    assert await _count(running, foreign) == 0
    assert await _count(running, "SELECT count(*) FROM telemetry_latest WHERE asset_id='b-1'") == 0
    assert (await running.http.get("/telemetry/b-1")).status_code == 404
    assert _metric(running, "vpp_telemetry_dropped_total", reason="foreign_asset") == 3
    # The audit record names the site and the asset (logged once per session and reason).
    assert "event=telemetry_dropped site_id=site-a asset_id=b-1 reason=foreign_asset" in caplog.text


async def test_ack_for_a_setpoint_sent_to_another_site_is_ignored(
    running: Any, agents: AgentFactory, site_yaml: Callable[..., str], caplog: Any
) -> None:
    await _two_sites(running, site_yaml)
    a = await agents(running.grpc_port, "site-a")
    b = await agents(running.grpc_port, "site-b")
    await a.register(["a-1"])
    await b.register(["b-1"])
    d = await running.dispatch(asset_id="b-1", power_kw=10.0)
    sp = await b.setpoint()
    assert sp.setpoint_id == d["dispatch_id"]
    await running.wait_state(d["dispatch_id"], "sent")
    own = await running.dispatch(asset_id="a-1", power_kw=1.0)
    assert (await a.setpoint()).setpoint_id == own["dispatch_id"]
    # site-a pretends to have applied site-b's setpoint, with and without the asset id
    a.ack(d["dispatch_id"], vp.AckState.APPLIED, asset_id="b-1", applied_kw=10.0)
    a.ack(d["dispatch_id"], vp.AckState.FAILED, reason="sabotage")
    # Barrier: acks on a stream are handled in order, so once site-a's ack of its own
    # setpoint has landed, both forged ones before it were handled.
    a.ack(own["dispatch_id"], vp.AckState.APPLIED, asset_id="a-1", applied_kw=1.0)
    await running.wait_state(own["dispatch_id"], "applied")
    state = await running.dispatch_state(d["dispatch_id"])
    assert state["state"] == "sent"
    assert all(t["state"] != "applied" for t in state["allocations"])
    assert _metric(running, "vpp_setpoint_acks_ignored_total", why="unknown_setpoint") == 2
    # The audit record names the site that sent them.
    assert "event=ack_ignored site_id=site-a" in caplog.text


async def test_ack_allocations_naming_a_foreign_asset_are_not_stored(
    running: Any,
    agents: AgentFactory,
    site_yaml: Callable[..., str],
    caplog: Any,
) -> None:
    await _two_sites(running, site_yaml)
    a = await agents(running.grpc_port, "site-a")
    await a.register(["a-1", "a-2"])
    d = await running.dispatch(site_id="site-a", power_kw=20.0)
    await a.setpoint()
    a.ack(
        d["dispatch_id"],
        vp.AckState.APPLIED,
        allocations={"a-1": 10.0, "a-2": 5.0, "b-1": 5.0},
    )
    # Only its own assets count: they took 15 of the 20 kW (the foreign 5 kW do not).
    body = await running.wait_state(d["dispatch_id"], "partially_applied")
    assert (body["allocated_kw"], body["shortfall_kw"]) == (15.0, 5.0)
    assert {t["asset_id"] for t in body["allocations"]} == {"a-1", "a-2"}
    stored = "SELECT count(*) FROM dispatch_targets WHERE asset_id='b-1'"
    assert await _count(running, stored) == 0
    assert _metric(running, "vpp_setpoint_acks_ignored_total", why="foreign_asset") == 1
    assert "event=ack_foreign_asset site_id=site-a" in caplog.text  # the audit record


# -- per-asset credentials -------------------------------------------------------------------

CRED_SITE = """
site_id: site-c
assets:
  - {{asset_id: c-open, kind: pv, capacity_kw: 10}}
  - {{asset_id: c-locked, kind: bess, capacity_kw: 10, credential: "tok-c-locked-0123456789"}}
  - {{asset_id: c-hashed, kind: bess, capacity_kw: 10, credential_sha256: "{}"}}
""".format(hashlib.sha256(b"tok-c-hashed-9876543210").hexdigest())


def _register(site_id: str, creds: dict[str, str]) -> vp.AgentMessage:
    return vp.AgentMessage(
        register=vp.Register(
            site_id=site_id,
            assets=[
                vp.AssetDescriptor(
                    asset_id=a, kind=vp.AssetKind.BESS, capacity_kw=10.0, credential=c
                )
                for a, c in creds.items()
            ],
            agent_version="t",
            protocol_version=vp.PROTOCOL_VERSION,
            asset_id="",
        )
    )


async def _claim(running: Any, agents: AgentFactory, creds: dict[str, str]) -> Any:
    agent = await agents(running.grpc_port, "site-c")
    agent.outgoing.put_nowait(_register("site-c", creds))
    msg = await agent.recv("register_result")
    await agent.close()
    return msg.register_result


async def test_asset_credentials_are_required_where_the_registry_says_so(
    running: Any, agents: AgentFactory, caplog: Any
) -> None:
    await running.import_site(CRED_SITE)
    stored = await _count(
        running,
        "SELECT count(*) FROM assets WHERE credential_sha256 = :h",
        h=hashlib.sha256(b"tok-c-locked-0123456789").hexdigest(),
    )
    assert stored == 1  # the hash, not the token
    assert (
        await _count(running, "SELECT count(*) FROM assets WHERE credential_sha256 LIKE 'tok%'")
        == 0
    )

    none = await _claim(running, agents, {"c-open": "", "c-locked": "", "c-hashed": ""})
    assert none.accepted_asset_ids == ["c-open"]
    assert {r.asset_id: r.code for r in none.rejected} == {
        "c-locked": vp.RejectCode.UNAUTHORIZED,
        "c-hashed": vp.RejectCode.UNAUTHORIZED,
    }
    wrong = await _claim(
        running, agents, {"c-locked": "tok-c-hashed-9876543210", "c-hashed": "guess"}
    )
    assert wrong.accepted_asset_ids == []
    assert all("does not match" in r.reason for r in wrong.rejected)
    right = await _claim(
        running,
        agents,
        {
            "c-open": "",
            "c-locked": "tok-c-locked-0123456789",
            "c-hashed": "tok-c-hashed-9876543210",
        },
    )
    assert sorted(right.accepted_asset_ids) == ["c-hashed", "c-locked", "c-open"]
    assert _metric(running, "vpp_assets_rejected_total", code="unauthorized") == 4
    # Credentials are never logged, also not in the refusals that are.
    assert "code=unauthorized" in caplog.text
    assert "tok-c-locked" not in caplog.text


async def test_legacy_register_cannot_claim_a_credentialed_asset(
    running: Any, agents: AgentFactory
) -> None:
    await running.import_site(CRED_SITE)
    agent = await agents(running.grpc_port, "site-c")
    result = await agent.register(legacy_asset="c-locked")
    assert result.accepted_asset_ids == []
    assert result.rejected[0].code == vp.RejectCode.UNAUTHORIZED


def test_site_file_credentials_are_validated() -> None:
    from vpp_protocol.sitefile import SiteFileError, parse_site_file

    bad_hash = CRED_SITE.replace(hashlib.sha256(b"tok-c-hashed-9876543210").hexdigest(), "abc")
    with pytest.raises(SiteFileError, match=r"assets\[2\]\.credential_sha256"):
        parse_site_file(bad_hash)
    with pytest.raises(SiteFileError, match=r"assets\[1\]\.credential"):
        parse_site_file(CRED_SITE.replace("tok-c-locked-0123456789", "has space"))
    with pytest.raises(SiteFileError, match=r"assets\[1\]\.credential"):
        parse_site_file(CRED_SITE.replace("tok-c-locked-0123456789", "x" * 257))
