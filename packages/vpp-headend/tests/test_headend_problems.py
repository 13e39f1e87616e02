"""Every error the REST API answers is an RFC 9457 problem (issue 19): ``application/
problem+json`` with ``type``, ``status``, ``title``, ``detail`` and ``instance`` (the
request path), from the routing errors Litestar raises to a bug's 500."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import psycopg
import pytest

from vpp_headend.auth import hash_token, new_token
from vpp_headend.db.security_repo import insert_token
from vpp_headend.errors import ABOUT_BLANK, PROBLEM_TYPES
from vpp_headend.headend import Headend

VALIDATION = PROBLEM_TYPES["validation"]
MALFORMED = PROBLEM_TYPES["malformed-body"]
CONFLICT = PROBLEM_TYPES["conflict"]
UNAVAILABLE = PROBLEM_TYPES["unavailable"]


def problem(resp: httpx.Response, status: int, kind: str, instance: str) -> dict[str, Any]:
    """The problem body of ``resp``, checked against RFC 9457 and what was asked."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0] == "application/problem+json"
    assert "Traceback" not in resp.text
    body: dict[str, Any] = resp.json()
    assert body["type"] == kind, body
    assert body["status"] == status
    assert body["title"], body
    assert body["detail"], body
    assert body["instance"] == instance, body
    return body


async def _token(running: Any, role: str) -> str:
    token_id, token = new_token()
    await insert_token(running.headend.engine, token_id, f"test {role}", role, hash_token(token))
    return token


async def test_client_errors_are_problems_with_type_and_instance(
    running: Any, site_yaml: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    http = running.http
    # 404: no such route, no such id, a path parameter that names nothing that can exist.
    problem(await http.get("/no/such/route"), 404, ABOUT_BLANK, "/no/such/route")
    problem(await http.get("/assets/nope"), 404, ABOUT_BLANK, "/assets/nope")
    problem(await http.get("/assets/x%00"), 404, ABOUT_BLANK, "/assets/x%00")
    # 405: a method the route does not have.
    problem(await http.delete("/sites"), 405, ABOUT_BLANK, "/sites")
    # 415: a body that is not JSON by its content type.
    plain = await http.post("/dispatch", content=b"{}", headers={"content-type": "text/plain"})
    problem(plain, 415, ABOUT_BLANK, "/dispatch")
    # 400: a body that does not parse.
    bad = await http.post(
        "/dispatch", content=b'{"asset_id": ', headers={"content-type": "application/json"}
    )
    problem(bad, 400, MALFORMED, "/dispatch")
    # 422: a body field and a query parameter the API does not accept, each named.
    body = problem(
        await http.post("/dispatch", json={"asset_id": "a-1", "power_kw": "lots"}),
        422,
        VALIDATION,
        "/dispatch",
    )
    assert body["field"] == "power_kw"
    query = problem(await http.get("/dispatches?limit=many"), 422, VALIDATION, "/dispatches")
    assert query["field"] == "limit"
    # 409: an idempotency key used again for another request.
    key = {"Idempotency-Key": "k-1"}
    first = await http.post("/dispatch", json={"asset_id": "a-1", "power_kw": 1}, headers=key)
    assert first.status_code == 202, first.text
    again = await http.post("/dispatch", json={"asset_id": "a-1", "power_kw": 2}, headers=key)
    problem(again, 409, CONFLICT, "/dispatch")


async def test_auth_refusals_are_problems(running: Any, site_yaml: Any) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    viewer = await _token(running, "viewer")
    http = running.http
    anonymous = await http.get("/sites")
    problem(anonymous, 401, ABOUT_BLANK, "/sites")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    weak = await http.post(
        "/dispatch",
        json={"asset_id": "a-1", "power_kw": 1},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    problem(weak, 403, ABOUT_BLANK, "/dispatch")


async def test_an_instance_is_the_path_as_a_uri_reference(running: Any) -> None:
    # Encoded as it must be in a URI: a space, a quote and a percent sign stay encoded.
    resp = await running.http.get("/no%20such/%22route%22/100%25")
    problem(resp, 404, ABOUT_BLANK, "/no%20such/%22route%22/100%25")


async def test_a_bug_is_a_500_problem_without_its_traceback(
    running: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Headend) -> list[str]:
        raise RuntimeError("a bug in the readiness check")

    monkeypatch.setattr(Headend, "ready", broken)
    with caplog.at_level(logging.ERROR, logger="vpp_headend.api.problems"):
        resp = await running.http.get("/ready")
    body = problem(resp, 500, ABOUT_BLANK, "/ready")
    assert body["detail"] == "unexpected error"  # nothing of the bug leaks
    [record] = [r for r in caplog.records if "unhandled_error" in r.getMessage()]
    assert record.exc_info is not None  # the log has the traceback
    assert "path=/ready" in record.getMessage()


async def test_an_unreachable_database_is_a_503_problem(running: Any, db_url: str) -> None:
    name = db_url.rsplit("/", 1)[1]
    admin = db_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        async with asyncio.timeout(20):
            resp = await running.http.get("/assets/a-1")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    problem(resp, 503, UNAVAILABLE, "/assets/a-1")
    assert resp.headers["retry-after"] == "1"


async def test_the_openapi_problem_schema_has_type_and_instance(running: Any) -> None:
    schema = (await running.http.get("/schema/openapi.json")).json()
    problem_schema = schema["components"]["schemas"]["ProblemOut"]
    assert {"type", "status", "title", "detail", "instance"} <= set(problem_schema["required"])
