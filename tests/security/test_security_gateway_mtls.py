"""A real vpp-gateway against a real vpp-headend over mutual TLS: the certificates come
from the headend's own `certs` tooling, the gateway reads them from its site file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from vpp_gateway import Agent, from_site_file
from vpp_headend import Headend, Settings
from vpp_headend.certs import init_ca, issue_server, issue_site
from vpp_protocol.sitefile import load_site_file, parse_site_file

GATEWAY_FAST: dict[str, Any] = {
    "tick_s": 0.1,
    "heartbeat_s": 0.5,
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.2,
    "register_timeout_s": 2.0,
    "keepalive_time_s": 5.0,
    "keepalive_timeout_s": 2.0,
}
HEADEND_FAST: dict[str, Any] = {
    "host": "127.0.0.1",
    "http_port": 0,
    "grpc_port": 0,
    "heartbeat_interval_s": 0.5,
    "register_timeout_s": 2.0,
    "latest_flush_interval_s": 0.1,
    "shutdown_grace_s": 2.0,
}
LOCKED = "tok-locked-asset-0123456789abcdef"


@dataclasses.dataclass
class Pilot:
    root: Path
    headend: Headend


async def _until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.05)


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vpp_gateway")
    caplog.set_level(logging.INFO, logger="vpp_headend")


@pytest.fixture
async def pilot(tmp_path: Path, db_url: str) -> AsyncIterator[Pilot]:
    pki = tmp_path / "pki"
    init_ca(pki)
    issue_server(pki, ["headend.pilot.example", "127.0.0.1"])
    for site in ("site-a", "site-b"):
        issue_site(pki, site)
    settings = Settings(
        database_url=db_url,
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
        **HEADEND_FAST,
    )
    registry = (
        "site_id: site-a\n"
        "assets:\n"
        "  - {asset_id: a-pv-1, kind: pv, capacity_kw: 10}\n"
        f"  - {{asset_id: a-bess-1, kind: bess, capacity_kw: 10, credential: {LOCKED}}}\n"
    )
    async with Headend.open(settings) as headend:
        await headend.registry.import_site(parse_site_file(registry))
        await headend.registry.import_site(
            parse_site_file("site_id: site-b\nassets:\n  - {asset_id: b-pv-1, kind: pv}\n")
        )
        yield Pilot(tmp_path, headend)


def _site_file(
    pilot: Pilot,
    *,
    site_id: str = "site-a",
    cert_site: str = "site-a",
    server_name: str = "headend.pilot.example",
    credential: str = LOCKED,
) -> Path:
    """A gateway site file with `headend.tls` pointing at the pilot's files."""
    port = pilot.headend.grpc_port
    path = pilot.root / f"gw-{site_id}-{cert_site}-{server_name}-{credential[:6]}.yaml"
    path.write_text(
        f"site_id: {site_id}\n"
        f"headend:\n"
        f"  host: 127.0.0.1\n"
        f"  port: {port}\n"
        f"  tls:\n"
        f"    ca: pki/ca.pem\n"
        f"    cert: pki/sites/{cert_site}.pem\n"
        f"    key: pki/sites/{cert_site}.key\n"
        f"    server_name: {server_name}\n"
        f"assets:\n"
        f"  - {{asset_id: a-pv-1, kind: pv, capacity_kw: 10}}\n"
        f"  - {{asset_id: a-bess-1, kind: bess, capacity_kw: 10, credential: {credential}}}\n"
    )
    return path


@contextlib.asynccontextmanager
async def _gateway(path: Path, state: Path) -> AsyncIterator[Agent]:
    base = from_site_file(load_site_file(path), path)
    agent = Agent(dataclasses.replace(base, state_dir=state, **GATEWAY_FAST))
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


async def test_gateway_connects_over_mutual_tls_and_its_telemetry_is_stored(
    pilot: Pilot, tmp_path: Path
) -> None:
    async with _gateway(_site_file(pilot), tmp_path / "state") as agent:

        async def stored() -> bool:
            async with pilot.headend.engine.connect() as conn:
                n = await conn.execute(
                    text("SELECT count(DISTINCT asset_id) FROM telemetry WHERE seq > 0")
                )
            return n.scalar() == 2

        await _until(stored, 10.0, "telemetry of both assets never arrived over mTLS")
        assert agent.connection.is_live
        session = pilot.headend.sessions.for_site("site-a")
        assert session is not None
        assert session.assets == {"a-pv-1", "a-bess-1"}  # the credential was accepted


async def test_gateway_refuses_a_headend_with_the_wrong_name(
    pilot: Pilot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _site_file(pilot, server_name="headend.elsewhere.example")
    async with _gateway(path, tmp_path / "state"):

        async def failed() -> bool:
            return "TLS failure" in caplog.text

        await _until(failed, 10.0, "the gateway never reported a TLS failure")
        assert pilot.headend.sessions.for_site("site-a") is None
    assert "event=connect_failed" in caplog.text


async def test_gateway_with_another_sites_certificate_is_unauthorized(
    pilot: Pilot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _site_file(pilot, cert_site="site-b")
    async with _gateway(path, tmp_path / "state"):

        async def refused() -> bool:
            return "unauthorized" in caplog.text and "does not match" in caplog.text

        await _until(refused, 10.0, "the gateway never reported being unauthorized")
        assert pilot.headend.sessions.for_site("site-a") is None


async def test_wrong_asset_credential_loses_only_that_asset(
    pilot: Pilot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _site_file(pilot, credential="tok-not-the-right-one-000000")
    async with _gateway(path, tmp_path / "state") as agent:

        async def connected() -> bool:
            return agent.connection.is_live

        await _until(connected, 10.0, "the gateway never connected")
        session = pilot.headend.sessions.for_site("site-a")
        assert session is not None
        assert session.assets == {"a-pv-1"}
        assert "event=asset_rejected asset_id=a-bess-1" in caplog.text
        assert "unauthorized" in caplog.text
        assert LOCKED not in caplog.text
        assert "tok-not-the-right-one" not in caplog.text
