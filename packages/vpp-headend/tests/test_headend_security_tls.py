"""Mutual TLS on the gRPC port: the site id comes from the client certificate, plaintext
only on loopback or with --insecure, revocation deny-list, a rollover with two CAs."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from headend_security_helpers import FAST, Pki, Running, client_ssl, make_pki, tls_agent

import vpp_protocol as vp
from vpp_headend import Settings, SettingsError
from vpp_headend.certs import cert_fingerprint
from vpp_headend.db.security_repo import revoke_certificate

SITES = {"site-a": ["a-1"], "site-b": ["b-1"]}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


async def _tls_headend(
    start_headend: Callable[..., Awaitable[Running]],
    site_yaml: Callable[..., str],
    pki: Pki,
    *cas: int,
) -> Running:
    running = await start_headend(**pki.tls_settings(*cas))
    for site, assets in SITES.items():
        await running.import_site(site_yaml(site, assets))
    return running


async def test_site_with_its_own_certificate_registers(
    start_headend: Callable[..., Awaitable[Running]], site_yaml: Callable[..., str], pki: Pki
) -> None:
    running = await _tls_headend(start_headend, site_yaml, pki)
    agent = await tls_agent(
        running.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-a"))
    )
    try:
        result = await agent.register(["a-1"])
        assert result.accepted_asset_ids == ["a-1"]
        assert running.headend.sessions.for_site("site-a") is not None
    finally:
        await agent.close()


async def test_register_for_another_site_than_the_certificate_is_refused(
    start_headend: Callable[..., Awaitable[Running]],
    site_yaml: Callable[..., str],
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await _tls_headend(start_headend, site_yaml, pki)
    # site-b's certificate, claiming to be site-a (and site-a's asset)
    agent = await tls_agent(
        running.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-b"))
    )
    try:
        agent.send(
            register=vp.Register(
                site_id="site-a",
                assets=[vp.AssetDescriptor(asset_id="a-1", kind=vp.AssetKind.BESS)],
                agent_version="evil",
                protocol_version=vp.PROTOCOL_VERSION,
                asset_id="",
            )
        )
        msg = await agent.recv("session_closed")
        assert msg.session_closed is not None
        assert msg.session_closed.reason == vp.CloseReason.UNAUTHORIZED
        assert "does not match" in msg.session_closed.detail
        assert "site-b" in msg.session_closed.detail
        await agent.wait_ended()
        assert isinstance(agent.error, GRPCError)
        assert agent.error.status is Status.PERMISSION_DENIED
        assert running.headend.sessions.for_site("site-a") is None
        assert "event=refused reason=unauthorized" in caplog.text
    finally:
        await agent.close()


async def test_client_without_certificate_cannot_connect(
    start_headend: Callable[..., Awaitable[Running]], site_yaml: Callable[..., str], pki: Pki
) -> None:
    running = await _tls_headend(start_headend, site_yaml, pki)
    agent = await tls_agent(running.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem"))
    try:
        agent.send(register=vp.Register(site_id="site-a", assets=[], asset_id="a-1"))
        await agent.wait_ended()
        assert agent.error is not None  # StreamTerminatedError: the handshake failed
        assert agent.result is None
        assert running.headend.sessions.for_site("site-a") is None
    finally:
        await agent.close()


async def test_certificate_from_an_untrusted_ca_is_refused(
    start_headend: Callable[..., Awaitable[Running]], site_yaml: Callable[..., str], pki: Pki
) -> None:
    running = await _tls_headend(start_headend, site_yaml, pki, 1)
    agent = await tls_agent(
        running.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-a", ca=2))
    )
    try:
        agent.send(register=vp.Register(site_id="site-a", assets=[], asset_id="a-1"))
        await agent.wait_ended()
        assert agent.error is not None
        assert running.headend.sessions.for_site("site-a") is None
    finally:
        await agent.close()


async def test_plaintext_client_cannot_talk_to_a_tls_port(
    start_headend: Callable[..., Awaitable[Running]],
    site_yaml: Callable[..., str],
    pki: Pki,
    agents: Callable[..., Awaitable[object]],
) -> None:
    running = await _tls_headend(start_headend, site_yaml, pki)
    agent = await agents(running.grpc_port, "site-a")
    agent.send(register=vp.Register(site_id="site-a", assets=[], asset_id="a-1"))  # type: ignore[attr-defined]
    await agent.wait_ended()  # type: ignore[attr-defined]
    assert agent.error is not None  # type: ignore[attr-defined]
    assert running.headend.sessions.for_site("site-a") is None


async def test_gateway_verifies_the_headend_name(
    start_headend: Callable[..., Awaitable[Running]], site_yaml: Callable[..., str], pki: Pki
) -> None:
    running = await _tls_headend(start_headend, site_yaml, pki)
    ctx = client_ssl(pki.ca1 / "ca.pem", *pki.site("site-a"))
    from grpclib.client import Channel
    from grpclib.config import Configuration

    channel = Channel(
        "127.0.0.1",
        running.grpc_port,
        ssl=ctx,
        config=Configuration(ssl_target_name_override="headend.example.org"),
    )
    stub = vp.AgentServiceStub(channel)

    async def one() -> None:
        async for _ in stub.connect(_register_only("site-a")):
            pass

    try:
        with pytest.raises(ssl.SSLCertVerificationError, match=r"match"):
            await one()
    finally:
        channel.close()


async def _register_only(site_id: str):  # type: ignore[no-untyped-def]
    yield vp.AgentMessage(
        register=vp.Register(site_id=site_id, assets=[], asset_id="a-1", agent_version="")
    )


async def test_revoked_certificate_is_refused_at_connect(
    start_headend: Callable[..., Awaitable[Running]],
    site_yaml: Callable[..., str],
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await _tls_headend(start_headend, site_yaml, pki)
    cert_a, key_a = pki.site("site-a")
    await revoke_certificate(running.headend.engine, cert_fingerprint(cert_a), "laptop stolen")
    agent = await tls_agent(
        running.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem", cert_a, key_a)
    )
    other = await tls_agent(
        running.grpc_port, "site-b", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-b"))
    )
    try:
        agent.send(register=vp.Register(site_id="site-a", assets=[], asset_id="a-1"))
        msg = await agent.recv("session_closed")
        assert msg.session_closed is not None
        assert msg.session_closed.reason == vp.CloseReason.UNAUTHORIZED
        assert "revoked" in msg.session_closed.detail
        assert running.headend.sessions.for_site("site-a") is None
        # a certificate that is not on the list still gets in
        assert (await other.register(["b-1"])).accepted_asset_ids == ["b-1"]
        assert "revoked" in caplog.text
    finally:
        await agent.close()
        await other.close()


async def test_rollover_trusts_two_cas_then_drops_the_old(
    start_headend: Callable[..., Awaitable[Running]], site_yaml: Callable[..., str], pki: Pki
) -> None:
    during = await _tls_headend(start_headend, site_yaml, pki, 1, 2)
    old = await tls_agent(
        during.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-a", ca=1))
    )
    new = await tls_agent(
        during.grpc_port, "site-b", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-b", ca=2))
    )
    try:
        assert (await old.register(["a-1"])).accepted_asset_ids == ["a-1"]
        assert (await new.register(["b-1"])).accepted_asset_ids == ["b-1"]
    finally:
        await old.close()
        await new.close()
    after = await start_headend(**pki.tls_settings(2))  # the old CA is gone from the bundle
    stale = await tls_agent(
        after.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-a", ca=1))
    )
    fresh = await tls_agent(
        after.grpc_port, "site-a", client_ssl(pki.ca1 / "ca.pem", *pki.site("site-a", ca=2))
    )
    try:
        stale.send(register=vp.Register(site_id="site-a", assets=[], asset_id="a-1"))
        await stale.wait_ended()
        assert stale.error is not None
        assert stale.result is None
        assert (await fresh.register(["a-1"])).accepted_asset_ids == ["a-1"]
    finally:
        await stale.close()
        await fresh.close()


def test_plaintext_on_a_public_address_needs_insecure(db_url: str) -> None:
    base = {**FAST, "database_url": db_url}
    with pytest.raises(SettingsError, match="--insecure"):
        Settings(**{**base, "host": "0.0.0.0"})  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="all three"):
        Settings(**{**base, "tls_cert": Path("x.pem")})  # type: ignore[arg-type]
    Settings(**{**base, "host": "0.0.0.0", "insecure": True})  # type: ignore[arg-type]
    Settings(**{**base, "host": "::1"})  # type: ignore[arg-type]
    Settings(**{**base, "host": "localhost"})  # type: ignore[arg-type]


async def test_insecure_start_logs_a_warning_every_time(
    start_headend: Callable[..., Awaitable[Running]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vpp_headend")
    for _ in range(2):
        await start_headend(host="0.0.0.0", insecure=True)
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "insecure_plaintext_grpc" in r.getMessage()
    ]
    assert len(warnings) == 2


def test_tls_settings_come_from_the_environment(db_url: str, pki: Pki) -> None:
    env = {
        "VPP_DATABASE_URL": db_url,
        "VPP_HOST": "0.0.0.0",
        "VPP_TLS_CERT": str(pki.server_cert),
        "VPP_TLS_KEY": str(pki.server_key),
        "VPP_TLS_CLIENT_CA": str(pki.ca1 / "ca.pem"),
        "VPP_REST_AUTH": "required",
        "VPP_MAX_MESSAGE_BYTES": "65536",
    }
    s = Settings.from_env(env)
    assert s.tls
    assert s.tls_cert == pki.server_cert
    assert s.rest_auth == "required"
    assert s.max_message_bytes == 65536
    with pytest.raises(SettingsError, match="rest_auth"):
        Settings.from_env({**env, "VPP_REST_AUTH": "off"})
