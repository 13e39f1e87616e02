"""Operator REST auth: bearer tokens hashed at rest, viewer/operator roles, 401/403, the
open endpoints, security headers and no CORS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from vpp_headend.auth import hash_token, new_token
from vpp_headend.cli import app as cli_app
from vpp_headend.db.security_repo import insert_token

StartHeadend = Callable[..., Awaitable[Any]]


async def _token(running: Any, role: str) -> str:
    token_id, token = new_token()
    await insert_token(running.headend.engine, token_id, f"test {role}", role, hash_token(token))
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_without_tokens_the_api_is_open(running: Any, site_yaml: Any) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    assert (await running.http.get("/sites")).status_code == 200
    resp = await running.http.post("/dispatch", json={"asset_id": "a-1", "power_kw": 1})
    assert resp.status_code == 202


async def test_once_a_token_exists_requests_need_one(running: Any, site_yaml: Any) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    viewer = await _token(running, "viewer")
    operator = await _token(running, "operator")
    http = running.http
    for path in (
        "/sites",
        "/assets/a-1",
        "/gateways",
        "/dispatches",
        "/metrics",
        "/telemetry/a-1/history",
        "/telemetry/a-1/rollup",
    ):
        resp = await http.get(path)
        assert resp.status_code == 401, path
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["status"] == 401
        assert (await http.get(path, headers=_bearer(viewer))).status_code == 200, path
        assert (await http.get(path, headers=_bearer(operator))).status_code == 200, path
    assert (await http.get("/sites", headers=_bearer("vpp_x_wrong"))).status_code == 401
    assert (
        await http.get("/sites", headers={"Authorization": f"Basic {viewer}"})
    ).status_code == 401
    body = {"asset_id": "a-1", "power_kw": 5.0}
    assert (await http.post("/dispatch", json=body)).status_code == 401
    denied = await http.post("/dispatch", json=body, headers=_bearer(viewer))
    assert denied.status_code == 403
    assert "operator" in denied.json()["detail"]
    assert (await http.post("/dispatch", json=body, headers=_bearer(operator))).status_code == 202


async def test_health_ready_and_schema_stay_open(running: Any) -> None:
    await _token(running, "viewer")
    for path in ("/health", "/ready", "/schema/openapi.json"):
        assert (await running.http.get(path)).status_code == 200, path


async def test_revoked_token_is_refused_within_token_cache_s(
    start_headend: StartHeadend, eventually: Any
) -> None:
    # The headend's TokenCache reads time.monotonic (no injected clock): the bound is real
    # time, so it is kept short here (the default is 2 s).
    running = await start_headend(token_cache_s=0.3)
    viewer = await _token(running, "viewer")
    other = await _token(running, "viewer")
    assert (await running.http.get("/sites", headers=_bearer(viewer))).status_code == 200
    async with running.headend.engine.begin() as conn:
        await conn.execute(
            text("UPDATE api_tokens SET revoked_at = now() WHERE token_sha256 = :h"),
            {"h": hash_token(viewer)},
        )

    async def refused() -> bool:
        return (await running.http.get("/sites", headers=_bearer(viewer))).status_code == 401

    await eventually(refused, running.headend.settings.token_cache_s + 2, "still accepted")
    assert (await running.http.get("/sites", headers=_bearer(other))).status_code == 200


async def test_required_mode_refuses_everything_without_tokens(
    start_headend: StartHeadend,
) -> None:
    running = await start_headend(rest_auth="required")
    assert (await running.http.get("/sites")).status_code == 401
    assert (await running.http.get("/health")).status_code == 200


async def test_tokens_are_stored_hashed(running: Any) -> None:
    token = await _token(running, "operator")
    async with running.headend.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_tokens"))).mappings().all()
    assert len(rows) == 1
    assert token not in str(dict(rows[0]))
    assert rows[0]["token_sha256"] == hash_token(token)


async def test_security_headers_and_no_cors(running: Any) -> None:
    resp = await running.http.get("/sites", headers={"Origin": "https://evil.example"})
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert "access-control-allow-origin" not in resp.headers
    missing = await running.http.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["x-content-type-options"] == "nosniff"
    preflight = await running.http.options(
        "/dispatch",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_tokens_create_prints_the_token_alone_on_the_last_line(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPP_DATABASE_URL", db_url)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["tokens", "create", "--role", "operator", "--name", "demo"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("vpp_")
    assert " " not in token
    listed = runner.invoke(cli_app, ["tokens", "list"])
    assert "operator" in listed.stdout
    assert token not in listed.stdout
    bad = runner.invoke(cli_app, ["tokens", "create", "--role", "admin"])
    assert bad.exit_code == 2
    token_id = token.split("_")[1]
    assert runner.invoke(cli_app, ["tokens", "revoke", token_id]).exit_code == 0
    assert runner.invoke(cli_app, ["tokens", "revoke", token_id]).exit_code == 1
    assert "revoked" in runner.invoke(cli_app, ["tokens", "list"]).stdout
